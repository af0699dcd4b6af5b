"""scalewise.project."""
