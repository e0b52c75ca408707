"""Shared start-up of the data scripts: make ``rubikkit`` importable from a plain clone."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import rubikkit  # noqa: F401
except ImportError:  # a clone without `pip install -e .`
    sys.path.insert(0, str(REPO))
