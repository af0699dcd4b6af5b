"""scalewise.data.prepare."""
