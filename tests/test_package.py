"""The package installs, reports its state and exposes the CLI."""

import os
import subprocess
import sys

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
