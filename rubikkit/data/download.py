"""Resumable, verified downloads and safe archive extraction (shared by ``data_scripts/``).

* :func:`download` fetches a URL into a file: resumes a partial ``<file>.part`` with an HTTP
  ``Range`` request, verifies an MD5 or SHA-256 checksum, and only then renames the part file onto the
  final name. A file already present with the right checksum is not fetched again (idempotent).
* :func:`extract_archive` unpacks ``.zip`` / ``.tar`` / ``.tar.gz`` / ``.tgz`` / ``.tar.bz2`` /
  ``.tar.xz`` and refuses any member that would land outside the target folder (absolute paths, ``..``,
  links pointing out), before writing anything.
* Offline, the error says so and what to do (:class:`OfflineError`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "ChecksumError",
    "OfflineError",
    "UnsafeArchiveError",
    "copy_file",
    "download",
    "extract_archive",
    "file_digest",
    "read_manifest",
    "run_script",
    "verify_file",
]

USER_AGENT = "rubikkit-data-scripts"


class ChecksumError(ValueError):
    """A downloaded or existing file does not have the expected checksum."""


class OfflineError(ConnectionError):
    """The server could not be reached (no network, DNS failure, refused)."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


def file_digest(path: str | os.PathLike, algorithm: str = "md5", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file (``algorithm`` any :mod:`hashlib` name, e.g. ``"md5"``, ``"sha256"``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _expected(md5: str | None, sha256: str | None) -> tuple[str, str] | None:
    if md5 and sha256:
        raise ValueError("md5, sha256: give one checksum, not both")
    if md5:
        return "md5", md5.lower()
    if sha256:
        return "sha256", sha256.lower()
    return None


def verify_file(path, *, md5: str | None = None, sha256: str | None = None) -> bool:
    """True when ``path`` exists and matches the checksum (or exists, when none is given)."""
    path = Path(path)
    if not path.is_file():
        return False
    exp = _expected(md5, sha256)
    return exp is None or file_digest(path, exp[0]) == exp[1]


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    resume: bool = True,
    progress: bool = True,
    opener: Callable | None = None,
    chunk_size: int = 1 << 16,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming and verifying.

    Parameters
    ----------
    url : str
        Source (``http(s)://`` or ``file://``).
    dest : str or Path
        Final file. While downloading, bytes go to ``dest + ".part"``.
    md5, sha256 : str, optional
        Expected checksum (hex). Without one the file is accepted as downloaded.
    resume : bool
        Continue a ``.part`` file with ``Range: bytes=N-``; a server that answers 200 instead of 206
        sends the whole file and the part file restarts.
    progress : bool
        Show a tqdm progress bar.
    opener : callable, optional
        ``opener(request, timeout=...) -> response`` (default :func:`urllib.request.urlopen`); tests
        pass a fake one.

    Returns
    -------
    Path
        ``dest``, complete and verified.

    Raises
    ------
    ChecksumError
        The finished file has another checksum (the part file is deleted so a re-run starts clean).
    OfflineError
        The server could not be reached.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    exp = _expected(md5, sha256)
    if verify_file(dest, md5=md5, sha256=sha256):
        return dest  # already there and correct: nothing to do
    if dest.exists() and exp is not None:
        dest.unlink()  # a stale or corrupt copy: fetch again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if (resume and part.exists()) else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    opener = opener or urllib.request.urlopen
    try:
        response = opener(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range not satisfiable: the part file is already complete
            response = None
        else:
            raise OSError(f"url: {url} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise OfflineError(
            f"url: could not reach {url} ({getattr(exc, 'reason', exc)}). Are you offline? "
            f"Download it by hand and put it at {dest}, then run the command again."
        ) from exc
    if response is not None:
        try:
            _stream(response, part, have, dest.name, chunk_size, progress, tqdm)
        except (
            urllib.error.URLError,
            ConnectionError,
            TimeoutError,
            http.client.HTTPException,
        ) as exc:
            raise OfflineError(
                f"url: the download of {url} was interrupted ({exc}); the {part.stat().st_size} "
                f"bytes received are kept in {part}: run the command again to resume"
            ) from exc
    if exp is not None:
        got = file_digest(part, exp[0])
        if got != exp[1]:
            part.unlink()
            raise ChecksumError(
                f"{dest.name}: {exp[0]} mismatch (expected {exp[1]}, got {got}); the partial file "
                "was removed, run the command again"
            )
    os.replace(part, dest)
    return dest


def _stream(response, part: Path, have: int, desc: str, chunk_size: int, progress: bool, tqdm):
    """Append (after a 206 answer to a Range request) or write the response body to ``part``."""
    with response:
        status = getattr(response, "status", None) or response.getcode()
        if have and status != 206:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with (
            open(part, "ab" if have else "wb") as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=desc,
                disable=not progress,
            ) as bar,
        ):
            for block in iter(lambda: response.read(chunk_size), b""):
                fh.write(block)
                bar.update(len(block))


def _check_member(name: str, target: Path) -> Path:
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r}: absolute path refused")
    out = (target / name).resolve()
    if out != target and target not in out.parents:
        raise UnsafeArchiveError(f"archive member {name!r}: would be written outside {target}")
    return out


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike) -> list[Path]:
    """Extract a zip or tar archive into ``target``, refusing members that escape it.

    Every member is checked before anything is written: absolute names, ``..`` components, and
    symbolic or hard links whose destination leaves ``target`` raise :class:`UnsafeArchiveError`.
    Device files and FIFOs are refused too. Re-running overwrites the same files (idempotent).

    Returns
    -------
    list of Path
        The regular files written.
    """
    archive = Path(archive)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    name = archive.name.lower()
    written: list[Path] = []
    if name.endswith(".zip"):
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"archive: {archive} is not a valid zip file: {exc}") from exc
        with zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(info.filename, target)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == 0o120000:
                    raise UnsafeArchiveError(f"archive member {info.filename!r}: links are refused")
            for info in infos:
                out = _check_member(info.filename, target)
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                written.append(out)
        return written
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        try:
            tf = tarfile.open(archive)
        except tarfile.TarError as exc:
            raise ValueError(f"archive: {archive} is not a valid tar file: {exc}") from exc
        with tf:
            members = tf.getmembers()
            for m in members:
                out = _check_member(m.name, target)
                if m.issym() or m.islnk():
                    link = m.linkname
                    base = out.parent if m.issym() else target
                    if link.startswith("/") or (
                        (base / link).resolve() != target
                        and target not in (base / link).resolve().parents
                    ):
                        raise UnsafeArchiveError(
                            f"archive member {m.name!r}: link to {link!r} leaves {target}"
                        )
                elif not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(
                        f"archive member {m.name!r}: special files are refused"
                    )
            for m in members:
                out = _check_member(m.name, target)
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                elif m.isfile():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    assert src is not None
                    with src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written.append(out)
                else:  # a link checked above: copy the file it points to
                    if m.islnk():
                        src_path = _check_member(m.linkname, target)
                    else:
                        src_path = (out.parent / m.linkname).resolve()
                    if src_path.is_file():
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src_path, out)
                        written.append(out)
        return written
    raise ValueError(f"archive: unsupported archive type {archive.name!r} (zip or tar)")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Copy ``src`` to ``dst`` atomically unless ``dst`` already has the same size and content.

    Returns True when a copy was made (False: already up to date, an idempotent re-run).
    """
    src, dst = Path(src), Path(dst)
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        if file_digest(dst, "sha256") == file_digest(src, "sha256"):
            return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True


def read_manifest(path: str | os.PathLike) -> dict[str, str]:
    """``sha256sum``-style manifest -> {relative path: hex digest}."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        out[name.strip().lstrip("./")] = digest.strip().lower()
    return out


def run_script(
    main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> int:
    """Run a data script's ``main`` and turn expected failures into one clear line, no traceback.

    Offline, a checksum mismatch, an unsafe archive, a missing or malformed input: the message goes
    to stderr prefixed with ``error:`` and the exit status is 1 (2 for an offline network, so a shell
    can tell them apart). Anything else is a bug and keeps its traceback.
    """
    try:
        return int(main(argv) or 0)
    except OfflineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ChecksumError, UnsafeArchiveError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
