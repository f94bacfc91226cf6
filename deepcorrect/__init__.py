"""deepcorrect package."""
