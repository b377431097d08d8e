"""Helpers shared by the paper reproductions: result dicts, tables, timing."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from advviz import artifacts

__all__ = ["result", "format_rows", "format_provenance", "tracked", "timer", "PAPER_KEY"]

# Row keys whose paper value is shown beside the measured one as "<key> (paper)".
PAPER_KEY = "paper_"


def result(paper: str, table: str, config: dict[str, Any], data: str, rows: list[dict[str, Any]], *,
           provenance: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON-ready result of one reproduction (DESIGN.md contract).

    ``provenance``: artefact names whose records (:func:`advviz.artifacts.provenance`) go under
    ``"provenance"``; a ``run`` decorated with :func:`tracked` adds every other artefact it used.
    """
    out = {"paper": paper, "table": table, "config": config, "data": data, "rows": rows}
    if provenance is not None:
        out["provenance"] = artifacts.provenance(provenance)
    return out


def tracked(run: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Decorate a paper's ``run``: its result gets ``"provenance"``, the records
    (:meth:`advviz.artifacts.Record.to_dict`: name, sha256, recipe, recipe_hash, upstream, training)
    of every artefact asked for while it ran (:func:`advviz.artifacts.track`) and on disk, after
    the ones the result names itself."""

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        with artifacts.track() as used:
            res = run(*args, **kwargs)
        have = list(res.get("provenance", []))
        named = {p["name"] for p in have}
        res["provenance"] = have + artifacts.provenance([u for u in used if u not in named], on_disk_only=True)
        return res

    return wrapper


def format_provenance(res: dict[str, Any]) -> str:
    """The lines that end a printed result: one per artefact used (name, sha256 prefix, recipe hash)."""
    entries = res.get("provenance") or []
    if not entries:
        return "artefacts: none"
    return "artefacts:\n" + "\n".join("  " + line for line in artifacts.provenance_lines(entries))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def format_rows(res: dict[str, Any], columns: Sequence[str] | None = None, title: str | None = None) -> str:
    """A plain-text table of ``res["rows"]``; a ``paper_<metric>`` key is shown as its own column,
    right after ``<metric>``'s when the rows have one."""
    rows = res["rows"]
    if not rows:
        return f"{title or res['table']}: no rows"
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
        # each paper value right after the measurement it belongs to
        for c in [c for c in columns if c.startswith(PAPER_KEY) and c[len(PAPER_KEY):] in columns]:
            columns.remove(c)
            columns.insert(columns.index(c[len(PAPER_KEY):]) + 1, c)
    header = [c.replace(PAPER_KEY, "") + (" (paper)" if c.startswith(PAPER_KEY) else "") for c in columns]
    body = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [title or f"{res['paper']} — {res['table']}", f"data: {res['data']}"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(b[i].ljust(widths[i]) for i in range(len(b))) for b in body]
    return "\n".join(lines)


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["seconds"]``."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0
