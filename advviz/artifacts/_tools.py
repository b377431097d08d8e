"""What ``advviz artifacts list|build|readme`` does: listings, building (and shipping) artefacts,
and ``advviz/weights/README.md`` generated from the shipped files' records."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from advviz.artifacts._core import META_KEY, Record, fresh, get_spec, list_artifacts, resolve, status, write

__all__ = ["listing", "build", "ship", "shipped_dir", "weights_readme", "write_weights_readme",
           "WEIGHTS_README_INTRO", "WEIGHTS_README_OUTRO"]


def shipped_dir() -> Path:
    """``advviz/weights``: the small files advviz trained itself and ships."""
    return Path(__file__).resolve().parents[1] / "weights"


def listing() -> str:
    """One line per registered artefact: name, kind, whether it is on disk, where it would come from,
    the recipe hash (``-``: downloaded or user-made) and its upstream."""
    rows = [("name", "kind", "present", "from", "recipe", "upstream")]
    for name in list_artifacts():
        spec, st = get_spec(name), status(name)
        where = st["where"] + (" (stale file)" if st["stale"] else "")
        rows.append((name, spec.kind, "yes" if st["present"] else "no", where, st["recipe_hash"] or "-",
                     ",".join(spec.upstream) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def ship(name: str) -> Record:
    """Write artefact ``name`` (resolved, trained if needed) as a float16 copy with its record into
    :func:`shipped_dir` (the file advviz ships; regenerate the README afterwards)."""
    path, rec = resolve(name)
    module = fresh(name)
    return write(name, module, shipped_dir() / get_spec(name).filename, training=rec.training, half=True,
                 upstream=rec.upstream)


def build(names: Sequence[str], *, device: str | torch.device | None = None, ship_: bool = False,
          progress: bool = True) -> str:
    """Make artefacts ``names`` (found, downloaded or trained on ``device``); with ``ship_`` also write
    their float16 copies into ``advviz/weights`` (:func:`ship`). Returns one line per artefact."""
    for name in names:
        get_spec(name)  # an unknown name fails before anything is trained
    lines = []
    for name in names:
        _, rec = resolve(name, device=device, progress=progress)
        lines.append(rec.line())
        if ship_:
            shipped = ship(name)
            lines.append(f"  shipped {shipped.path} (float16, sha256 {shipped.sha256[:12]}); "
                         "regenerate the README: advviz artifacts readme --write")
    return "\n".join(lines)


WEIGHTS_README_INTRO = """\
# Weights advviz trained itself and ships

Only small files (a few MB at most, float16 where that halves them), in safetensors, each carrying
its artefact record (recipe, recipe hash, upstream, training summary) in its metadata
(`advviz.record`). Datasets and third-party weights never go here.

This file is generated from those records: `advviz artifacts readme --write` (after
`advviz artifacts build NAME --ship`); `tests/test_artifacts_cli.py` checks it is up to date.
"""

WEIGHTS_README_OUTRO = """\
The purifiers' measured accuracy on the JPEG CIFAR-10 test split (256 images, seed 0; FGSM 8/255 on
ResNet-20), clean / FGSM: no defense .816 / .059, pix2pix .789 / .246, cGAN .766 / .336,
UDDN .824 / .664, DAE .781 / .348 (`tests/test_shipped_purifiers.py`; the DAE before it, through a
2x2 bottleneck, gave .195 / .203). Training took, on one (shared) CPU thread: the perceptual VGG-19
20 min; pix2pix / cGAN 17 / 21 min (FGSM pairs) and 13 / 16 min (PGD pairs); UDDN 3-20 min per
epoch; GNR 2.5 min; the DAE 5 min.
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def _training(training: Mapping[str, Any]) -> str:
    parts = []
    if "epochs" in training:
        parts.append(f"{training['epochs']} epochs")
    if training.get("final"):
        parts.append("final " + _fmt(training["final"]))
    if training.get("metrics"):
        parts.append("measured: " + _fmt(training["metrics"]))
    # the per-epoch history and the pairs' details stay in the file's record (`advviz artifacts list`)
    parts += [f"{k}: {_fmt(v)}" for k, v in training.items() if k not in ("epochs", "final", "metrics", "history",
                                                                          "pairs")]
    return "; ".join(parts) or "-"


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def weights_readme(folder: str | Path | None = None) -> str:
    """The text of ``advviz/weights/README.md``: the intro, one table row per shipped file read from its
    record (artefact, size, recipe hash, recipe fields, training summary, the command that rebuilds it),
    and the measured results below.

    Args:
        folder: the shipped folder (default :func:`shipped_dir`).
    """
    folder = Path(folder) if folder is not None else shipped_dir()
    rows = ["| file | artefact | size | recipe hash | recipe | training | build |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            meta = dict(fh.metadata() or {})
        if META_KEY in meta:
            rec = Record.from_dict(json.loads(meta[META_KEY]))
            recipe = ", ".join(f"{k} {_fmt(v)}" for k, v in (rec.recipe or {}).items()) or "-"
            if rec.upstream:
                recipe += "; upstream " + ", ".join(f"`{u.name}`" for u in rec.upstream)
            rows.append(f"| `{path.name}` | `{rec.name}` | {_size(path)} | `{rec.recipe_hash or '-'}` | {recipe} | "
                        f"{_training(rec.training)} | `advviz artifacts build {rec.name} --ship` |")
        else:
            name = meta.get("name", path.stem)
            rows.append(f"| `{path.name}` | `{name}` | {_size(path)} | - | no record (made before advviz.artifacts) | "
                        f"- | `advviz artifacts build {name} --ship` |")
    return f"{WEIGHTS_README_INTRO}\n" + "\n".join(rows) + f"\n\n{WEIGHTS_README_OUTRO}"


def write_weights_readme(folder: str | Path | None = None) -> Path:
    """Write :func:`weights_readme` to ``<folder>/README.md`` (default ``advviz/weights``)."""
    folder = Path(folder) if folder is not None else shipped_dir()
    path = folder / "README.md"
    path.write_text(weights_readme(folder))
    return path
