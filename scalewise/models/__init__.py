"""scalewise.models."""
