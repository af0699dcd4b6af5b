"""Inverse problems: measurement operators, frequency-aware filters and posterior guidance."""
