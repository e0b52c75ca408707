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
blocks by a prompt, outputs and execution counts are cleared, test cells are kept unchanged.
``rubikkit assignments check NOTEBOOK`` runs the notebook under nbval (``pytest --nbval-lax``) in a
subprocess and prints one line per test cell and a score; its exit code is 0 only when every cell
runs without error.

Write solutions inside function bodies and call the functions only from test cells: then a released
notebook fails exactly its test cells.
"""

from __future__ import annotations

import argparse
import copy
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
        elif cell.cell_type == "markdown" and has_marker:
            cell.source = _strip_solutions(src, None, where)
        cell.get("metadata", {}).pop("execution", None)
    out.metadata.pop("widgets", None)
    return out


def _notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        nb = nbformat.read(s, as_version=4)
        released.append((d, release_notebook(nb, name=s.name)))
    for d, nb in released:
        _write_atomic(d, nbformat.writes(nb) + "\n")
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
            lines.append(f"  [{status}] {r.name} (cell {r.cell}) {pts}")
            if not r.passed and r.message:
                lines.append(f"         {r.message}")
        others = [r for r in self.results if not r.is_test and not r.passed]
        for r in others:
            lines.append(f"  [ERROR] cell {r.cell} (not a test cell): {r.message}")
        if not self.results:
            lines.append("  no result: the notebook did not run (see the log above)")
        lines.append(f"score: {self.score:g}/{self.total:g}")
        return "\n".join(lines)


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
        Seconds allowed for the whole run, and for each cell.

    Returns
    -------
    CheckReport
        One :class:`TestResult` per code cell; ``report.ok`` is True when every cell passed.
    """
    import nbformat

    path = Path(notebook)
    if not path.is_file() or path.suffix != ".ipynb":
        raise ValueError(f"notebook: {path} is not a notebook file (.ipynb)")
    nb = nbformat.read(path, as_version=4)
    tests = test_cells(nb)
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
            "-q",
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
            log = f"timed out after {timeout:g} s\n{exc.stdout or ''}"
        outcomes: dict[int, tuple[bool, str]] = {}
        if xml_path.exists():
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
    chk.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    chk.add_argument("-v", "--verbose", action="store_true", help="also print pytest's output")
    chk.set_defaults(func=_cmd_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
