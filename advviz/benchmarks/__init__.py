"""Benchmarks run by ``advviz bench WHAT``: each module has ``run(...) -> rows`` and ``format(rows) -> str``."""
