"""qrnet package."""
