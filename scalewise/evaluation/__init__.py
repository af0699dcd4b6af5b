"""scalewise.evaluation.settings."""
