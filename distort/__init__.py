"""distort package."""
