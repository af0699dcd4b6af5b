"""scalewise.cli.main."""
