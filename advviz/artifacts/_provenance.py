"""Provenance of results: the records of the artefacts a computation used.

``records(names)`` collects :class:`~advviz.artifacts.Record` s by artefact name (each read from its
file's metadata, never rebuilt from today's code); ``provenance(names)`` gives them as the
JSON-ready list every ``advviz reproduce … --json`` result carries under ``"provenance"``, and
``provenance_lines`` the lines that end its printed table (:meth:`Record.line`). Together with
:func:`advviz.artifacts.track` a result names every network it used without listing them by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from advviz.artifacts._core import Record, get_spec, record, status

__all__ = ["records", "provenance", "provenance_lines"]


def records(names: Iterable[str], *, on_disk_only: bool = False) -> list[Record]:
    """The records of artefacts ``names`` (each once, in order).

    Args:
        names: registered artefact names (:func:`advviz.artifacts.list_artifacts`).
        on_disk_only: skip artefacts that are not on disk now instead of downloading or training
            them (for names from :func:`advviz.artifacts.track`, which lists failed look-ups too).

    Raises:
        KeyError: an unknown name (not with ``on_disk_only``: unknown names are skipped).
    """
    out: list[Record] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if on_disk_only:
            try:
                get_spec(name)
            except KeyError:
                continue
            if not status(name)["present"]:
                continue
        out.append(record(name))
    return out


def provenance(names: Iterable[str], *, on_disk_only: bool = False) -> list[dict[str, Any]]:
    """``[Record.to_dict() …]`` of :func:`records` (name, sha256, recipe, recipe_hash, upstream, training …)."""
    return [r.to_dict() for r in records(names, on_disk_only=on_disk_only)]


def provenance_lines(entries: Sequence[Mapping[str, Any] | Record]) -> list[str]:
    """One line per artefact (:meth:`Record.line`: name, sha256 prefix, recipe hash, source)."""
    return [(e if isinstance(e, Record) else Record.from_dict(e)).line() for e in entries]
