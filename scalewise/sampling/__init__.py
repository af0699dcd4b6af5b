"""scalewise.sampling.generate."""
