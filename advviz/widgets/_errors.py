"""One way to report errors raised in widget callbacks: inside the widget, never only in a log.

Every callback of every component is wrapped by :func:`guarded`. An exception raised inside is
caught, shown in the component's :class:`ErrorArea` (a red box with the exception type and
message, the traceback folded underneath), logged on ``advviz.widgets`` at ERROR level, and
appended to :data:`REPORTED` (which the tests inspect). Without this, ipywidgets hands button
errors to a logger and observer errors to the kernel's comm handler, which the notebook user
never sees.
"""

from __future__ import annotations

import functools
import html
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as W

__all__ = ["ErrorArea", "guarded", "report", "REPORTED", "ReportedError"]

log = logging.getLogger("advviz.widgets")

F = TypeVar("F", bound=Callable[..., Any])


class ReportedError:
    """An error shown in a widget: the component, the callback and the exception."""

    def __init__(self, owner: str, callback: str, exc: BaseException) -> None:
        self.owner = owner
        self.callback = callback
        self.exc = exc

    def __repr__(self) -> str:
        return f"<{self.owner}.{self.callback}: {type(self.exc).__name__}: {self.exc}>"


#: How each component is named in error messages (the words a user sees on the screen).
COMPONENT_NAMES = {"ImagePicker": "image picker", "CFRView": "CFR tab", "AttackLab": "Attack lab",
                   "PurifierLab": "Purifiers tab", "FeatureMapView": "Features tab", "TrainPanel": "Train tab",
                   "TakeoverView": "Takeover tab", "RobustnessView": "Robustness tab", "Explorer": "explorer",
                   "GeneratorView": "generator view", "TwoStreamView": "two-stream view"}

#: Every error shown by an :class:`ErrorArea` in this process (tests assert it stays empty).
REPORTED: list[ReportedError] = []
_lock = threading.Lock()


#: CSS that keeps a box inside its panel: no wider than it, long words (paths) broken.
_FIT = "max-width:100%;box-sizing:border-box;overflow-wrap:anywhere;"


class ErrorArea(W.HTML):
    """An HTML box that is empty until an error is shown; :meth:`clear` hides it again. It is never
    wider than the panel that holds it (long paths and tracebacks wrap)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("layout", W.Layout(max_width="100%"))
        super().__init__(value="", **kwargs)
        self.add_class("advviz-error")
        self.last: BaseException | None = None

    def show(self, exc: BaseException, *, where: str = "") -> None:
        """Display ``exc``: its message in plain words first; type, place and traceback folded underneath.

        ``where`` is ``"Component.callback"``; the component is named as the user sees it
        (``"ImagePicker"`` -> "image picker").
        """
        self.last = exc
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        owner = where.split(".")[0] if where else ""
        place = COMPONENT_NAMES.get(owner, owner)
        heading = f"Problem in the {place}" if place else "Problem"
        self.value = (
            f'<div class="advviz-error-box" style="border:1px solid #c0392b;background:#fdecea;color:#7b241c;{_FIT}'
            'padding:6px 8px;border-radius:4px;font-family:sans-serif;font-size:13px">'
            f"<b>{html.escape(heading)}:</b> {html.escape(str(exc) or type(exc).__name__)}"
            '<details><summary style="cursor:pointer">details for developers</summary>'
            f'<pre style="font-size:11px;white-space:pre-wrap;{_FIT}">{html.escape(type(exc).__name__)} in '
            f"{html.escape(where or '?')}\n\n{html.escape(tb)}</pre></details></div>")

    def message(self, text: str, *, kind: str = "info") -> None:
        """Display a plain (non-error) notice, e.g. "the CFR attack is not available yet"."""
        colours = {"info": ("#1f618d", "#eaf2f8"), "warning": ("#9a7d0a", "#fef9e7")}
        fg, bg = colours.get(kind, colours["info"])
        self.last = None
        self.value = (f'<div class="advviz-notice" style="border:1px solid {fg};background:{bg};color:{fg};{_FIT}'
                      f'padding:6px 8px;border-radius:4px;font-family:sans-serif;font-size:13px">'
                      f"{html.escape(text)}</div>")

    def clear(self) -> None:
        """Hide whatever is shown."""
        self.last = None
        self.value = ""


def guarded(fn: F) -> F:
    """Decorate a component method used as a widget callback.

    The component must have an ``errors`` attribute (an :class:`ErrorArea`). A successful call
    leaves the area as the callback left it; an exception is shown there, logged and recorded
    in :data:`REPORTED` instead of propagating (returns ``None``).
    """

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:  # every error, whatever its type, must reach the user
            report(self, fn.__name__, exc)
            return None

    return wrapper  # type: ignore[return-value]


def report(component: Any, callback: str, exc: BaseException) -> None:
    """Show ``exc`` in ``component.errors`` (an :class:`ErrorArea`), log it and record it in :data:`REPORTED`.

    What :func:`guarded` does with an error; the job runner (:mod:`advviz.widgets._jobs`) calls it
    for an error raised in a job's worker thread.
    """
    owner = type(component).__name__
    with _lock:
        REPORTED.append(ReportedError(owner, callback, exc))
    log.error("error in %s.%s: %s: %s", owner, callback, type(exc).__name__, exc)
    area = getattr(component, "errors", None)
    if isinstance(area, ErrorArea):
        area.show(exc, where=f"{owner}.{callback}")
