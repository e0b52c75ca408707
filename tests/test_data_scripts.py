"""data_scripts/ and rubikkit.data.download, offline: a local HTTP server, fabricated files."""

from __future__ import annotations

import http.server
import importlib.util
import io
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_fixtures import make_lidc, make_medmnist, make_msd, md5, sha256, write_xlsx

from rubikkit.data import open_dataset
from rubikkit.data.download import (
    ChecksumError,
    OfflineError,
    UnsafeArchiveError,
    download,
    extract_archive,
)

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``self.server.root``, honouring ``Range: bytes=N-``; logs requests."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = self.server.root / self.path.split("?")[0].lstrip("/")
        self.server.log.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.root, httpd.log = root, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    return f"http://127.0.0.1:{port}/file.npz"


def _script(name: str):
    """Import data_scripts/<name>.py as a module (its `_common` import needs the folder on path)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"data_script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(name: str, argv, capsys) -> tuple[int, str, str]:
    from rubikkit.data.download import run_script

    rc = run_script(_script(name).main, [*argv, "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ----------------------------------------------------------------------------- download
def test_download_verifies_resumes_and_is_idempotent(server, tmp_path):
    payload = np.random.default_rng(0).bytes(200_000)
    (server.root / "f.bin").write_bytes(payload)
    digest = md5(server.root / "f.bin")
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    (dest.parent / "f.bin.part").write_bytes(payload[:70_000])  # an interrupted earlier run
    download(f"{server.url}/f.bin", dest, md5=digest, progress=False)
    assert dest.read_bytes() == payload and not (dest.parent / "f.bin.part").exists()
    assert server.log[-1][1] == "bytes=70000-"  # resumed with a Range request
    n = len(server.log)
    download(f"{server.url}/f.bin", dest, md5=digest, progress=False)
    assert len(server.log) == n  # verified file: no request at all


def test_download_bad_checksum(server, tmp_path):
    (server.root / "f.bin").write_bytes(b"x" * 1000)
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError, match=r"f\.bin: sha256 mismatch"):
        download(f"{server.url}/f.bin", dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    with pytest.raises(OSError, match="HTTP 404"):
        download(f"{server.url}/absent.bin", dest, progress=False)


def test_download_offline(closed_port_url, tmp_path):
    with pytest.raises(OfflineError, match="could not reach .* Are you offline"):
        download(closed_port_url, tmp_path / "f.npz", progress=False)


# ----------------------------------------------------------------------------- archives
def _tar_with(path: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return path


def test_extract_refuses_paths_outside(tmp_path):
    target = tmp_path / "t" / "inner"
    evil = _tar_with(tmp_path / "evil.tar.gz", {"ok.txt": b"fine", "../evil": b"pwned"})
    with pytest.raises(UnsafeArchiveError, match="'../evil'"):
        extract_archive(evil, target)
    assert not (tmp_path / "t" / "evil").exists() and not (target / "ok.txt").exists()
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("a/ok.txt", "fine")
        zf.writestr("../../evil", "pwned")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(tmp_path / "evil.zip", target)
    assert not (tmp_path / "evil").exists()
    absolute = _tar_with(tmp_path / "abs.tar.gz", {"/etc/evil": b"x"})
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        extract_archive(absolute, target)
    link = _tar_with(tmp_path / "link.tar.gz", {"a.txt": b"x"}, link=("l", "../../outside"))
    with pytest.raises(UnsafeArchiveError, match="link"):
        extract_archive(link, target)
    good = _tar_with(tmp_path / "good.tar.gz", {"d/a.txt": b"hello"})
    assert extract_archive(good, target) == [(target / "d" / "a.txt").resolve()]
    assert extract_archive(good, target)  # re-running is harmless
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid zip"):
        extract_archive(tmp_path / "bad.zip", target)


# ----------------------------------------------------------------------------- scripts
@pytest.mark.parametrize("name", ["medmnist3d", "lidc_nodules", "brats", "phantoms"])
def test_help(name):
    text = _script(name).build_parser().format_help()
    assert "usage:" in text and "--dest" in text


def test_script_runs_standalone():
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "phantoms.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "usage:" in out.stdout


def test_medmnist_script(server, tmp_path, capsys, monkeypatch):
    make_medmnist(server.root / "adrenalmnist3d.npz")
    dest = tmp_path / "mm"
    # the official MD5 does not match a fabricated file: a clear error, nothing kept
    rc, _, err = _run("medmnist3d", ["--root", str(dest), "--base-url", server.url], capsys)
    assert rc == 1 and "md5 mismatch" in err and "Traceback" not in err
    assert not (dest / "adrenalmnist3d.npz").exists()
    mod = _script("medmnist3d")
    monkeypatch.setattr(mod, "medmnist_md5", lambda flag, size: md5(server.root / f"{flag}.npz"))
    from rubikkit.data.download import run_script

    assert run_script(mod.main, ["--root", str(dest), "--base-url", server.url]) == 0
    assert run_script(mod.main, ["--root", str(dest), "--base-url", server.url]) == 0
    assert "already there" in capsys.readouterr().out
    ds = open_dataset("medmnist3d:adrenal", "test", root=dest)
    assert len(ds) == 6


def test_offline_script_message(closed_port_url, tmp_path, capsys):
    base = closed_port_url.rsplit("/", 1)[0]
    rc, _, err = _run("medmnist3d", ["--root", str(tmp_path), "--base-url", base], capsys)
    assert rc == 2 and err.startswith("error: url: could not reach") and "offline" in err
    assert "Traceback" not in err


def test_lidc_script_public_and_own_export(server, tmp_path, capsys):
    src = make_lidc(tmp_path / "src", n_patients=3)
    vois = server.root / "VOIs"
    lines = []
    for sub in ("image", "nodule_mask"):
        for p in sorted((src / sub).iterdir()):
            (vois / sub).mkdir(parents=True, exist_ok=True)
            (vois / sub / p.name).write_bytes(p.read_bytes())
            lines.append(f"{sha256(p)}  {sub}/{p.name}")
    manifest = tmp_path / "vois.sha256"
    manifest.write_text("\n".join(lines) + "\n")
    meta = pd.read_csv(src / "metadata.csv").drop(columns=["file"])
    write_xlsx(server.root / "MetadatabyNoduleMaxVoting.xlsx", meta)
    dest = tmp_path / "lidc"
    args = ["--dest", str(dest), "--base-url", server.url, "--manifest", str(manifest)]
    rc, out, err = _run("lidc_nodules", args, capsys)
    assert rc == 0, err
    ds = open_dataset(f"lidc:{dest}", "all", unlabeled=True, cache_dir=False, progress=False)
    assert len(ds) == 6
    rc, out, _ = _run("lidc_nodules", args, capsys)
    assert rc == 0 and "0 files downloaded, 12 already verified" in out
    # a corrupted local file is fetched again
    (dest / "image" / "LIDC-IDRI-0001_R_1.nii.gz").write_bytes(b"broken")
    assert _run("lidc_nodules", args, capsys)[1].count("1 files downloaded") == 1
    # the user's own export, as an archive
    with tarfile.open(tmp_path / "export.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="export")
    own = tmp_path / "own"
    rc, _, err = _run(
        "lidc_nodules", ["--source", str(tmp_path / "export.tar.gz"), "--dest", str(own)], capsys
    )
    assert rc == 0, err
    assert len(open_dataset(f"lidc:{own}", "all", cache_dir=False, progress=False)) > 0
    rc, _, err = _run(
        "lidc_nodules", ["--source", str(tmp_path / "nope"), "--dest", str(own)], capsys
    )
    assert rc == 1 and "--source" in err and "Traceback" not in err


def test_brats_script_msd_archive(tmp_path, capsys):
    task = make_msd(tmp_path / "Task01_BrainTumour", n=5)
    with tarfile.open(tmp_path / "Task01_BrainTumour.tar", "w") as tf:
        tf.add(task, arcname="Task01_BrainTumour")
    dest = tmp_path / "crops"
    args = [
        "--source",
        str(tmp_path / "Task01_BrainTumour.tar"),
        "--dest",
        str(dest),
        "--size",
        "8",
    ]
    rc, out, err = _run("brats", args, capsys)
    assert rc == 0, err
    ds = open_dataset(f"brats:{dest}", "all", labels="whole")
    assert ds.layout == "preprocessed" and len(ds) == 5 and ds.convention == "msd"
    assert ds[0]["image"].shape == (4, 8, 8, 8) and ds[0]["mask"].max() == 1
    rc, out, _ = _run("brats", args, capsys)
    assert rc == 0 and "0 cases preprocessed, 5 already there" in out
    rc, _, err = _run("brats", ["--source", str(tmp_path / "none"), "--dest", str(dest)], capsys)
    assert rc == 1 and "--source" in err


def test_phantoms_script_writes_a_nifti_folder(tmp_path, capsys):
    dest = tmp_path / "ph"
    args = ["--kind", "nodule", "--n", "4", "2", "2", "--size", "12", "--dest", str(dest)]
    rc, out, err = _run("phantoms", args, capsys)
    assert rc == 0 and "8 volumes written" in out, err
    ds = open_dataset(f"nifti:{dest}", "train", normalize=None)
    assert len(ds) == 4 and ds.class_names == ["benign", "malignant"]
    assert ds[0]["image"].shape == (1, 12, 12, 12) and ds[0]["mask"].shape == (12, 12, 12)
    ref = open_dataset("phantoms:nodule", "train", n=4, size=12)
    np.testing.assert_allclose(ds[1]["image"].numpy(), ref[1]["image"].numpy(), atol=1e-6)
    assert int(ds[1]["label"]) == int(ref[1]["label"])
    rc, out, _ = _run("phantoms", args, capsys)
    assert "0 volumes written, 8 already there" in out
    rc, _, err = _run("phantoms", ["--size", "3", "--dest", str(dest)], capsys)
    assert rc == 1 and err.startswith("error: size")


# ----------------------------------------------------------------------------- review fixes
def _brats_cases(root: Path, n: int = 2) -> Path:
    """A BraTS case-folder layout with FLAIR and T1c only (no T2)."""
    from rubikkit.data.io import save_nifti

    rng = np.random.default_rng(0)
    for k in range(n):
        case = root / "train" / f"case{k}"
        case.mkdir(parents=True)
        brain = np.zeros((12, 12, 12), dtype=np.float32)
        brain[2:-2, 2:-2, 2:-2] = 1
        for mod in ("flair", "t1c"):
            save_nifti(case / f"case{k}_{mod}.nii.gz", brain * rng.uniform(0.5, 1, brain.shape))
        seg = np.zeros((12, 12, 12), dtype=np.int16)
        seg[5:7, 5:7, 5:7] = 1
        save_nifti(case / f"case{k}_seg.nii.gz", seg)
    return root


def test_brats_script_never_deletes_what_it_did_not_write(tmp_path, capsys):
    source = _brats_cases(tmp_path / "cases")
    dest = tmp_path / "data"
    (dest / "medmnist3d").mkdir(parents=True)
    (dest / "medmnist3d" / "mine.npz").write_bytes(b"keep")  # --dest pointed at a data root
    args = ["--source", str(source), "--dest", str(dest), "--size", "8"]
    rc, out, err = _run("brats", args, capsys)
    assert rc == 0 and "2 cases preprocessed" in out, err
    assert (dest / "medmnist3d" / "mine.npz").read_bytes() == b"keep"
    # options the data cannot satisfy fail before the crops made with other options are dropped
    rc, _, err = _run("brats", [*args, "--channels", "t2"], capsys)
    assert rc == 1 and "'t2'" in err
    assert len(list((dest / "train").glob("*.npz"))) == 2
    # crops nobody recorded (no preprocess.json) are someone else's
    other = tmp_path / "other"
    (other / "train").mkdir(parents=True)
    (other / "train" / "x.npz").write_bytes(b"keep")
    rc, _, err = _run("brats", ["--source", str(source), "--dest", str(other)], capsys)
    assert rc == 1 and err.startswith("error: --dest:") and (other / "train" / "x.npz").exists()
    with pytest.raises(SystemExit):
        _run("brats", [*args[:4], "--size", "0"], capsys)
    assert "--size" in capsys.readouterr().err


def test_damaged_archives_are_named_and_nothing_half_extracted_stays(tmp_path, capsys):
    task = make_msd(tmp_path / "Task01_BrainTumour", n=2)
    full = tmp_path / "Task01_BrainTumour.tar"
    with tarfile.open(full, "w") as tf:
        tf.add(task, arcname="Task01_BrainTumour")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # an interrupted download
    dest = tmp_path / "crops"
    rc, _, err = _run("brats", ["--source", str(cut), "--dest", str(dest), "--size", "8"], capsys)
    assert rc == 1 and "cut.tar is a damaged or truncated archive" in err
    assert not (dest / ".source").exists()
    rc, _, err = _run("brats", ["--source", str(full), "--dest", str(dest), "--size", "8"], capsys)
    assert rc == 0, err
    assert not (dest / ".source").exists(), "the unpacked archive is not kept beside the crops"
    src = make_lidc(tmp_path / "lidc", n_patients=2)
    with tarfile.open(tmp_path / "export.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="export")
    data = (tmp_path / "export.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    own = tmp_path / "own"
    rc, _, err = _run(
        "lidc_nodules", ["--source", str(tmp_path / "cut.tar.gz"), "--dest", str(own)], capsys
    )
    assert rc == 1 and "damaged or truncated" in err and not (own / ".source").exists()


def test_lidc_missing_manifest_and_damaged_spreadsheet(tmp_path, capsys, closed_port_url):
    dest = tmp_path / "lidc"
    rc, _, err = _run(
        "lidc_nodules", ["--dest", str(dest), "--manifest", str(tmp_path / "no")], capsys
    )
    assert rc == 1 and err.startswith("error: --manifest:")
    (tmp_path / "empty.sha256").write_text("")
    dest.mkdir()
    sheet = dest / "MetadatabyNoduleMaxVoting.xlsx"
    sheet.write_text("not a spreadsheet")  # it has no checksum: a damaged copy looked complete
    base = closed_port_url.rsplit("/", 1)[0]
    args = ["--dest", str(dest), "--manifest", str(tmp_path / "empty.sha256"), "--base-url", base]
    rc, _, err = _run("lidc_nodules", args, capsys)
    assert rc == 1 and "removed, run the command again" in err and not sheet.exists()


def test_medmnist_says_why_an_existing_file_is_fetched_again(tmp_path, capsys, closed_port_url):
    (tmp_path / "adrenalmnist3d.npz").write_bytes(b"half a file")  # put there by hand
    base = closed_port_url.rsplit("/", 1)[0]
    rc, out, err = _run("medmnist3d", ["--root", str(tmp_path), "--base-url", base], capsys)
    assert rc == 2 and "adrenalmnist3d.npz: MD5 mismatch" in out and "offline" in err
