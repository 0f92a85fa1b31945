"""The benchmark and its tools: ``python -m bench.run`` (see bench/README.md)."""
