"""The numbers a walkthrough's text quotes, checked against the values its own run computes.

A notebook's prose, tables and exercise answers quote numbers from a run. Each such number is
*marked* in the markdown with an HTML comment right before it, which JupyterLab and the
documentation site (MyST-NB) do not show::

    the TSGAN samples reach <!--fig:tsgan.asr-->80.0% (SSIM <!--fig:tsgan.ssim-->0.657)

and the notebook's last cell (tagged ``remove-cell``: hidden on the site) collects the same
figures from its variables, ``{"tsgan.asr": 0.8, "tsgan.ssim": 0.6571, ...}``, and calls
:func:`check_notebook`, which reads the notebook's own ``.ipynb``, compares every marked number
with its figure and raises :class:`StaleText`, listing each stale number (key, quoted, computed),
when one disagrees.

Markers:

* ``<!--fig:KEY-->NUMBER``: the number must agree with ``figures[KEY]``. A number is written as
  in the text: ``0.744``, ``.457``, ``1,025``, ``67.1%`` (a percentage: the figure is the fraction
  0.671), ``9.98·10⁻⁵`` or ``2e-4``, ``0.8/255`` (the figure is on the [0, 1] scale), with an
  optional sign (``-`` or ``−``). **Tolerance:** the quoted number must be the figure rounded to
  the quoted digits, i.e. within half a unit of its last digit (``0.744`` accepts
  [0.7435, 0.7445], ``67.1%`` accepts [0.6705, 0.6715], ``1,025`` accepts [1024.5, 1025.5]);
  ``<!--fig:KEY tol=0.01-->`` widens it to an absolute tolerance (in the figure's units) where
  the text says why.
* ``<!--claim:KEY-->``: a qualitative statement of the text next to it (an ordering, "both
  raise the ASR"); ``figures[KEY]`` must be true.
* Keys that start with ``try`` or ``task`` (``try2.asr7``) belong to the exercise answers ("Try
  this", the explorer's tasks), whose code is re-run only when :func:`exercises_enabled`
  (``ADVVIZ_CHECK_EXERCISES=1``, set by the tests' ``conftest.py``): a class's run does not pay
  for it, and says that it did not re-measure them.

A marker must not begin a line (CommonMark would start an HTML block there and break the
paragraph): :func:`lint` says where one does.

The numbers hold for one configuration and setting only (e.g. the default configuration on the
JPEG CIFAR-10 copy with the published ResNet-20), which the text states; in any other,
:func:`check_notebook` says that it does not apply and compares nothing.

Command line, after a change that moves results (``python -m advviz.papers.quoted ...``):

* ``report NB.ipynb [...]``: every marked number, quoted vs computed, for notebooks executed
  with their check cell (``--execute`` runs them first, in the configuration the text is tied to:
  ``ADVVIZ_FAST`` unset, exercises re-measured);
* ``report --execute --write notebooks/02_tsgan.ipynb``: also rewrites each stale number in the
  notebook with the computed one at the quoted precision (``--also FILE`` rewrites the same
  marked text in another file, e.g. ``advviz/widgets/_notebook.py`` for the explorer); claims
  and the prose around the numbers still need a reader;
* ``lint NB.ipynb [...]``: the markers that cannot be read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MIME", "Quote", "Row", "StaleText", "TextCheck", "check_notebook", "compare", "exercises_enabled",
           "fingerprint", "format_like", "lint", "main", "parse_number", "quotes", "read_notebook"]

#: The mimetype under which the check cell's output carries the computed figures (read back by ``report``).
MIME = "application/vnd.advviz.quoted+json"
#: The environment variable that turns on the re-measurement of the exercise answers.
EXERCISES_ENV = "ADVVIZ_CHECK_EXERCISES"

KEY = r"[A-Za-z0-9_.\-]+"
MARKER = re.compile(r"<!--\s*(?P<kind>fig|claim):(?P<key>" + KEY + r")(?P<opts>(?:\s+[a-z]+=[^\s>]+)*)\s*-->")
_SUP = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
NUMBER = re.compile(
    r"(?P<sign>[-−+])?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<frac>\.\d+)?"
    r"(?:(?P<e>[eE][-+]?\d+)|[·×]10(?P<sup>[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+))?(?P<pct>%)?(?P<div>/255)?")
_FENCE = re.compile(r"^\s*(```|~~~)")


class StaleText(AssertionError):
    """A notebook's text quotes a number its run no longer computes (or a claim that no longer holds)."""


@dataclass(frozen=True)
class Quote:
    """One marked number (or claim) in a notebook's markdown.

    Attributes:
        key: the figure's key.
        kind: ``"fig"`` (a number) or ``"claim"`` (a statement that must be true).
        text: the number as written (``"67.1%"``); ``""`` for a claim.
        value: the number on the figure's scale (``0.671``); ``nan`` for a claim.
        tol: the accepted absolute difference (half a unit of the last quoted digit, or ``tol=``).
        cell: index of the markdown cell.
        line: line within the cell (1-based).
    """

    key: str
    kind: str
    text: str
    value: float
    tol: float
    cell: int
    line: int

    @property
    def exercise(self) -> bool:
        """Whether the quote belongs to an exercise answer (its key starts with ``try`` or ``task``)."""
        return self.key.startswith(("try", "task"))


@dataclass(frozen=True)
class Row:
    """A quote beside its computed figure.

    Attributes:
        quote: the marked number.
        computed: the figure (``None`` when the run did not compute it).
        status: ``"ok"``, ``"stale"``, ``"missing"`` (no such figure), ``"false"`` (a claim that
            does not hold), ``"not re-measured"`` (an exercise answer, exercises off) or
            ``"not compared"`` (the check does not apply to this run).
    """

    quote: Quote
    computed: Any
    status: str

    @property
    def bad(self) -> bool:
        """Whether this row fails the check."""
        return self.status in ("stale", "missing", "false")


def parse_number(text: str) -> tuple[float, float, int] | None:
    """Read the number at the start of ``text`` as the text writes it.

    Args:
        text: markdown right after a marker (``"67.1% of its samples"``).

    Returns:
        ``(value, half_unit, length)``: the value on the figure's scale (a percentage divided by
        100, ``x/255`` divided by 255), half a unit of its last written digit on the same scale,
        and how many characters it takes; ``None`` when no number starts there.
    """
    m = NUMBER.match(text)
    if not m or not (m["int"] or m["frac"]):
        return None
    digits = (m["int"] or "0").replace(",", "") + (m["frac"] or "")
    value = float(digits)
    half = 0.5 * 10.0 ** -(len(m["frac"]) - 1 if m["frac"] else 0)
    exp = int(m["e"][1:]) if m["e"] else int(m["sup"].translate(_SUP)) if m["sup"] else 0
    scale = 10.0 ** exp / (100.0 if m["pct"] else 1.0) / (255.0 if m["div"] else 1.0)
    sign = -1.0 if m["sign"] in ("-", "−") else 1.0
    return sign * value * scale, half * scale, m.end()


def _options(opts: str) -> dict[str, str]:
    return dict(o.split("=", 1) for o in opts.split())


def quotes(nb: Mapping[str, Any]) -> list[Quote]:
    """Every marked number and claim in a notebook's markdown cells, in order.

    Args:
        nb: the notebook (its JSON, as :func:`read_notebook` returns it).

    Raises:
        ValueError: a marker that :func:`lint` reports (no number after a ``fig`` marker, an unknown option).
    """
    problems = lint(nb)
    if problems:
        raise ValueError("unreadable number markers:\n  " + "\n  ".join(problems))
    found = []
    for ci, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for li, line in enumerate(_source(cell).split("\n"), 1):
            for m in MARKER.finditer(line):
                opts = _options(m["opts"])
                if m["kind"] == "claim":
                    found.append(Quote(m["key"], "claim", "", math.nan, 0.0, ci, li))
                    continue
                value, half, length = parse_number(line[m.end():])  # type: ignore[misc]  # lint checked it
                tol = float(opts["tol"]) if "tol" in opts else half
                found.append(Quote(m["key"], "fig", line[m.end():m.end() + length], value, tol, ci, li))
    return found


def lint(nb: Mapping[str, Any]) -> list[str]:
    """Markers that cannot be read, one message each (empty when all are fine).

    A ``fig`` marker must be followed at once by a number; no marker may begin a line or sit in a
    code block; the only option is ``tol=`` (a non-negative number), and a claim takes none.
    """
    problems = []
    for ci, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        fenced = False
        for li, line in enumerate(_source(cell).split("\n"), 1):
            if _FENCE.match(line):
                fenced = not fenced
            where = f"cell {ci}, line {li}"
            for m in MARKER.finditer(line):
                label = f"{where}: <!--{m['kind']}:{m['key']}-->"
                if fenced:
                    problems.append(f"{label} sits in a code block, where it would show")
                if not line[:m.start()].strip():
                    problems.append(f"{label} begins a line: CommonMark starts an HTML block there; "
                                    "move a word of the text before it")
                opts = m["opts"].split()
                if m["kind"] == "claim" and opts:
                    problems.append(f"{label} is a claim: it takes no options")
                for o in opts:
                    name, _, val = o.partition("=")
                    if name != "tol" or not re.fullmatch(r"\d+(\.\d+)?([eE]-?\d+)?", val):
                        problems.append(f"{label} has option {o!r}: the only option is tol=NUMBER")
                if m["kind"] == "fig" and parse_number(line[m.end():]) is None:
                    problems.append(f"{label} is not followed by a number (found {line[m.end():m.end() + 12]!r})")
            if "<!--" in line and re.search(r"<!--\s*(fig|claim)\b", line) and not MARKER.search(line):
                problems.append(f"{where}: a marker that does not read as <!--fig:KEY--> or <!--claim:KEY-->")
    return problems


def _source(cell: Mapping[str, Any]) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def compare(found: Sequence[Quote], figures: Mapping[str, Any], *, exercises: bool = True) -> list[Row]:
    """Each quote beside its figure, with a status (see :class:`Row`).

    Args:
        found: the quotes (:func:`quotes`).
        figures: key → computed value (a number, or a bool for a claim).
        exercises: whether the exercise figures (keys ``try…``, ``task…``) were computed in this run; when
            ``False`` their quotes are "not re-measured" instead of "missing".
    """
    rows = []
    for q in found:
        if q.key not in figures:
            rows.append(Row(q, None, "not re-measured" if q.exercise and not exercises else "missing"))
            continue
        got = figures[q.key]
        if q.kind == "claim":
            rows.append(Row(q, got, "ok" if bool(got) else "false"))
            continue
        try:
            x = float(got)
        except (TypeError, ValueError):
            rows.append(Row(q, got, "stale"))
            continue
        ok = math.isfinite(x) and abs(x - q.value) <= q.tol + 1e-9 * max(1.0, abs(q.value))
        rows.append(Row(q, got, "ok" if ok else "stale"))
    return rows


@dataclass
class TextCheck:
    """The outcome of :func:`check_notebook`: what was compared, in which run.

    Attributes:
        notebook: the notebook's file.
        applies: whether this run is the configuration the text was measured in.
        measured_in: that configuration, in words.
        this_run: this run's configuration, in words.
        rows: every quote beside its figure.
        figures: the figures the run computed.
        exercises: whether the exercise answers were re-measured.
    """

    notebook: str
    applies: bool
    measured_in: str
    this_run: str
    rows: list[Row]
    figures: dict[str, Any] = field(default_factory=dict)
    exercises: bool = False

    @property
    def bad(self) -> list[Row]:
        """The rows that fail: stale numbers, missing figures, false claims."""
        return [r for r in self.rows if r.bad]

    def table(self, rows: Sequence[Row] | None = None) -> str:
        """One line per quote: status, key, quoted, computed, where."""
        rows = self.rows if rows is None else rows
        lines = [f"{'status':15s} {'key':32s} {'quoted':>12s} {'computed':>14s}  where"]
        for r in rows:
            q = r.quote
            quoted = "(claim)" if q.kind == "claim" else q.text
            lines.append(f"{r.status:15s} {q.key:32s} {quoted:>12s} {_show(r.computed):>14s}  "
                         f"cell {q.cell}, line {q.line}")
        return "\n".join(lines)

    def summary(self) -> str:
        """One paragraph: what was compared and the outcome."""
        n = len(self.rows)
        name = Path(self.notebook).name
        if not self.applies:
            return (f"{name}: the {n} numbers the text quotes were measured in {self.measured_in}; this run is "
                    f"{self.this_run}, so the check does not apply and nothing was compared.")
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        tail = "" if self.exercises else (f" The exercise answers were not re-measured in this run "
                                          f"(set {EXERCISES_ENV}=1, as the tests do).")
        return f"{name}: {n} quoted numbers checked against this run ({self.measured_in}): {parts}.{tail}"

    def __str__(self) -> str:
        if not self.applies:
            return self.summary()
        return self.summary() + "\n" + self.table()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": str(self), MIME: self.to_json()}

    def to_json(self) -> dict[str, Any]:
        """The check as JSON-able data (what ``report`` reads from an executed notebook)."""
        return {"notebook": Path(self.notebook).name, "applies": self.applies, "measured_in": self.measured_in,
                "this_run": self.this_run, "exercises": self.exercises,
                "figures": {k: _jsonable(v) for k, v in self.figures.items()}}

    def raise_if_stale(self) -> None:
        """Raise :class:`StaleText` listing every failing quote (nothing when the check does not apply)."""
        if self.applies and self.bad:
            raise StaleText(
                f"{Path(self.notebook).name}: {len(self.bad)} of {len(self.rows)} numbers the text quotes disagree "
                f"with this run ({self.measured_in}); tolerance: the quoted digits (or the marker's tol=).\n"
                + self.table(self.bad)
                + f"\nUpdate the text: python -m advviz.papers.quoted report --execute --write "
                  f"notebooks/{Path(self.notebook).name} (a notebook generated from code, like the explorer, also "
                  "needs --also with its generator), then read the prose around each changed number.")


def _show(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def fingerprint(*modules: Any) -> str:
    """The first 12 hex digits of a sha256 over the parameters and buffers of ``modules`` (``nn.Module``).

    A notebook whose figures depend on networks trained on first use (whose weights then depend on
    the process that trained them) names the networks it was measured with by this fingerprint, and
    its check applies only when they are the same.
    """
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def exercises_enabled() -> bool:
    """Whether the exercise answers are to be re-measured (``ADVVIZ_CHECK_EXERCISES=1``)."""
    return os.environ.get(EXERCISES_ENV, "") not in ("", "0")


def read_notebook(path: str | Path) -> dict[str, Any]:
    """A notebook's JSON."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _find(notebook: str | Path) -> Path | None:
    p = Path(notebook)
    if p.is_file():
        return p
    repo = Path(__file__).resolve().parents[2] / "notebooks" / p.name  # a checkout's notebooks/
    return repo if repo.is_file() else None


def check_notebook(notebook: str | Path, figures: Mapping[str, Any], *, applies: bool, measured_in: str,
                   this_run: str, exercises: bool | None = None, display: bool = True) -> TextCheck:
    """Compare the numbers a notebook's text quotes with the figures its run computed.

    Called by a notebook's last cell. Shows the outcome (in IPython) and raises when a quoted
    number disagrees, so that nbval fails the notebook until the text is updated.

    Args:
        notebook: the notebook's file name (looked up in the working directory, which is the
            notebook's when Jupyter or nbval runs it, then in the checkout's ``notebooks/``).
        figures: key → value the run computed (numbers; bools for claims).
        applies: whether this run is the configuration and setting the text was measured in.
        measured_in: that configuration and setting, in words.
        this_run: this run's, in words (shown when the check does not apply).
        exercises: whether ``figures`` holds the exercise answers (default :func:`exercises_enabled`).
        display: show the outcome with IPython's ``display`` when IPython runs.

    Returns:
        The :class:`TextCheck`.

    Raises:
        StaleText: the check applies and a quoted number is stale, a figure is missing or a claim is false.
        FileNotFoundError: the notebook's file cannot be found.
        ValueError: a figure key that no marker could name (a space, a colon…).
    """
    unnamed = [k for k in figures if not re.fullmatch(KEY, k)]
    if unnamed:
        raise ValueError(f"figure keys {unnamed} cannot be named by a marker: use letters, digits, '_', '.', '-'")
    path = _find(notebook)
    if path is None:
        raise FileNotFoundError(f"cannot find {notebook}: run the notebook from its folder (or from a checkout "
                                "of advviz, whose notebooks/ holds it)")
    ex = exercises_enabled() if exercises is None else exercises
    found = quotes(read_notebook(path))
    rows = compare(found, figures, exercises=ex) if applies else [Row(q, figures.get(q.key), "not compared")
                                                                   for q in found]
    result = TextCheck(str(path), applies, measured_in, this_run, rows, dict(figures), ex)
    if display:
        try:
            from IPython import get_ipython
            from IPython.display import display as show
        except ImportError:  # pragma: no cover - IPython comes with Jupyter
            pass
        else:
            if get_ipython() is not None:
                show(result)
    result.raise_if_stale()
    return result


# ------------------------------------------------------------------------------------------- CLI
def format_like(value: float, quote: Quote) -> str:
    """``value`` written as ``quote`` writes its number: the same digits, %, /255, exponent and sign.

    Thousands are separated by commas when the quote separates them or the new number has four
    digits or more before the point; a quote without a leading zero (``.457``) stays without one.
    """
    m = NUMBER.match(quote.text)
    if m is None:
        raise ValueError(f"{quote.text!r} is not a number")
    exp = int(m["e"][1:]) if m["e"] else int(m["sup"].translate(_SUP)) if m["sup"] else 0
    x = value * (100.0 if m["pct"] else 1.0) * (255.0 if m["div"] else 1.0) / 10.0 ** exp
    decimals = len(m["frac"]) - 1 if m["frac"] else 0
    commas = (m["int"] and "," in m["int"]) or (abs(x) >= 1000 and not exp)
    body = f"{abs(x):,.{decimals}f}" if commas else f"{abs(x):.{decimals}f}"
    if not m["int"] and body.startswith("0."):
        body = body[1:]
    negative = x < 0 and float(body.replace(",", "")) != 0
    sign = ("−" if m["sign"] == "−" else "-") if negative else ("+" if m["sign"] == "+" else "")
    return sign + body + quote.text[m.end("frac") if m["frac"] else m.end("int"):]


def _executed_check(nb: Mapping[str, Any]) -> dict[str, Any] | None:
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            data = out.get("data", {})
            if MIME in data:
                return data[MIME]
    return None


def _execute(path: Path, out: Path | None) -> dict[str, Any]:
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as e:  # pragma: no cover - the dev extra has both
        raise SystemExit(f"--execute needs nbclient and nbformat (pip install -e '.[dev]'): {e}") from e
    saved = {k: os.environ.get(k) for k in ("ADVVIZ_FAST", EXERCISES_ENV)}
    os.environ.pop("ADVVIZ_FAST", None)  # the kernel inherits the environment: the default configuration
    os.environ[EXERCISES_ENV] = "1"
    nb = nbformat.read(str(path), as_version=4)
    try:
        client = NotebookClient(nb, timeout=3600, allow_errors=True, resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if out is not None:
        nbformat.write(nb, str(out))
    return json.loads(nbformat.writes(nb))


def _write(path: Path, replacements: Sequence[tuple[str, str]]) -> int:
    """Replace each ``old`` text by ``new`` in ``path`` (a notebook's markdown cells, or any text
    file); the notebook keeps its JSON layout. Returns how many replacements found their text."""
    raw = path.read_text(encoding="utf-8")
    hits = 0
    if path.suffix == ".ipynb":
        nb = json.loads(raw)
        for cell in nb["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            src = _source(cell)
            for old, new in replacements:
                hits += old in src
                src = src.replace(old, new)
            cell["source"] = src if isinstance(cell["source"], str) else src.splitlines(keepends=True)
        text = json.dumps(nb, indent=1, ensure_ascii=raw.isascii()) + "\n"
    else:
        text = raw
        for old, new in replacements:
            hits += old in text
            text = text.replace(old, new)
    if text != raw:
        path.write_text(text, encoding="utf-8")
    return hits


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m advviz.papers.quoted report|lint NB.ipynb ...``; the exit status is 1 when a check fails."""
    ap = argparse.ArgumentParser(prog="python -m advviz.papers.quoted", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("report", help="every marked number: quoted vs computed")
    rp.add_argument("notebooks", nargs="+", type=Path)
    rp.add_argument("--execute", action="store_true", help="run each notebook first (ADVVIZ_FAST unset, exercises on)")
    rp.add_argument("--out", type=Path, help="with --execute: a folder for the executed notebooks")
    rp.add_argument("--write", action="store_true", help="rewrite each stale number with the computed one")
    rp.add_argument("--also", type=Path, action="append", default=[],
                    help="with --write: another file holding the same marked text (e.g. advviz/widgets/_notebook.py)")
    lp = sub.add_parser("lint", help="markers that cannot be read")
    lp.add_argument("notebooks", nargs="+", type=Path)
    args = ap.parse_args(argv)
    status = 0
    for path in args.notebooks:
        nb = read_notebook(path)
        if args.cmd == "lint":
            problems = lint(nb)
            sys.stdout.write(f"{path}: {len(quotes(nb)) if not problems else 0} markers, {len(problems)} problems\n"
                             + "".join(f"  {p}\n" for p in problems))
            status |= bool(problems)
            continue
        if args.execute:
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
            nb = _execute(path, args.out / path.name if args.out else None)
        got = _executed_check(nb)
        if got is None:
            sys.stdout.write(f"{path}: no check output in this notebook: pass an executed notebook or --execute\n")
            status = 1
            continue
        found = quotes(nb)
        if not got["applies"]:
            sys.stdout.write(f"{path}: ran as {got['this_run']}, but the text was measured in {got['measured_in']}: "
                             "run it in that configuration (--execute does)\n")
            status = 1
            continue
        check = TextCheck(str(path), True, got["measured_in"], got["this_run"],
                          compare(found, got["figures"], exercises=got["exercises"]), got["figures"], got["exercises"])
        sys.stdout.write(str(check) + "\n\n")
        status |= bool(check.bad)
        if args.write:
            fixes = [(f"<!--{r.quote.kind}:{r.quote.key}-->{r.quote.text}",
                      f"<!--{r.quote.kind}:{r.quote.key}-->{format_like(float(r.computed), r.quote)}")
                     for r in check.bad if r.status == "stale" and isinstance(r.computed, (int, float))]
            for target in [path, *args.also]:
                _write(target, fixes)
            claims = [r for r in check.bad if r.status != "stale"]
            sys.stdout.write(f"rewrote {len(fixes)} numbers in {path}" + "".join(f" and {a}" for a in args.also)
                             + (f"; {len(claims)} to fix by hand (claims, missing figures)" if claims else "")
                             + "\n")
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
