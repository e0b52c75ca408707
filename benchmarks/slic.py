"""Benchmark: rubikkit.slic.slic3d against scikit-image's slic and SimpleITK's SLICImageFilter.

Everything is measured in one run, on a real BraTS FLAIR volume (cropped to 128^3 around the brain,
and a 128 x 256 x 256 (D, H, W) volume padded from it), with the same parameters for every method
(n_segments 1000, max_num_iter 10, compactness 0.1 on intensities rescaled to [0, 1]):

* speed: the median of ``--repeats`` warm calls (numba compiled), the first call in a fresh
  Python process (numba's on-disk cache warm), scikit-image ``slic(..., channel_axis=None)`` and
  SimpleITK ``SLICImageFilter`` (SuperGridSize = the same grid step, SpatialProximityWeight = the
  same compactness, fed the same [0, 1] image);
* quality against the tumour label map (OTMultiClass, 5 classes): achievable segmentation accuracy,
  boundary recall (tolerance 1 voxel), under-segmentation error and the segment count.

Usage::

    .venv/bin/python benchmarks/slic.py [--data ../shared/data] [--repeats 5] [--write]

``--write`` replaces the "## SLIC supervoxels" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import cpu_model, write_section  # noqa: E402

from rubikkit.slic import (  # noqa: E402
    asa,
    boundary_recall,
    grid_steps,
    slic3d,
    undersegmentation_error,
)

CASE = "brats2015_deepmedic/train/brats_2013_pat0005_1"
SECTION = "## SLIC supervoxels"
N_SEGMENTS = 1000
MAX_ITER = 10
COMPACTNESS = 0.1


# --------------------------------------------------------------------------------------------
# inputs


def load_brats(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FLAIR, tumour classes and brain mask as (D, H, W) arrays, D the slice axis."""
    import nibabel as nib

    case = data / CASE

    def read(name, dtype):
        arr = np.asarray(nib.load(str(case / name)).dataobj).astype(dtype)
        return np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))  # (x, y, z) -> (z, y, x)

    return (
        read("Flair_subtrMeanDivStd.nii.gz", np.float32),
        read("OTMultiClass.nii.gz", np.int64),
        read("brainmask.nii.gz", np.float32) > 0,
    )


def crop_around(mask: np.ndarray, shape) -> tuple[slice, ...]:
    """Slices of ``shape`` centred on the mask's bounding box, kept inside the volume."""
    idx = np.nonzero(mask)
    out = []
    for ax, size in enumerate(shape):
        centre = (int(idx[ax].min()) + int(idx[ax].max())) // 2
        start = min(max(centre - size // 2, 0), max(mask.shape[ax] - size, 0))
        out.append(slice(start, start + size))
    return tuple(out)


def fit(vol: np.ndarray, shape, fill) -> np.ndarray:
    """Pad (centred, with ``fill``) or crop ``vol`` to ``shape``."""
    out = np.full(shape, fill, dtype=vol.dtype)
    src, dst = [], []
    for n_in, n_out in zip(vol.shape, shape):
        if n_in >= n_out:
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(None))
        else:
            a = (n_out - n_in) // 2
            src.append(slice(None))
            dst.append(slice(a, a + n_in))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def build_cases(data: Path | None):
    """[(name, volume, truth)]: the real volumes, or synthetic blobs when the data is absent."""
    if data is not None and (data / CASE).is_dir():
        flair, truth, brain = load_brats(data)
        sl = crop_around(brain, (128, 128, 128))
        big_sl = crop_around(brain, (128, flair.shape[1], flair.shape[2]))
        background = float(flair.min())
        big = fit(flair[big_sl], (128, 256, 256), background)
        big_truth = fit(truth[big_sl], (128, 256, 256), 0)
        return "BraTS 2013 pat0005 FLAIR", [
            ("128x128x128", np.ascontiguousarray(flair[sl]), np.ascontiguousarray(truth[sl])),
            ("128x256x256", big, big_truth),
        ]
    sys.path.insert(0, str(REPO / "tests"))
    from test_slic import blobs  # the tests' input builder

    vol, truth = blobs((128, 128, 128), n=12)
    big, big_truth = blobs((128, 256, 256), n=30)
    return "synthetic blobs (real data not found)", [
        ("128x128x128", vol, truth),
        ("128x256x256", big, big_truth),
    ]


# --------------------------------------------------------------------------------------------
# methods


def run_rubikkit(vol):
    return slic3d(vol, N_SEGMENTS, COMPACTNESS, max_num_iter=MAX_ITER)


def run_skimage(vol):
    from skimage.segmentation import slic

    return slic(
        vol, n_segments=N_SEGMENTS, compactness=COMPACTNESS, max_num_iter=MAX_ITER,
        channel_axis=None,
    )  # fmt: skip


def make_sitk():
    import SimpleITK as sitk

    def run(vol):
        v = vol.astype(np.float64)
        v = ((v - v.min()) / (v.max() - v.min())).astype(np.float32)  # as slic's rescaling
        _, steps = grid_steps(vol.shape, N_SEGMENTS)
        f = sitk.SLICImageFilter()
        f.SetSuperGridSize([int(s) for s in steps[::-1]])  # ITK orders axes (x, y, z)
        f.SetSpatialProximityWeight(COMPACTNESS)
        f.SetMaximumNumberOfIterations(MAX_ITER)
        f.SetEnforceConnectivity(True)
        return sitk.GetArrayFromImage(f.Execute(sitk.GetImageFromArray(v))).astype(np.int64)

    return run, sitk.Version_VersionString()


def timed(fn, vol, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(vol)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def fresh_process_first_call(vol) -> tuple[float, float]:
    """(import + first call, first call) seconds in a new interpreter, numba's cache warm."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vol.npy"
        np.save(path, vol)
        code = (
            "import time, sys; t0 = time.perf_counter()\n"
            "import numpy as np\n"
            "from rubikkit.slic import slic3d\n"
            f"v = np.load({str(path)!r})\n"
            "t1 = time.perf_counter()\n"
            f"slic3d(v, {N_SEGMENTS}, {COMPACTNESS}, max_num_iter={MAX_ITER})\n"
            "t2 = time.perf_counter()\n"
            "print(t2 - t0, t2 - t1)\n"
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        total, first = (float(x) for x in res.stdout.split())
    return total, first


def quality(labels, truth) -> dict:
    labels = np.asarray(labels)
    if labels.min() < 0:
        labels = labels - labels.min()
    return {
        "asa": asa(labels, truth),
        "br": boundary_recall(labels, truth, tolerance=1),
        "ue": undersegmentation_error(labels, truth),
        "n": int(len(np.unique(labels))),
    }


# --------------------------------------------------------------------------------------------
# report


def machine_info() -> str:
    import numba
    import skimage

    cpu = cpu_model()
    try:
        import SimpleITK as sitk

        sitk_v = sitk.Version_VersionString()
        sitk_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    except Exception:  # noqa: BLE001
        sitk_v, sitk_threads = "not installed", "-"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs (numba threads {numba.get_num_threads()}, "
        f"SimpleITK threads {sitk_threads}); Python {platform.python_version()}, "
        f"numpy {np.__version__}, numba {numba.__version__}, scikit-image {skimage.__version__}, "
        f"SimpleITK {sitk_v}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("RUBIKKIT_TEST_DATA") or str(REPO.parent / "shared" / "data")
    ap.add_argument("--data", type=Path, default=Path(default_data))
    ap.add_argument("--repeats", type=int, default=5, help="warm rubikkit calls (median)")
    ap.add_argument("--ref-repeats", type=int, default=3, help="scikit-image/SimpleITK calls")
    ap.add_argument("--write", action="store_true", help="record in benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    source, cases = build_cases(args.data)
    try:
        sitk_run, _ = make_sitk()
    except Exception as exc:  # noqa: BLE001
        sitk_run = None
        print(f"SimpleITK unavailable: {exc}", file=sys.stderr)

    rows, checks = [], []
    for name, vol, truth in cases:
        print(f"{name}: warm-up and timing ...", file=sys.stderr, flush=True)
        run_rubikkit(vol)  # compile or load from numba's cache
        t_ours, lab_ours = timed(run_rubikkit, vol, args.repeats)
        total, first = fresh_process_first_call(vol)
        t_sk, lab_sk = timed(run_skimage, vol, args.ref_repeats)
        q_ours, q_sk = quality(lab_ours, truth), quality(lab_sk, truth)
        res = {"scikit-image": (t_sk, q_sk)}
        if sitk_run is not None:
            try:
                t_it, lab_it = timed(sitk_run, vol, args.ref_repeats)
                res["SimpleITK"] = (t_it, quality(lab_it, truth))
            except Exception as exc:  # noqa: BLE001
                print(f"SimpleITK failed: {exc}", file=sys.stderr)
        rows.append((name, "rubikkit (warm, median)", t_ours, q_ours, None))
        rows.append((name, "rubikkit (fresh process: import + first call)", total, None, first))
        for method, (t, q) in res.items():
            rows.append((name, method, t, q, t / t_ours))
        if name == "128x128x128":
            checks.append(("speed-up vs scikit-image >= 8x", t_sk / t_ours, t_sk / t_ours >= 8))
            if "SimpleITK" in res:
                r = res["SimpleITK"][0] / t_ours
                checks.append(("speed-up vs SimpleITK >= 3x", r, r >= 3))
            checks.append(("fresh-process first call <= 3 s", total, total <= 3))
        d_asa = abs(q_ours["asa"] - q_sk["asa"])
        d_br = abs(q_ours["br"] - q_sk["br"])
        checks.append((f"{name}: |ASA - scikit-image's| <= 0.01", d_asa, d_asa <= 0.01))
        checks.append((f"{name}: |boundary recall - scikit-image's| <= 0.01", d_br, d_br <= 0.01))

    lines = [
        f"Volume: {source}; n_segments {N_SEGMENTS}, max_num_iter {MAX_ITER}, compactness "
        f"{COMPACTNESS}, enforce_connectivity on; quality against the 5-class tumour map.",
        "",
        "| volume (D x H x W) | method | time (s) | rubikkit speed-up | ASA | boundary recall "
        "| under-seg. error | segments |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, method, t, q, extra in rows:
        if q is None:  # the fresh-process row: extra = the first call alone
            lines.append(
                f"| {name} | {method} | {t:.2f} (call {extra:.2f}) | | | | | |"
            )  # fmt: skip
            continue
        speed = f"{extra:.1f}x" if extra is not None else ""
        lines.append(
            f"| {name} | {method} | {t:.3f} | {speed} | {q['asa']:.4f} | {q['br']:.4f} "
            f"| {q['ue']:.4f} | {q['n']} |"
        )
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for what, value, ok in checks:
        lines.append(f"| {what} | {value:.3g} | {'yes' if ok else 'NO'} |")
    lines += [
        "",
        f"Machine: {machine_info()}.",
        f"Run: {time.strftime('%Y-%m-%d %H:%M')}; 1-minute load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (above the core count, other jobs shared the CPUs).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
