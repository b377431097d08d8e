"""Headless reproductions of the five papers' tables (``advviz reproduce PAPER``).

Each module has ``run(*, table=None, quick=False, n=None, seed=0) -> dict`` returning
``{"paper", "table", "config", "data", "rows": [...]}`` (DESIGN.md's contract: lower-case
metric keys, rates as fractions in [0, 1]) and ``format(result) -> str`` printing the measured
numbers beside the paper's.

:mod:`advviz.papers.quoted` is the walkthrough notebooks' side of them: it checks that each number
a notebook's text quotes still agrees with what the notebook's run computes.
"""
