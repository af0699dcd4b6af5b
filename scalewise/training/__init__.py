"""scalewise.training."""
