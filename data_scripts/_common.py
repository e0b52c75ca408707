"""Shared start-up of the data scripts: make ``rubikkit`` importable from a plain clone."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import rubikkit  # noqa: F401
except ImportError:  # a clone without `pip install -e .`
    sys.path.insert(0, str(REPO))


def extract_source(archive: Path, staging: Path) -> None:
    """Unpack a ``--source`` archive into ``staging``; a damaged one is removed again, with one line.

    A truncated or corrupt archive (an interrupted browser download) fails inside tarfile, gzip or
    zipfile only once its members are read; nothing half-extracted is left for a later run.
    """
    import lzma
    import shutil
    import tarfile
    import zipfile
    import zlib

    from rubikkit.data.download import extract_archive

    try:
        extract_archive(archive, staging)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(
            exc, (tarfile.TarError, EOFError, zlib.error, zipfile.BadZipFile, lzma.LZMAError)
        ):
            raise ValueError(
                f"--source: {archive} is a damaged or truncated archive ({exc}); download it again"
            ) from None
        raise
