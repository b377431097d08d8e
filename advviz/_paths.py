"""Where advviz looks for data, weights and its own cache.

Resolution order (documented in the README):

* data: an explicit ``root`` argument, then ``$ADVVIZ_DATA``, then ``<cache>/data``;
* weights: ``$ADVVIZ_WEIGHTS``, then the small weights advviz ships (``advviz/weights``), then
  ``<cache>/weights``, then a download (sha256-checked) or advviz's own training recipe;
* cache: ``$ADVVIZ_CACHE``, else ``$XDG_CACHE_HOME/advviz``, else ``~/.cache/advviz``.

``$ADVVIZ_OFFLINE=1`` forbids every download (the test suite sets it).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_root", "weights_dirs", "offline"]


def cache_dir() -> Path:
    """Return advviz's user cache directory (created on demand)."""
    env = os.environ.get("ADVVIZ_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base).expanduser() / "advviz"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the dataset root: the argument, then ``$ADVVIZ_DATA``, then the user cache."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("ADVVIZ_DATA")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"


def weights_dirs() -> list[Path]:
    """Folders searched for weight files, in order: ``$ADVVIZ_WEIGHTS``, the package's own
    ``advviz/weights`` (small weights advviz trained itself), then the user cache."""
    dirs = []
    env = os.environ.get("ADVVIZ_WEIGHTS")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(__file__).resolve().parent / "weights")
    dirs.append(cache_dir() / "weights")
    return dirs


def offline() -> bool:
    """True when ``$ADVVIZ_OFFLINE`` is set to a true value: no download is attempted."""
    return os.environ.get("ADVVIZ_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
