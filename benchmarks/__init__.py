"""The B-series of quality.md; `python -m benchmarks` runs them."""
