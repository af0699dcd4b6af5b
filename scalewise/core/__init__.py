"""scalewise.core."""
