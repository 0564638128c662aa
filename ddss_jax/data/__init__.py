"""Data sources: known distributions and datasets of real examples."""
