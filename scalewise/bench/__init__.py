"""scalewise.bench.sample."""
