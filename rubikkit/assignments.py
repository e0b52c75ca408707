"""Course assignments: release student versions of source notebooks and check them with nbval.

A *source* notebook holds the instructor's solution between marker lines::

    def rotation_targets(rots):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

and *test cells*: code cells tagged ``test`` (cell metadata ``"tags": ["test"]``), optionally named
and weighted by ``"rubikkit": {"name": "...", "points": 2}`` in the cell metadata.

``rubikkit assignments release SRC DEST`` writes the student version: every solution block is
replaced by ``raise NotImplementedError`` (indented like the ``BEGIN`` marker), markdown solution
blocks by a prompt, outputs and execution counts are cleared, test cells are kept unchanged and
recorded (name, points, a checksum of the source) in the notebook metadata.
``rubikkit assignments check NOTEBOOK`` runs the notebook under nbval (``pytest --nbval-lax``) in a
subprocess and prints one line per test cell and a score; its exit code is 0 only when every cell
runs without error. A released notebook is graded on the tests recorded at release: a test cell
that was deleted, edited or skipped fails.

Write solutions inside function bodies and call the functions only from test cells: then a released
notebook fails exactly its test cells.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
TEST_TAG = "test"
CODE_STUB = "raise NotImplementedError"
MARKDOWN_STUB = "_Write your answer here._"

__all__ = [
    "BEGIN",
    "END",
    "TEST_TAG",
    "CheckReport",
    "TestResult",
    "check",
    "release",
    "release_notebook",
    "test_cells",
]


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _strip_solutions(text: str, stub: str | None, where: str) -> str:
    """Replace every BEGIN/END block of ``text`` by ``stub`` indented like its BEGIN line.

    ``stub=None`` (markdown) replaces the block by :data:`MARKDOWN_STUB` without indentation.
    """
    out: list[str] = []
    inside = False
    begin_line = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        marker = line.strip()
        if (
            marker not in (BEGIN, END)
            and (BEGIN in line or END in line)
            and (stub is not None or marker.startswith("#"))  # prose may quote a marker
        ):
            # A marker with extra text would not be recognised and its solution would be released.
            raise ValueError(
                f"{where}: line {lineno}: a solution marker must be alone on its line, got {marker!r}"
            )
        if marker == BEGIN:
            if inside:
                raise ValueError(
                    f"{where}: line {lineno}: {BEGIN!r} inside a solution block opened on "
                    f"line {begin_line} (missing {END!r})"
                )
            inside, begin_line = True, lineno
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + stub if stub is not None else MARKDOWN_STUB)
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}: line {lineno}: {END!r} without a matching {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} on line {begin_line} is never closed by {END!r}")
    return "\n".join(out)


def _cell_where(name: str, index: int, cell) -> str:
    cid = cell.get("id")
    return f"{name}: cell {index}" + (f" (id {cid})" if cid else "")


def is_test_cell(cell) -> bool:
    """True for a code cell tagged :data:`TEST_TAG`."""
    return cell.get("cell_type") == "code" and TEST_TAG in (
        cell.get("metadata", {}).get("tags") or []
    )


def release_notebook(nb, name: str = "notebook"):
    """Return the student version of notebook ``nb`` (an ``nbformat.NotebookNode``; not modified).

    Parameters
    ----------
    nb : nbformat.NotebookNode
        The source notebook (nbformat 4).
    name : str
        How error messages call the notebook (its file name).

    Raises
    ------
    ValueError
        When solution markers are unbalanced or nested, naming ``name``, the cell and the line; or
        when a test cell contains solution markers.
    """
    out = copy.deepcopy(nb)
    for i, cell in enumerate(out.cells):
        where = _cell_where(name, i, cell)
        src = _source(cell)
        has_marker = BEGIN in src or END in src
        if is_test_cell(cell) and has_marker:
            raise ValueError(f"{where}: a test cell must not contain solution markers")
        if cell.cell_type == "code":
            if has_marker:
                cell.source = _strip_solutions(src, CODE_STUB, where)
            cell.outputs = []
            cell.execution_count = None
        elif has_marker:  # markdown or raw
            cell.source = _strip_solutions(src, None, where)
        cell.get("metadata", {}).pop("execution", None)
    out.metadata.pop("widgets", None)
    # Record the test cells, so that `check` grades the handout's tests even when a student
    # deletes or edits one.
    code = [c for c in out.cells if c.cell_type == "code"]
    tests = [
        {"id": code[i].get("id"), **info, "sha256": _digest(code[i])}
        for i, info in test_cells(out).items()
    ]
    if tests:
        out.metadata["rubikkit"] = {"tests": tests}
    return out


def _digest(cell) -> str:
    return hashlib.sha256(_source(cell).encode("utf-8")).hexdigest()


def _notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def _read(path: Path, argument: str):
    """Read a notebook, turning a file that is not one into a ValueError naming it."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        return nb
    except OSError as exc:
        raise ValueError(f"{argument}: cannot read {path} ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError, nbformat.ValidationError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{argument}: {path} is not a valid notebook ({why})") from None


def _write_atomic(path: Path, text: str) -> None:
    from rubikkit.data.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def release(src: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Write the student version of a source notebook, or of every notebook in a folder.

    Parameters
    ----------
    src : path
        A source notebook, or a folder of them (``*.ipynb``, not recursive).
    dest : path
        For a notebook ``src``: the output notebook, or an existing folder to write it into. For a
        folder ``src``: the output folder (created when missing).

    Returns
    -------
    list of Path
        The notebooks written. Releasing twice gives identical files.

    Raises
    ------
    ValueError
        When ``dest`` would overwrite ``src``, ``src`` is missing or holds no notebook, or a
        notebook's solution markers are unbalanced (every notebook is checked before any is written).
    """
    import nbformat

    src, dest = Path(src), Path(dest)
    if not src.exists():
        raise ValueError(f"src: {src} does not exist")
    if src.is_dir():
        if dest.exists() and not dest.is_dir():
            raise ValueError(f"dest: {dest} must be a folder when src is a folder")
        if dest.resolve() == src.resolve():
            raise ValueError(
                f"dest: {dest} is the source folder; refusing to overwrite the sources"
            )
        pairs = [(p, dest / p.name) for p in _notebooks_in(src)]
        if not pairs:
            raise ValueError(f"src: no notebooks (*.ipynb) in {src}")
    else:
        if src.suffix != ".ipynb":
            raise ValueError(f"src: {src} is not a notebook (.ipynb)")
        target = dest / src.name if dest.is_dir() else dest
        if target.suffix != ".ipynb":
            raise ValueError(f"dest: {dest} is neither a folder nor a .ipynb path")
        pairs = [(src, target)]
    for s, d in pairs:
        if d.exists() and d.resolve() == s.resolve():
            raise ValueError(f"dest: {d} is the source notebook; refusing to overwrite it")
    # Check every notebook before writing any, so a bad marker never leaves half a release.
    released = []
    for s, d in pairs:
        nb = _read(s, "src")
        released.append((d, release_notebook(nb, name=s.name)))
    for d, nb in released:
        try:
            _write_atomic(d, nbformat.writes(nb) + "\n")
        except OSError as exc:
            raise ValueError(f"dest: cannot write {d} ({exc.strerror or exc})") from None
    return [d for d, _ in released]


def test_cells(nb) -> dict[int, dict]:
    """The test cells of ``nb`` keyed by their index among code cells (nbval's ``Cell N``).

    Each value has ``name`` (metadata ``rubikkit.name``, else ``"cell N"``) and ``points``
    (metadata ``rubikkit.points``, default 1).
    """
    out = {}
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if is_test_cell(cell):
            meta = cell.metadata.get("rubikkit", {})
            out[code_index] = {
                "name": str(meta.get("name", f"cell {code_index}")),
                "points": float(meta.get("points", 1)),
            }
        code_index += 1
    return out


test_cells.__test__ = False  # a helper, not a pytest test


def _graded_tests(nb, where: str) -> tuple[dict[int, dict], list[dict]]:
    """The tests to grade: {code index: name, points, problem} and the recorded tests not found.

    Without a record (a source notebook) these are the cells tagged ``test``. With one (a released
    notebook) they are the recorded cells, found by id or else by their source; ``problem`` says
    when a cell's source differs from the record.
    """
    recorded = nb.metadata.get("rubikkit", {}).get("tests")
    if not recorded:
        return {i: {**t, "problem": ""} for i, t in test_cells(nb).items()}, []
    code = [c for c in nb.cells if c.cell_type == "code"]
    digests = [_digest(c) for c in code]
    ids = {c.get("id"): i for i, c in enumerate(code) if c.get("id")}
    out: dict[int, dict] = {}
    missing = []
    try:
        for t in recorded:
            info = {"name": str(t["name"]), "points": float(t["points"])}
            i = ids.get(t.get("id"))
            if i is None or i in out:  # pasted back from the handout: a new id, the same source
                i = next(
                    (j for j, d in enumerate(digests) if d == t["sha256"] and j not in out), None
                )
            if i is None:
                missing.append(info)
                continue
            changed = digests[i] != t["sha256"]
            out[i] = {**info, "problem": "this test cell was changed" if changed else ""}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{where}: metadata rubikkit.tests is malformed ({exc!r})") from None
    return out, missing


@dataclass
class TestResult:
    """The outcome of one code cell under nbval."""

    __test__ = False

    cell: int  # index among code cells (nbval's "Cell N")
    name: str
    points: float
    passed: bool
    is_test: bool
    message: str = ""


@dataclass
class CheckReport:
    """Per-cell results of :func:`check` and the score over test cells."""

    notebook: str
    results: list[TestResult] = field(default_factory=list)
    returncode: int = 0
    log: str = ""

    @property
    def tests(self) -> list[TestResult]:
        return [r for r in self.results if r.is_test]

    @property
    def score(self) -> float:
        return sum(r.points for r in self.tests if r.passed)

    @property
    def total(self) -> float:
        return sum(r.points for r in self.tests)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def failed_cells(self) -> set[int]:
        return {r.cell for r in self.results if not r.passed}

    def format(self) -> str:
        lines = [f"rubikkit assignments check: {self.notebook}"]
        for r in self.tests:
            status = "PASS" if r.passed else "FAIL"
            pts = f"{r.points:g}/{r.points:g}" if r.passed else f"0/{r.points:g}"
            where = f"cell {r.cell}" if r.cell >= 0 else "deleted"
            lines.append(f"  [{status}] {r.name} ({where}) {pts}")
            if not r.passed and r.message:
                lines.append(f"         {r.message}")
        others = [r for r in self.results if not r.is_test and not r.passed]
        for r in others:
            lines.append(f"  [ERROR] cell {r.cell} (not a test cell): {r.message}")
        if not self.results:
            lines.append("  no result: the notebook did not run (see the log above)")
        lines.append(f"score: {self.score:g}/{self.total:g}")
        return "\n".join(lines)


_VERBOSE_CELL = re.compile(r"::Cell (\d+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*[A-Za-z]")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))\b:?(.*)$")


def _last_error_line(text: str) -> str:
    """The exception line at the end of an nbval traceback (colours removed), e.g.
    ``NotImplementedError`` or ``AssertionError: rows must be permutations``."""
    lines = [_ANSI.sub("", ln).strip() for ln in (text or "").splitlines()]
    for ln in reversed(lines):
        m = _EXC_LINE.match(ln)
        if m:
            return (m.group(1) + (": " + m.group(2).strip() if m.group(2).strip() else ""))[:200]
    rest = [ln for ln in lines if ln]
    return rest[-1][:200] if rest else ""


def check(notebook: str | os.PathLike, timeout: float = 600.0) -> CheckReport:
    """Run ``notebook`` under nbval (``pytest --nbval-lax``) in a subprocess and collect per-cell results.

    Parameters
    ----------
    notebook : path
        The notebook to check (a source or a student version).
    timeout : float
        Seconds allowed for the whole run. When they run out, the cell still running fails and
        the cells after it count as not run.

    Returns
    -------
    CheckReport
        One :class:`TestResult` per code cell (and one per recorded test cell that is missing);
        ``report.ok`` is True when every cell passed.
    """
    path = Path(notebook)
    if not path.exists():
        raise ValueError(f"notebook: {path} does not exist")
    if not path.is_file() or path.suffix != ".ipynb":
        raise ValueError(f"notebook: {path} is not a notebook file (.ipynb)")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    nb = _read(path, "notebook")
    tests, missing = _graded_tests(nb, f"notebook: {path}")
    n_code = sum(1 for c in nb.cells if c.cell_type == "code")
    # nbval kills the kernel, so the notebook's own temporary files are kept apart (TMPDIR) and go
    # with this folder.
    with tempfile.TemporaryDirectory(prefix="rubikkit-check-", ignore_cleanup_errors=True) as tmp:
        xml_path = Path(tmp) / "report.xml"
        kernel_tmp = Path(tmp) / "kernel-tmp"
        kernel_tmp.mkdir()
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-v",  # one line per finished cell: what a timed-out run has done so far
            "--nbval-lax",
            "--nbval-current-env",
            f"--nbval-cell-timeout={int(timeout)}",
            f"--junitxml={xml_path}",
            "--rootdir",
            str(path.parent.resolve()),
            # The notebook's own folder may sit inside a project with its own pytest settings.
            "-c",
            os.devnull,
            str(path.resolve()),
        ]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=path.parent.resolve(),
                env={**os.environ, "TMPDIR": str(kernel_tmp)},
            )
            returncode, log = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            returncode = 124
            partial = exc.stdout or b""
            if isinstance(partial, bytes):  # TimeoutExpired keeps bytes even with text=True
                partial = partial.decode("utf-8", "replace")
            log = f"timed out after {timeout:g} s\n{partial}"
        outcomes: dict[int, tuple[bool, str]] = {}
        if returncode == 124:
            for m in _VERBOSE_CELL.finditer(log):
                ok = m.group(2) in ("PASSED", "XPASS")
                outcomes[int(m.group(1))] = (
                    ok,
                    "skipped" if m.group(2) == "SKIPPED" else "" if ok else "failed",
                )
            stuck = next((i for i in range(n_code) if i not in outcomes), None)
            for idx in range(n_code):
                if idx not in outcomes:
                    outcomes[idx] = (
                        False,
                        f"did not finish in the {timeout:g} s allowed (an endless loop? a crashed kernel?)"
                        if idx == stuck
                        else "not run: the check ran out of time before this cell",
                    )
        elif xml_path.exists():
            for case in ET.parse(xml_path).getroot().iter("testcase"):
                name = case.get("name", "")
                if not name.startswith("Cell "):
                    continue
                idx = int(name.split()[1])
                bad = case.find("failure")
                if bad is None:
                    bad = case.find("error")
                skipped = case.find("skipped") is not None
                if bad is not None:
                    msg = _last_error_line((bad.get("message") or "") + "\n" + (bad.text or ""))
                    outcomes[idx] = (False, msg)
                else:
                    outcomes[idx] = (True, "skipped" if skipped else "")
    report = CheckReport(notebook=path.name, returncode=returncode, log=log)
    if outcomes:
        for idx in range(n_code):
            passed, msg = outcomes.get(idx, (False, "not run"))
            info = tests.get(idx)
            if info and info["problem"]:
                passed, msg = False, f"{info['problem']}: restore it from the handout"
            elif info and msg == "skipped":
                passed, msg = False, "skipped: a test cell must run"
            report.results.append(
                TestResult(
                    cell=idx,
                    name=info["name"] if info else f"cell {idx}",
                    points=info["points"] if info else 0.0,
                    passed=passed,
                    is_test=info is not None,
                    message=msg,
                )
            )
        for info in missing:
            report.results.append(
                TestResult(
                    cell=-1,
                    name=info["name"],
                    points=info["points"],
                    passed=False,
                    is_test=True,
                    message="this test cell was deleted: restore it from the handout",
                )
            )
    return report


# --- command line ----------------------------------------------------------------------------


def _cmd_release(args: argparse.Namespace) -> int:
    try:
        written = release(args.src, args.dest)
    except ValueError as exc:
        print(f"rubikkit assignments release: error: {exc}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        report = check(args.notebook, timeout=args.timeout)
    except ValueError as exc:
        print(f"rubikkit assignments check: error: {exc}", file=sys.stderr)
        return 2
    if not report.results or args.verbose:
        print(report.log)
    print(report.format())
    return 0 if report.ok else 1


def register(subparsers) -> None:
    """Add ``rubikkit assignments release|check`` to the CLI."""
    p = subparsers.add_parser(
        "assignments",
        help="release student versions of assignment notebooks; check a notebook with nbval",
        description=__doc__.split("\n\n")[0],
    )
    sub = p.add_subparsers(dest="assignments_command", metavar="ACTION")
    rel = sub.add_parser(
        "release",
        help="write student versions (solutions replaced by raise NotImplementedError)",
    )
    rel.add_argument("src", help="source notebook or folder of notebooks")
    rel.add_argument("dest", help="output notebook or folder (never the source)")
    rel.set_defaults(func=_cmd_release)
    chk = sub.add_parser("check", help="run a notebook under nbval; per-test report and score")
    chk.add_argument("notebook", help="the notebook to check")
    chk.add_argument(
        "--timeout", type=float, default=600.0, help="seconds for the whole run (default 600)"
    )
    chk.add_argument("-v", "--verbose", action="store_true", help="also print pytest's output")
    chk.set_defaults(func=_cmd_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
