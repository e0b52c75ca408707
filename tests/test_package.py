"""The package installs, reports its state and exposes the CLI."""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import rubikkit
from rubikkit._info import info_dict


def test_info_reports_extension_and_versions():
    d = info_dict()
    assert d["rubikkit"] == rubikkit.__version__
    assert d["torch"][0].isdigit()
    assert "cpp_extension" in d and "cuda_available" in d


def test_info_cli_runs_as_module():
    out = subprocess.run(
        [sys.executable, "-m", "rubikkit", "info"], capture_output=True, text=True, check=True
    ).stdout
    assert "cpp_extension" in out and "torch" in out


def test_cli_without_command_prints_help_and_fails():
    from rubikkit.cli import main

    assert main([]) == 2


def test_cli_stops_quietly_when_its_reader_goes_away():
    # `rubikkit ... | head` closes the pipe early; the command must end without a traceback.
    # The read end is closed before the child starts, so its first write fails every time.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "rubikkit", "info"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


# --- installing outside the Makefile -------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _build_ext(tmp_path, **env):
    """Run the checkout's ``setup.py build_ext`` in a child, its outputs under ``tmp_path``."""
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-temp", str(tmp_path / "temp"),
         "--build-lib", str(tmp_path / "lib")],
        cwd=REPO,
        env={**os.environ, "RUBIKKIT_NO_EXT": "", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_compiler_failure_names_the_switch_to_install_without_the_extension(tmp_path):
    pytest.importorskip("pybind11")
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` program to stand for a broken compiler")
    proc = _build_ext(tmp_path, CC=false, CXX=false, RUBIKKIT_CUDA="0")
    assert proc.returncode != 0
    assert "rubikkit: building rubikkit._C failed" in proc.stderr
    assert "RUBIKKIT_NO_EXT=1" in proc.stderr and "Traceback" not in proc.stderr


def test_nvcc_failure_names_the_switch_to_skip_the_cuda_kernels(tmp_path):
    pytest.importorskip("pybind11")
    nvcc = tmp_path / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\necho 'nvcc fatal : broken on purpose' >&2\nexit 1\n")
    nvcc.chmod(0o755)
    proc = _build_ext(tmp_path, CUDA_HOME=str(tmp_path / "cuda"), RUBIKKIT_CUDA="1")
    assert proc.returncode != 0
    assert "nvcc could not compile the CUDA kernels" in proc.stderr
    assert "RUBIKKIT_CUDA=0" in proc.stderr and "Traceback" not in proc.stderr


def _fake_cuda(root: Path) -> Path:
    """A CUDA_HOME whose nvcc writes an empty object and logs its arguments (one line per call)."""
    (root / "bin").mkdir(parents=True)
    (root / "lib64").mkdir()
    (root / "lib64" / "libcudart_static.a").touch()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(
        f'#!/bin/sh\necho "$*" >> {root / "calls.log"}\n'
        'while [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done\n'
    )
    nvcc.chmod(0o755)
    return root / "calls.log"


def test_cuda_objects_are_rebuilt_for_other_architectures(tmp_path):
    # The second build asks for sm_80 only: linking the first build's sm_90 object would leave a
    # module with no kernel for an sm_80 GPU. (The C++ step then fails on purpose: CC=false.)
    pytest.importorskip("pybind11")
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` program to stand for a broken compiler")
    calls = _fake_cuda(tmp_path / "cuda")
    env = {"CUDA_HOME": str(tmp_path / "cuda"), "RUBIKKIT_CUDA": "1", "CC": false, "CXX": false}
    for arch in ("90", "90", "80"):
        _build_ext(tmp_path, RUBIKKIT_CUDA_ARCH=arch, **env)
    runs = calls.read_text().splitlines()
    assert len(runs) == 2, runs  # the same architectures again reuse the object
    assert "code=sm_90" in runs[0] and "code=sm_80" in runs[1] and "sm_90" not in runs[1]


@pytest.mark.parametrize("arch", ["", "sm_90", "80;ninety"])
def test_bad_cuda_arch_is_named(tmp_path, arch):
    pytest.importorskip("pybind11")
    calls = _fake_cuda(tmp_path / "cuda")
    env = {"CUDA_HOME": str(tmp_path / "cuda"), "RUBIKKIT_CUDA": "1"}
    proc = _build_ext(tmp_path, RUBIKKIT_CUDA_ARCH=arch, **env)
    assert proc.returncode != 0 and not calls.exists()
    assert f"RUBIKKIT_CUDA_ARCH={arch!r}: expected compute capabilities" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_pybind11_says_what_to_install():
    # `pip install --no-build-isolation` in an environment without pybind11 (the README's GPU line).
    code = (
        "import runpy, sys; sys.modules['pybind11'] = None; sys.argv = ['setup.py', '--name']; "
        f"runpy.run_path({str(REPO / 'setup.py')!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "RUBIKKIT_NO_EXT": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert '"pybind11>=2.12"' in proc.stderr and "RUBIKKIT_NO_EXT=1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sdist_carries_the_sources_whatever_the_environment(tmp_path):
    # An sdist written with RUBIKKIT_NO_EXT=1 (setup.py then lists no extension) must still build
    # the extension where it is installed; the test suite, which needs the whole checkout, stays out.
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, tree / name)
    skip = shutil.ignore_patterns("*.so", "*.o", "__pycache__", "*.pyc")
    for name in ("csrc", "rubikkit", "tests"):
        shutil.copytree(REPO / name, tree / name, ignore=skip)
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
        cwd=tree,
        env={**os.environ, "RUBIKKIT_NO_EXT": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (sdist,) = (tmp_path / "dist").glob("rubikkit-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {str(p.relative_to(tree)) for p in (tree / "csrc").rglob("*") if p.is_file()}
    assert wanted and wanted <= names, sorted(wanted - names)
    assert not [n for n in names if n.startswith("tests/")]


def test_missing_extension_says_why(tmp_path):
    from rubikkit._ext import missing_reason

    exc = ModuleNotFoundError("No module named 'rubikkit._C'", name="rubikkit._C")
    assert missing_reason(exc, tmp_path).startswith("not built: no compiled _C module")
    (tmp_path / "_C.cpython-39-x86_64-linux-gnu.so").touch()
    reason = missing_reason(exc, tmp_path)
    assert reason.startswith("not built for Python 3.") and "_C.cpython-39" in reason
    # A module that is there but does not load keeps the loader's own words.
    broken = ImportError("undefined symbol: omp_get_max_threads")
    assert missing_reason(broken, tmp_path) == "ImportError: undefined symbol: omp_get_max_threads"


def test_fallback_warning_tells_an_installed_copy_how_to_get_the_kernels(monkeypatch):
    from rubikkit import RubikkitWarning, _ext

    monkeypatch.setattr(_ext, "_warned", set())
    monkeypatch.setattr(_ext, "load", lambda: (None, "not built: reason"))
    with pytest.warns(RubikkitWarning, match="not built: reason") as record:
        _ext.warn_fallback("puzzle", "the numpy reference")
        _ext.warn_fallback("puzzle", "the numpy reference")
    assert len(record) == 1
    message = str(record[0].message)
    # `pip install -e .` from wherever the user stands would install some other project.
    assert "pip install -e ." not in message and "Installation details" in message
