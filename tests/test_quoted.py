"""The check that keeps the walkthroughs' text true (``advviz.papers.quoted``).

A notebook's markdown marks each number it quotes from its run (``<!--fig:KEY-->0.744``); the
notebook's last cell compares them with the figures the run computed. These tests check the
check: it fails when a quoted number is edited by hand and passes when text and figures agree.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from advviz.papers import quoted as Q

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _nb(*markdown: str) -> dict:
    return {"cells": [{"cell_type": "markdown", "id": f"md{i}", "metadata": {}, "source": m}
                      for i, m in enumerate(markdown)],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _write(tmp_path: Path, nb: dict, name: str = "nb.ipynb") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


TEXT = ("| | ours |\n| --- | --- |\n| TSGAN: ASR | <!--fig:tsgan.asr-->80.0% |\n| FID | <!--fig:tsgan.fid-->1,200 |\n\n"
        "The TSGAN samples keep SSIM <!--fig:tsgan.ssim-->0.657, and AdvGAN is behind\n"
        "on ASR <!--claim:advgan_behind--> (<!--fig:advgan.asr-->.717).")
FIGURES = {"tsgan.asr": 0.8, "tsgan.fid": 1199.8, "tsgan.ssim": 0.65712, "advgan.asr": 0.7168, "advgan_behind": True}


@pytest.mark.parametrize("text,value,half,length", [
    ("67.1% of", 0.671, 0.0005, 5), ("0.744)", 0.744, 0.0005, 5), (".457 at", 0.457, 0.0005, 4),
    ("1,025 / 0.6", 1025.0, 0.5, 5), ("9.98·10⁻⁵ per", 9.98e-5, 5e-8, 9), ("2e-4,", 2e-4, 5e-5, 4),
    ("0.8/255", 0.8 / 255, 0.05 / 255, 7), ("−0.5", -0.5, 0.05, 4), ("39 of 40", 39.0, 0.5, 2), ("12.", 12.0, 0.5, 2),
])
def test_numbers_read_as_written(text, value, half, length):
    v, h, n = Q.parse_number(text)
    assert v == pytest.approx(value) and h == pytest.approx(half) and n == length


def test_a_marker_must_be_followed_by_a_number():
    assert Q.parse_number("about") is None
    problems = Q.lint(_nb("the ASR is <!--fig:asr--> about 80%"))
    assert len(problems) == 1 and "not followed by a number" in problems[0]


def test_text_and_figures_that_agree_pass(tmp_path):
    path = _write(tmp_path, _nb(TEXT))
    check = Q.check_notebook(path, FIGURES, applies=True, measured_in="the default run", this_run="the default run",
                             display=False)
    assert [r.status for r in check.rows] == ["ok"] * 5
    assert [r.quote.key for r in check.rows] == ["tsgan.asr", "tsgan.fid", "tsgan.ssim", "advgan_behind", "advgan.asr"]


def test_a_number_edited_by_hand_fails_and_is_named(tmp_path):
    path = _write(tmp_path, _nb(TEXT.replace("0.657", "0.667")))
    with pytest.raises(Q.StaleText) as info:
        Q.check_notebook(path, FIGURES, applies=True, measured_in="the default run", this_run="the default run",
                         display=False)
    msg = str(info.value)
    assert "1 of 5 numbers" in msg
    stale = [line for line in msg.splitlines() if line.startswith("stale")]
    assert len(stale) == 1 and "tsgan.ssim" in stale[0] and "0.667" in stale[0] and "0.65712" in stale[0]


def test_a_figure_that_moved_fails_a_claim_that_no_longer_holds_too(tmp_path):
    path = _write(tmp_path, _nb(TEXT))
    moved = {**FIGURES, "tsgan.asr": 0.7, "advgan_behind": False}
    with pytest.raises(Q.StaleText) as info:
        Q.check_notebook(path, moved, applies=True, measured_in="m", this_run="m", display=False)
    assert "tsgan.asr" in str(info.value) and "advgan_behind" in str(info.value) and "false" in str(info.value)
    missing = {k: v for k, v in FIGURES.items() if k != "tsgan.fid"}
    with pytest.raises(Q.StaleText, match="missing"):
        Q.check_notebook(path, missing, applies=True, measured_in="m", this_run="m", display=False)


@pytest.mark.parametrize("computed,ok", [(0.7435, True), (0.7445, True), (0.74449, True), (0.7446, False),
                                         (0.7434, False), (float("nan"), False)])
def test_tolerance_is_the_quoted_digits(computed, ok):
    rows = Q.compare(Q.quotes(_nb("SSIM <!--fig:s-->0.744")), {"s": computed})
    assert (rows[0].status == "ok") is ok


def test_percent_and_explicit_tolerance():
    nb = _nb("ASR <!--fig:a-->67.1% and FID <!--fig:f tol=50-->476")
    assert [r.status for r in Q.compare(Q.quotes(nb), {"a": 0.6714, "f": 520.0})] == ["ok", "ok"]
    assert [r.status for r in Q.compare(Q.quotes(nb), {"a": 0.6716, "f": 527.0})] == ["stale", "stale"]


def test_a_figure_key_that_no_marker_can_name_is_refused(tmp_path):
    path = _write(tmp_path, _nb(TEXT))
    with pytest.raises(ValueError, match="II: fgsm"):
        Q.check_notebook(path, {**FIGURES, "II: fgsm.wrong": 0.5}, applies=True, measured_in="m", this_run="m",
                         display=False)


def test_outside_its_configuration_the_check_says_it_does_not_apply(tmp_path):
    path = _write(tmp_path, _nb(TEXT))
    check = Q.check_notebook(path, {"tsgan.asr": 0.1}, applies=False, measured_in="the default configuration",
                             this_run="ADVVIZ_FAST=1", display=False)
    assert {r.status for r in check.rows} == {"not compared"} and not check.bad
    assert "does not apply" in str(check) and "ADVVIZ_FAST=1" in str(check) and "5 numbers" in str(check)


def test_exercise_answers_not_re_measured_are_listed_not_failed(tmp_path):
    path = _write(tmp_path, _nb("ASR <!--fig:a-->67.1%", "<details>answer: <!--fig:try2.asr-->70.7%</details>"))
    check = Q.check_notebook(path, {"a": 0.671}, applies=True, measured_in="m", this_run="m", exercises=False,
                             display=False)
    assert [r.status for r in check.rows] == ["ok", "not re-measured"]
    assert "not re-measured" in check.summary() and Q.EXERCISES_ENV in check.summary()
    with pytest.raises(Q.StaleText, match="try2.asr"):
        Q.check_notebook(path, {"a": 0.671}, applies=True, measured_in="m", this_run="m", exercises=True,
                         display=False)


def test_lint_rejects_markers_that_would_show_or_break_the_paragraph():
    problems = Q.lint(_nb("text\n<!--fig:a-->0.5 starts a line", "```python\nx = 1  # <!--fig:b-->2\n```",
                          "ok <!--fig:c tol=x-->1", "ok <!--claim:d tol=1-->", "ok <!-- fig a -->1"))
    assert len(problems) == 5
    assert "begins a line" in problems[0] and "code block" in problems[1] and "tol=NUMBER" in problems[2]
    assert "claim" in problems[3] and "does not read" in problems[4]
    with pytest.raises(ValueError, match="unreadable"):
        Q.quotes(_nb("text\n<!--fig:a-->0.5"))


@pytest.mark.parametrize("quote,value,written", [
    ("67.1%", 0.8, "80.0%"), ("476", 1200.4, "1,200"), (".457", 0.4512, ".451"), ("0.744", 0.65712, "0.657"),
    ("1,025", 711.2, "711"), ("0.8/255", 0.0063, "1.6/255"), ("−0.50", -0.25, "−0.25")])
def test_format_like_writes_the_new_value_as_the_text_wrote_the_old(quote, value, written):
    q = Q.quotes(_nb(f"x <!--fig:k-->{quote}"))[0]
    assert Q.format_like(value, q) == written
    assert Q.compare([Q.quotes(_nb(f"x <!--fig:k-->{written}"))[0]], {"k": value})[0].status == "ok"


def _executed(nb: dict, figures: dict, applies: bool = True) -> dict:
    nb = copy.deepcopy(nb)
    payload = {"notebook": "nb.ipynb", "applies": applies, "measured_in": "the default run", "this_run": "x",
               "exercises": True, "figures": figures}
    nb["cells"].append({"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "check",
                        "outputs": [{"output_type": "display_data", "metadata": {},
                                     "data": {"text/plain": "...", Q.MIME: payload}}]})
    return nb


def test_report_lists_every_number_and_write_brings_the_text_up_to_date(tmp_path, capsys):
    nb = _nb(TEXT)
    moved = {**FIGURES, "tsgan.asr": 0.783, "tsgan.fid": 956.2}
    path = _write(tmp_path, _executed(nb, moved))
    also = tmp_path / "source.py"
    also.write_text(f'TEXT = """{TEXT}"""\n', encoding="utf-8")
    assert Q.main(["report", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.count("\nok ") == 3 and out.count("\nstale ") == 2 and "tsgan.fid" in out and "956.2" in out
    assert Q.main(["report", str(path), "--write", "--also", str(also)]) == 1
    assert "rewrote 2 numbers" in capsys.readouterr().out
    text = Q.read_notebook(path)["cells"][0]["source"]
    assert "<!--fig:tsgan.asr-->78.3%" in text and "<!--fig:tsgan.fid-->956 |" in text
    assert "<!--fig:tsgan.asr-->78.3%" in also.read_text(encoding="utf-8")
    assert Q.main(["report", str(path)]) == 0
    assert "\nstale " not in capsys.readouterr().out


def test_report_refuses_a_notebook_that_ran_elsewhere_or_never_ran(tmp_path, capsys):
    assert Q.main(["report", str(_write(tmp_path, _nb(TEXT)))]) == 1
    assert "--execute" in capsys.readouterr().out
    assert Q.main(["report", str(_write(tmp_path, _executed(_nb(TEXT), FIGURES, applies=False), "x.ipynb"))]) == 1
    assert "run it in that configuration" in capsys.readouterr().out


@pytest.mark.slow
def test_report_execute_runs_the_notebook_in_the_default_configuration(tmp_path, capsys, monkeypatch):
    """One command end to end: run a notebook whose last cell checks its text, then list the numbers."""
    pytest.importorskip("nbclient")
    monkeypatch.setenv("ADVVIZ_FAST", "1")  # --execute runs the default configuration whatever is set
    nb = _nb("The run computes <!--fig:x-->0.75 and <!--fig:try1.y-->2.")
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb["cells"].append({"cell_type": "code", "id": "check", "metadata": {}, "execution_count": None, "outputs": [],
                        "source": (
        "import os\nfrom advviz.papers.quoted import check_notebook, exercises_enabled\n"
        "fast = os.environ.get('ADVVIZ_FAST', '') not in ('', '0')\n"
        "check = check_notebook('nb.ipynb', {'x': 0.7, 'try1.y': 2}, applies=not fast, exercises=exercises_enabled(),"
        " measured_in='the default run', this_run='fast' if fast else 'the default run')")})
    path = _write(tmp_path, nb)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    assert Q.main(["report", "--execute", "--out", str(tmp_path / "out"), str(path)]) == 1
    out = capsys.readouterr().out
    assert "1 ok, 1 stale" in out and "0.75" in out and (tmp_path / "out" / "nb.ipynb").is_file()
    assert __import__("os").environ["ADVVIZ_FAST"] == "1"  # the caller's environment is left as it was


def test_fingerprint_names_the_weights():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert Q.fingerprint(a) == Q.fingerprint(a) and Q.fingerprint(a) != Q.fingerprint(b)
    assert Q.fingerprint(a, b) != Q.fingerprint(b, a) and len(Q.fingerprint(a)) == 12
    b.load_state_dict(a.state_dict())
    assert Q.fingerprint(a) == Q.fingerprint(b)


# ------------------------------------------------------------------------------ the walkthroughs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_walkthrough_marks_its_numbers_readably_and_checks_them_in_a_hidden_last_cell(path):
    nb = Q.read_notebook(path)
    assert Q.lint(nb) == []
    assert len(Q.quotes(nb)) >= 10, "the walkthrough quotes numbers from its run: mark them"
    last = nb["cells"][-1]
    src = last["source"] if isinstance(last["source"], str) else "".join(last["source"])
    assert last["cell_type"] == "code" and "check_notebook(" in src and path.name in src
    assert "remove-cell" in last["metadata"].get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_editing_a_walkthroughs_quoted_number_by_hand_fails_its_check(path, tmp_path):
    """The real markdown, with figures equal to what it quotes, passes; one number changed fails."""
    nb = Q.read_notebook(path)
    found = Q.quotes(nb)
    figures = {q.key: (True if q.kind == "claim" else q.value)  # the most precise quote of each key
               for q in sorted(found, key=lambda q: -q.tol)}
    copy_path = _write(tmp_path, nb, path.name)
    Q.check_notebook(copy_path, figures, applies=True, measured_in="m", this_run="m", exercises=True, display=False)
    q = next(q for q in found if q.kind == "fig")
    cell = nb["cells"][q.cell]
    src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    marker = f"<!--fig:{q.key}-->{q.text}"
    edited = Q.format_like(q.value + 10 * q.tol + 1, q)
    cell["source"] = src.replace(marker, f"<!--fig:{q.key}-->{edited}", 1)
    _write(tmp_path, nb, path.name)
    with pytest.raises(Q.StaleText, match=q.key.replace(".", r"\.")):
        Q.check_notebook(copy_path, figures, applies=True, measured_in="m", this_run="m", exercises=True,
                         display=False)
