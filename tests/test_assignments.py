"""Course assignments: release (student versions) and check (nbval per-test report)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from rubikkit import assignments
from rubikkit.assignments import BEGIN, END, check, release, release_notebook, test_cells
from rubikkit.cli import main

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "notebooks" / "assignments").glob("*.ipynb"))
BOOK_COPIES = REPO / "book" / "assignments"


def _nb(*cells):
    nb = new_notebook(cells=list(cells))
    for i, c in enumerate(nb.cells):
        c.id = f"c{i}"
    return nb


def _test_cell(src, name="t", points=1):
    cell = new_code_cell(src)
    cell.metadata["tags"] = ["test"]
    cell.metadata["rubikkit"] = {"name": name, "points": points}
    return cell


def _write(path: Path, nb) -> Path:
    nbformat.write(nb, path)
    return path


SOLVED = f"""def double(x):
    y = x
    {BEGIN}
    y = 2 * x
    {END}
    return y
"""


# --- release: pure transformation ------------------------------------------------------------


def test_release_replaces_solution_keeps_indent_and_clears_outputs():
    code = new_code_cell(SOLVED, execution_count=3, outputs=[new_output("stream", text="hi")])
    md = new_markdown_cell(f"Answer:\n{BEGIN}\nThe secret.\n{END}\n")
    test = _test_cell("assert double(2) == 4")
    out = release_notebook(_nb(code, md, test), name="a.ipynb")
    assert (
        out.cells[0].source
        == "def double(x):\n    y = x\n    raise NotImplementedError\n    return y\n"
    )
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    assert "secret" not in out.cells[1].source and BEGIN not in out.cells[1].source
    assert out.cells[2].source == test.source
    assert out.cells[2].metadata["tags"] == ["test"]
    # The input is left alone.
    assert BEGIN in code.source


def test_release_of_several_blocks_in_one_cell():
    src = f"a = 1\n{BEGIN}\nb = 2\n{END}\nc = 3\n  {BEGIN}\n  d = 4\n  {END}\n"
    out = release_notebook(_nb(new_code_cell(src)))
    assert (
        out.cells[0].source
        == "a = 1\nraise NotImplementedError\nc = 3\n  raise NotImplementedError\n"
    )


@pytest.mark.parametrize(
    "src, match",
    [
        (f"x = 1\n{BEGIN}\ny = 2\n", r"bad\.ipynb: cell 1 \(id c1\): .*never closed"),
        (f"x = 1\n{END}\n", r"bad\.ipynb: cell 1 \(id c1\): line 2: .*without a matching"),
        (
            f"{BEGIN}\n{BEGIN}\n{END}\n",
            r"bad\.ipynb: cell 1 \(id c1\): line 2: .*inside a solution",
        ),
    ],
)
def test_unbalanced_markers_name_notebook_and_cell(src, match):
    nb = _nb(new_markdown_cell("intro"), new_code_cell(src))
    with pytest.raises(ValueError, match=match):
        release_notebook(nb, name="bad.ipynb")


def test_markers_in_a_test_cell_are_an_error():
    nb = _nb(_test_cell(f"{BEGIN}\nassert True\n{END}"))
    with pytest.raises(ValueError, match=r"t\.ipynb: cell 0 .*test cell"):
        release_notebook(nb, name="t.ipynb")


def test_test_cells_are_indexed_like_nbval():
    nb = _nb(new_markdown_cell("m"), new_code_cell("x = 1"), _test_cell("assert x", "named", 3))
    nb.cells.append(_test_cell("assert x"))
    del nb.cells[-1].metadata["rubikkit"]
    assert test_cells(nb) == {
        1: {"name": "named", "points": 3.0},
        2: {"name": "cell 2", "points": 1.0},
    }


# --- release: files --------------------------------------------------------------------------


def test_release_file_and_folder_idempotent(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "a.ipynb", _nb(new_code_cell(SOLVED), _test_cell("assert double(2) == 4")))
    _write(src / "b.ipynb", _nb(new_code_cell("x = 1")))
    out = tmp_path / "out"
    written = release(src, out)
    assert [p.name for p in written] == ["a.ipynb", "b.ipynb"]
    first = {p.name: p.read_bytes() for p in written}
    release(src, out)
    assert {p.name: p.read_bytes() for p in out.glob("*.ipynb")} == first
    # Releasing a released notebook changes nothing.
    again = tmp_path / "again.ipynb"
    release(out / "a.ipynb", again)
    assert again.read_bytes() == first["a.ipynb"]
    # A single notebook into an existing folder keeps its name.
    solo = tmp_path / "solo"
    solo.mkdir()
    assert release(src / "a.ipynb", solo) == [solo / "a.ipynb"]
    assert (solo / "a.ipynb").read_bytes() == first["a.ipynb"]
    assert not list(out.glob(".*.tmp")), "no temporary file left behind"


def test_release_refuses_to_overwrite_sources(tmp_path):
    nb = _write(tmp_path / "a.ipynb", _nb(new_code_cell(SOLVED)))
    before = nb.read_bytes()
    with pytest.raises(ValueError, match="dest: .*source notebook"):
        release(nb, nb)
    with pytest.raises(ValueError, match="dest: .*source notebook"):
        release(nb, tmp_path)  # same folder: the output would be the source itself
    with pytest.raises(ValueError, match="dest: .*source folder"):
        release(tmp_path, tmp_path)
    assert nb.read_bytes() == before


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t: (t / "missing.ipynb", t / "o.ipynb"), "src: .*does not exist"),
        (lambda t: (t / "empty", t / "o"), "src: no notebooks"),
        (lambda t: (t / "a.ipynb", t / "o.txt"), "dest: .*neither a folder"),
        (lambda t: (t / "notes.txt", t / "o.ipynb"), "src: .*not a notebook"),
    ],
)
def test_release_bad_paths(tmp_path, make, match):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    _write(tmp_path / "a.ipynb", _nb(new_code_cell("x = 1")))
    src, dest = make(tmp_path)
    with pytest.raises(ValueError, match=match):
        release(src, dest)


def test_bad_notebook_in_folder_writes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "a_good.ipynb", _nb(new_code_cell(SOLVED)))
    _write(src / "b_bad.ipynb", _nb(new_code_cell(f"{BEGIN}\nx = 1\n")))
    with pytest.raises(ValueError, match=r"b_bad\.ipynb: cell 0"):
        release(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_cli_release_and_errors(tmp_path, capsys):
    nb = _write(tmp_path / "a.ipynb", _nb(new_code_cell(SOLVED)))
    assert main(["assignments", "release", str(nb), str(tmp_path / "s.ipynb")]) == 0
    assert "raise NotImplementedError" in (tmp_path / "s.ipynb").read_text()
    assert main(["assignments", "release", str(nb), str(nb)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["assignments", "check", str(tmp_path / "nope.ipynb")]) == 2


# --- the repository's assignments ------------------------------------------------------------


def test_there_are_at_least_four_assignments_with_tests():
    assert len(SOURCES) >= 4, SOURCES
    for path in SOURCES:
        nb = nbformat.read(path, as_version=4)
        assert len(test_cells(nb)) >= 3, f"{path.name}: fewer than 3 test cells"
        assert any(BEGIN in c.source for c in nb.cells), f"{path.name}: no solution"


def test_book_holds_current_student_versions(tmp_path):
    """book/assignments must be what `rubikkit assignments release` writes today."""
    written = release(REPO / "notebooks" / "assignments", tmp_path)
    for p in written:
        book = BOOK_COPIES / p.name
        assert book.exists(), f"{book} missing: run `make book` or release into book/assignments"
        assert book.read_bytes() == p.read_bytes(), (
            f"{book} is stale: run "
            "`rubikkit assignments release notebooks/assignments book/assignments`"
        )
        text = p.read_text()
        assert BEGIN not in text and END not in text


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_source_passes_and_release_fails_exactly_the_tests(source, tmp_path):
    ok = check(source)
    assert ok.ok, ok.format() + "\n" + ok.log[-3000:]
    assert ok.score == ok.total > 0
    student = release(source, tmp_path / source.name)[0]
    report = check(student)
    assert not report.ok and report.score == 0
    expected = set(test_cells(nbformat.read(student, as_version=4)))
    assert report.failed_cells() == expected, report.format()
    assert all("NotImplementedError" in r.message for r in report.tests), report.format()


def test_check_reports_failures_by_name_and_cli_exit_code(tmp_path, capsys):
    nb = _nb(
        new_code_cell("x = 1"),
        _test_cell("assert x == 1", name="passes", points=2),
        _test_cell("assert x == 2, 'x is not two'", name="fails", points=3),
        new_code_cell("1 / 0"),
    )
    path = _write(tmp_path / "n.ipynb", nb)
    report = check(path)
    by_name = {r.name: r for r in report.results}
    assert by_name["passes"].passed and not by_name["fails"].passed
    assert by_name["fails"].message == "AssertionError: x is not two"
    assert not by_name["cell 3"].passed and "ZeroDivisionError" in by_name["cell 3"].message
    assert (report.score, report.total) == (2, 5)
    text = report.format()
    assert "[PASS] passes" in text and "[FAIL] fails" in text and "[ERROR] cell 3" in text
    assert "score: 2/5" in text
    assert main(["assignments", "check", str(path)]) == 1
    assert "score: 2/5" in capsys.readouterr().out


def test_check_exit_code_zero_when_all_pass(tmp_path, capsys):
    path = _write(tmp_path / "ok.ipynb", _nb(new_code_cell("x = 1"), _test_cell("assert x")))
    assert main(["assignments", "check", str(path)]) == 0
    assert "score: 1/1" in capsys.readouterr().out


def test_checked_notebooks_temporary_files_go_with_the_check(tmp_path):
    probe = tmp_path / "probe.txt"
    src = f"import tempfile\nopen({str(probe)!r}, 'w').write(tempfile.mkdtemp(prefix='runs-'))"
    path = _write(tmp_path / "tmp.ipynb", _nb(new_code_cell(src), _test_cell("assert True")))
    assert check(path).ok
    left = Path(probe.read_text())
    assert left.parent.name == "kernel-tmp" and not left.exists()


def test_module_exports():
    assert set(assignments.__all__) <= set(dir(assignments))


# --- review fixes: malformed input, unreadable notebooks, graded tests, timeouts ---------------


@pytest.mark.parametrize(
    "line",
    [f"#{BEGIN}", f"{BEGIN} (task 1)", f"x = 1  {BEGIN}", f"{END}: done"],
)
def test_a_marker_with_other_text_is_an_error_not_a_leak(line):
    # Such a line was not recognised as a marker, so the solution went out to the students.
    src = f"def f():\n    {line}\n    return 42\n    {line.replace(BEGIN, END)}\n"
    with pytest.raises(ValueError, match=r"m\.ipynb: cell 0 .*line 2: .*alone on its line"):
        release_notebook(_nb(new_code_cell(src)), name="m.ipynb")


def test_markdown_may_quote_a_marker_and_raw_cells_are_stripped():
    prose = new_markdown_cell(f"Write it between `{BEGIN}` and `{END}`.")
    raw = nbformat.v4.new_raw_cell(f"{BEGIN}\nsecret\n{END}")
    out = release_notebook(_nb(prose, raw))
    assert out.cells[0].source == prose.source
    assert "secret" not in out.cells[1].source


@pytest.mark.parametrize(
    "text, why",
    [
        ("not json", "JSON"),
        ('{"a": 1}', "missing a key"),
        ("[1]", "list"),
        (
            '{"cells": [{"cell_type": "code", "source": 5, "metadata": {}, "outputs": [], '
            '"execution_count": null, "id": "a"}], "nbformat": 4, "nbformat_minor": 5, '
            '"metadata": {}}',
            "not valid",
        ),
    ],
)
def test_a_file_that_is_not_a_notebook_is_named(tmp_path, capsys, text, why):
    bad = tmp_path / "src" / "b_bad.ipynb"
    bad.parent.mkdir()
    bad.write_text(text)
    _write(tmp_path / "src" / "a_good.ipynb", _nb(new_code_cell(SOLVED)))
    with pytest.raises(ValueError, match=rf"src: .*b_bad\.ipynb is not a valid notebook \(.*{why}"):
        release(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["assignments", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "notebook: " in err and "b_bad.ipynb" in err and "Traceback" not in err
    # a mistyped path is said to be missing, not to be something other than a notebook
    assert main(["assignments", "check", str(tmp_path / "b_bda.ipynb")]) == 2
    assert "b_bda.ipynb does not exist" in capsys.readouterr().err


def test_release_into_an_unwritable_place_names_dest(tmp_path, capsys):
    nb = _write(tmp_path / "a.ipynb", _nb(new_code_cell(SOLVED)))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"dest: cannot write .*afile"):
        release(nb, tmp_path / "afile" / "a.ipynb")
    assert main(["assignments", "release", str(tmp_path), str(tmp_path / "afile" / "sub")]) == 2
    assert "dest: cannot write" in capsys.readouterr().err


def test_released_files_are_readable_like_any_new_file(tmp_path):
    nb = _write(tmp_path / "a.ipynb", _nb(new_code_cell(SOLVED)))
    old = os.umask(0o022)
    try:
        out = release(nb, tmp_path / "out.ipynb")[0]
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # mkstemp alone gave 0600


def test_check_grades_the_tests_of_the_handout(tmp_path):
    source = _nb(
        new_code_cell("x = 1"),
        _test_cell("assert x == 1", name="kept"),
        _test_cell("assert x == 2", name="deleted"),
        _test_cell("assert x == 3", name="edited"),
        _test_cell("assert x == 4", name="skipped"),
        _test_cell("assert x == 1", name="pasted_back", points=2),
    )
    student = release(_write(tmp_path / "s.ipynb", source), tmp_path / "h.ipynb")[0]
    nb = nbformat.read(student, as_version=4)
    del nb.cells[2]  # "deleted"
    nb.cells[2].source = "assert True"  # "edited"
    nb.cells[2].metadata["rubikkit"]["points"] = 100
    nb.cells[3].metadata["tags"].append("nbval-skip")  # "skipped"
    nb.cells[4].id = "pasted"  # deleted, then pasted back from the handout: a new id
    nb.cells.append(_test_cell("assert True", name="extra", points=50))  # not a test of the handout
    nbformat.write(nb, student)
    report = check(student)
    got = {r.name: (r.passed, r.message) for r in report.tests}
    assert got["kept"] == (True, "") and got["pasted_back"] == (True, "")
    assert "deleted" in got["deleted"][1] and not got["deleted"][0]
    assert "changed" in got["edited"][1] and not got["edited"][0]
    assert "skipped" in got["skipped"][1] and not got["skipped"][0]
    assert "extra" not in got
    assert (report.score, report.total) == (3, 6) and not report.ok
    assert "[FAIL] deleted (deleted) 0/1" in report.format()


def test_a_run_out_of_time_reports_the_stuck_cell_and_the_total(tmp_path, monkeypatch):
    path = _write(
        tmp_path / "loop.ipynb",
        _nb(
            new_code_cell("x = 1"),
            _test_cell("assert x", name="first"),
            _test_cell("while True: pass", name="stuck", points=2),
            _test_cell("assert x", name="never"),
        ),
    )

    def run(cmd, timeout, **kw):  # pytest -v had finished two cells when the time ran out
        done = b"loop::ipynb::Cell 0 PASSED [ 25%]\nloop::ipynb::Cell 1 PASSED [ 50%]\n"
        raise assignments.subprocess.TimeoutExpired(cmd, timeout, output=done + b"loop::ipynb")

    monkeypatch.setattr(assignments.subprocess, "run", run)
    report = check(path, timeout=30)
    got = {r.name: (r.passed, r.message) for r in report.tests}
    assert got["first"] == (True, "")
    assert not got["stuck"][0] and "did not finish in the 30 s allowed" in got["stuck"][1]
    assert not got["never"][0] and "not run" in got["never"][1]
    assert (report.score, report.total) == (1, 4) and "score: 1/4" in report.format()
    with pytest.raises(ValueError, match="timeout: expected a positive"):
        check(path, timeout=0)
