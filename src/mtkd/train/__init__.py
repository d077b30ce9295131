"""Training: the one loop, objectives and evaluation metrics."""
