"""Deterministic 3D phantoms: the built-in dataset every notebook runs on without a download.

Three kinds, each a stand-in for a dataset of the papers:

``"hemorrhage"`` (CT, 1 channel, 4 classes): brain CT with an acute bleed whose cause is the class,
    after the private brain-hemorrhage dataset of Zhuang et al. (Rubik's cube, Sec. 3.1) and Zhou
    et al. (TCPC, Sec. 3.1.1). The classes differ by lesion location, shape and texture:

    0 ``aneurysm``: subarachnoid blood filling the CSF spaces (basal cisterns, sulci) around a small
      round sac near the skull base (circle of Willis);
    1 ``avm`` (arteriovenous malformation): a lobar, peripheral, irregular hematoma with a tangle of
      serpiginous vessels and calcified specks (heterogeneous texture);
    2 ``moyamoya``: intraventricular blood layering in the dependent (posterior) part of the lateral
      ventricles, with small periventricular punctate bleeds;
    3 ``hypertension``: a compact, homogeneous, ovoid deep hematoma (basal ganglia or thalamus) with
      a thin hypodense oedema rim.

``"tumour"`` (MRI, 4 channels T1, T1c, T2, FLAIR; segmentation): a brain tumour with nested regions
    like BraTS: oedema (mask 2) around a core whose rim enhances on T1c (mask 3) and whose centre is
    necrotic (mask 1); background 0.

``"nodule"`` (CT, 1 channel, 2 classes): a lung CT patch at 1 mm with parenchyma texture, vessels
    and sometimes the chest wall, centred on a nodule: 0 ``benign`` (small, smooth, round, sometimes
    calcified) or 1 ``malignant`` (larger, lobulated, spiculated, sometimes part-solid), like LIDC.

Every phantom has the same anatomy recipe: a head (or lung patch) in normalised coordinates
``[-1, 1]`` per axis, warped by a smooth random displacement field (anatomical variability), with
tissue texture from smooth random fields, a smooth multiplicative bias field (MRI) or low-frequency
offset (CT), scanner noise (Gaussian for CT, Rician for MRI: the magnitude of a complex signal with
Gaussian noise in both parts), and a small blur for the partial-volume effect. Axis order is
``(D, H, W)``: D runs inferior to superior (slices), H anterior to posterior, W right to left.

``difficulty`` in [0, 1] (default 0.5) moves every knob at once, so that learning from a few labels
is genuinely hard and self-supervision has something to add:

==========================  ==================================  ===============================
knob                        difficulty 0                        difficulty 1
==========================  ==================================  ===============================
lesion contrast (CT)        blood ~ brain + 55 HU               brain + 25 HU
tumour contrast (MRI)       full tissue contrast                halved, towards white matter
CT noise sigma              3 HU (brain), 15 HU (lung)          15 HU (brain), 60 HU (lung)
MRI noise sigma             0.02 of white matter                0.08
lesion location jitter      0.04 (normalised units)             0.24
lesion size spread (log)    0.15                                0.5
distractor lesion of        never                               probability 0.5
another class's style
benign/malignant overlap    well separated sizes, clear         overlapping sizes, faint
(nodule)                    spicules                            spicules, 30% atypical cases
==========================  ==================================  ===============================

Items are generated lazily from ``seed`` alone (no global state): the same ``(kind, seed, size,
difficulty, label)`` always gives the same arrays, independent of the order they are asked for.
"""

from __future__ import annotations

import numpy as np

from rubikkit.data.base import VolumeDataset, label_class_names, merge_labels, mm3
from rubikkit.data.intensity import minmax_to_unit, window_ct

__all__ = ["KINDS", "PhantomDataset", "make_phantom", "phantom_class_names", "save_phantom_folder"]

KINDS = {
    "hemorrhage": ["aneurysm", "avm", "moyamoya", "hypertension"],
    "tumour": ["background", "necrosis", "oedema", "enhancing"],
    "nodule": ["benign", "malignant"],
}
_ALIASES = {"tumor": "tumour", "haemorrhage": "hemorrhage", "hemorrhages": "hemorrhage"}
MODALITIES = ("t1", "t1c", "t2", "flair")

# CT windows (level, width) in HU used to map to [-1, 1].
BRAIN_WINDOW = (40.0, 120.0)
LUNG_WINDOW = (-600.0, 1500.0)

# Tissue codes of the head model.
AIR, SCALP, SKULL, CSF, GM, WM, DEEP = range(7)
_CT_HU = np.array([-1000.0, -40.0, 900.0, 8.0, 38.0, 27.0, 34.0], dtype=np.float32)
# MRI intensities per tissue (rows) and modality (columns T1, T1c, T2, FLAIR), white matter ~0.8.
_MR = np.array(
    [
        [0.00, 0.00, 0.00, 0.00],  # air
        [0.90, 0.90, 0.50, 0.60],  # scalp (fat)
        [0.08, 0.08, 0.05, 0.05],  # skull
        [0.15, 0.15, 1.00, 0.10],  # CSF
        [0.55, 0.55, 0.65, 0.60],  # grey matter
        [0.80, 0.80, 0.45, 0.45],  # white matter
        [0.60, 0.60, 0.60, 0.55],  # deep grey nuclei
    ],
    dtype=np.float32,
)
# Tumour tissue per modality: necrosis, oedema, enhancing rim.
_MR_TUMOUR = np.array(
    [
        [0.25, 0.25, 0.95, 0.50],  # necrosis
        [0.45, 0.45, 0.90, 0.95],  # oedema
        [0.55, 1.15, 0.70, 0.75],  # enhancing
    ],
    dtype=np.float32,
)


def phantom_class_names(kind: str) -> list[str]:
    """Class names of a phantom kind (for ``tumour``: the raw mask labels)."""
    return list(KINDS[_kind(kind)])


def _kind(kind: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind: expected a string, got {type(kind).__name__}")
    k = _ALIASES.get(kind.lower(), kind.lower())
    if k not in KINDS:
        raise ValueError(f"kind: unknown phantom kind {kind!r}; choose one of {sorted(KINDS)}")
    return k


def _size3(size) -> tuple[int, int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size),) * 3
    try:
        s = tuple(int(v) for v in size)
    except TypeError:
        raise TypeError(f"size: expected an int or (D, H, W), got {size!r}") from None
    if len(s) != 3 or min(s) < 8:
        raise ValueError(f"size: expected an int or 3 ints (D, H, W), each >= 8, got {size!r}")
    return s  # type: ignore[return-value]


def _offset3(offset, shape) -> tuple[float, float, float]:
    """``offset`` as 3 voxel counts (D, H, W) that keep the centre inside a volume of ``shape``."""
    off = mm3(offset, "offset", signed=True)
    if any(abs(o) >= (n - 1) / 2 for o, n in zip(off, shape)):
        raise ValueError(
            f"offset: expected the centre to stay inside the volume, |offset| < (size - 1) / 2 "
            f"on each axis of {shape}, got {offset!r}"
        )
    return off


# ----------------------------------------------------------------------------- random fields
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, corners aligned (like ``align_corners=True``)."""
    x = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 2)
    f = (x - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    m[rows, i0] = 1.0 - f
    m[rows, i0 + 1] += f
    return m


def _field(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Smooth random field of unit std: Gaussian noise on a coarse grid, trilinearly upsampled.

    Trilinear interpolation is separable, so the upsampling is three small matrix products (much
    faster than a general 3D interpolation on a busy CPU).
    """
    coarse = rng.standard_normal((cells + 1,) * 3).astype(np.float32)
    md, mh, mw = (_interp_matrix(n, cells + 1) for n in shape)
    t = coarse @ mw.T  # (c, c, W)
    t = np.tensordot(mh, t, axes=([1], [1]))  # (H, c, W)
    out = np.tensordot(md, t, axes=([1], [1]))  # (D, H, W)
    std = float(out.std())
    return out / std if std > 0 else out


def _lowfreq(rng: np.random.Generator, shape, freq: float = 0.6, terms: int = 6) -> np.ndarray:
    """Very smooth random field of unit std: a sum of random plane waves (no grid kinks).

    ``freq`` is the typical number of cycles across the volume's [-1, 1] span. Each wave
    ``cos(k . x + phase)`` is the real part of a product of three 1D complex exponentials, so the sum
    is a rank-``terms`` tensor product computed with one matrix product instead of a 3D cosine.
    """
    d, h, w = (np.linspace(-1.0, 1.0, n) for n in shape)
    k = rng.normal(0.0, freq * np.pi, (terms, 3))
    phase = rng.uniform(0, 2 * np.pi, terms)
    ed = np.exp(1j * (k[:, 0, None] * d[None] + phase[:, None]))  # (T, D)
    eh = np.exp(1j * k[:, 1, None] * h[None])  # (T, H)
    ew = np.exp(1j * k[:, 2, None] * w[None])  # (T, W)
    dh = (ed[:, :, None] * eh[:, None, :]).reshape(terms, -1)  # (T, D*H)
    out = (dh.real.T @ ew.real - dh.imag.T @ ew.imag).astype(np.float32).reshape(shape)
    std = float(out.std())
    return out / std if std > 0 else out


def _coords(shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] along D, H, W, broadcastable to ``shape``."""
    d, h, w = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    return d[:, None, None], h[None, :, None], w[None, None, :]


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (partial-volume effect) with a 3-tap kernel per axis."""
    if sigma <= 0:
        return x
    k = np.exp(-0.5 * (np.arange(-1, 2, dtype=np.float32) / sigma) ** 2)
    k /= k.sum()
    out = x
    for axis in range(3):
        n = out.shape[axis]
        p = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(3)], mode="edge")
        taps = [p[(slice(None),) * axis + (slice(o, o + n),)] for o in range(3)]
        out = k[0] * taps[0] + k[1] * taps[1] + k[2] * taps[2]
    return out.astype(np.float32)


def _ellipsoid(q, centre, radii, *, squared: bool = False) -> np.ndarray:
    """Normalised ellipsoid radius ``sqrt(sum(((q - c) / r)^2))`` (1 on the surface).

    ``squared=True`` skips the square root (enough for inside tests ``< 1``). Centre and radii are
    cast to float32 scalars so float32 coordinates stay float32 (NumPy 2 would promote to float64).
    """
    out = None
    for qa, ca, ra in zip(q, centre, radii):
        t = (qa - np.float32(ca)) * np.float32(1.0 / ra)
        out = t * t if out is None else out + t * t
    return out if squared else np.sqrt(out)


def _noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian noise of std ``sigma``, drawn directly in float32 (half the cost of float64)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _smoothstep(r: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-ness of ``r < 1`` with a transition of width ``edge`` (partial volume)."""
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)


# ----------------------------------------------------------------------------- head model
def _head(rng: np.random.Generator, shape, difficulty: float, offset=(0.0, 0.0, 0.0)) -> dict:
    """Tissue map of a deformed head: skull, CSF, grey/white matter, ventricles, deep nuclei.

    ``offset`` moves the head's centre by that many voxels (D, H, W) off the volume's centre.
    """
    cd, ch, cw = _coords(shape)
    amp = 0.05
    q = (
        cd + amp * _lowfreq(rng, shape),
        ch + amp * _lowfreq(rng, shape),
        cw + amp * _lowfreq(rng, shape),
    )
    radii = np.array([0.80, 0.92, 0.80]) * rng.uniform(0.93, 1.03, 3)
    # voxels to normalised units (the volume spans [-1, 1]); adding zeros leaves the draw as it was
    centre = rng.normal(0.0, 0.02, 3) + np.array([2.0 * o / (n - 1) for o, n in zip(offset, shape)])
    r = _ellipsoid(q, centre, radii)
    skull_in = rng.uniform(0.89, 0.92)
    brain_r = skull_in - 0.03
    rb = r / brain_r  # 1 on the brain surface
    tissue = np.full(shape, AIR, dtype=np.int8)
    tissue[r < 1.0] = SCALP
    tissue[r < 0.97] = SKULL
    tissue[r < skull_in] = CSF
    brain = rb < 1.0
    f_wm = _field(rng, shape, 5)
    wm = brain & (rb + 0.09 * f_wm < 0.74)
    tissue[brain] = GM
    tissue[wm] = WM
    # sulci: CSF clefts in the outer cortex
    f_sulci = _field(rng, shape, 10)
    tissue[brain & (rb > 0.80) & (f_sulci > 0.9)] = CSF
    # deep grey nuclei (basal ganglia, thalami), symmetric in W
    s = rng.uniform(0.9, 1.1)
    rel = [
        (qa - np.float32(ca)) * np.float32(1.0 / ra) for qa, ca, ra in zip(q, centre, radii)
    ]  # head-normalised coordinates
    for side in (-1.0, 1.0):
        bg = (
            _ellipsoid(rel, (0.0, 0.02, side * 0.28), (0.14 * s, 0.17 * s, 0.09 * s), squared=True)
            < 1
        )
        th = (
            _ellipsoid(rel, (0.06, 0.22, side * 0.11), (0.11 * s, 0.12 * s, 0.08 * s), squared=True)
            < 1
        )
        tissue[(bg | th) & brain] = DEEP
    # lateral ventricles (their size varies with atrophy) and basal cisterns
    vs = rng.uniform(0.7, 1.4)
    vent = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        vent |= (
            _ellipsoid(rel, (0.15, 0.0, side * 0.11), (0.16 * vs, 0.33, 0.07 * vs), squared=True)
            < 1
        )
    cistern = _ellipsoid(rel, (-0.38, -0.05, 0.0), (0.07, 0.12, 0.20), squared=True) < 1
    tissue[vent & brain] = CSF
    tissue[cistern & brain] = CSF
    return {
        "tissue": tissue,
        "q": q,
        "rel": rel,
        "rb": rb,
        "brain": brain,
        "ventricles": vent & brain,
        "csf": (tissue == CSF) & (r < skull_in),
    }


def _texture(rng, shape) -> np.ndarray:
    """Fine tissue texture (unit std), shared by grey and white matter."""
    return 0.6 * _field(rng, shape, 14) + 0.4 * _field(rng, shape, 7)


# ----------------------------------------------------------------------------- hemorrhage
def _bleed(
    cls: int, head: dict, rng: np.random.Generator, shape, d: float, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Blood fraction (0..1) and extra HU (calcification, oedema) of a bleed in class ``cls``'s style.

    The site of each style is fixed in head-normalised coordinates and jittered with ``d``; the
    class-typical blood density (diluted in CSF for SAH, heterogeneous for AVM, dense clot for
    hypertension) is pulled towards a common value as ``d`` grows.
    """
    rel, brain = head["rel"], head["brain"]
    jitter = 0.04 + 0.20 * d
    size = scale * float(np.exp(rng.normal(0.0, 0.15 + 0.35 * d)))
    side = rng.choice([-1.0, 1.0])

    def density(own: float) -> float:
        return (1.0 - 0.6 * d) * own + 0.6 * d * 0.8

    blood = np.zeros(shape, dtype=np.float32)
    extra = np.zeros(shape, dtype=np.float32)
    if cls == 0:  # aneurysm: SAH diluted in the CSF around a sac near the circle of Willis
        c = np.array([-0.32, -0.05, side * 0.12]) + rng.normal(0, jitter, 3)
        sac = _ellipsoid(rel, c, (0.08 * size,) * 3)
        blood = np.maximum(blood, _smoothstep(sac, 0.3))
        dist = _ellipsoid(rel, c, (0.6 * size,) * 3)
        blood[head["csf"] & ~head["ventricles"] & (dist < 1)] = density(rng.uniform(0.45, 0.7))
    elif cls == 1:  # AVM: peripheral lobar hematoma + serpiginous vessels + calcified specks
        u = rng.normal(0, 1, 3)
        u[0] = abs(u[0]) * 0.6  # mostly supratentorial
        u /= np.linalg.norm(u)
        c = u * rng.uniform(0.45, 0.58) + rng.normal(0, jitter, 3)
        warp = 1.0 + 0.25 * _field(rng, shape, 4)
        hem = _ellipsoid(rel, c, (0.16 * size, 0.19 * size, 0.15 * size)) * warp
        het = 1.0 + (0.35 * (1 - d)) * _field(rng, shape, 12)
        blood = np.maximum(blood, _smoothstep(hem, 0.4) * density(0.85) * het)
        region = _ellipsoid(rel, c, (0.3 * size,) * 3, squared=True) < 1
        worms = region & (np.abs(_field(rng, shape, 9)) < 0.2)
        blood[worms] = np.maximum(blood[worms], density(0.9))
        specks = region & (_field(rng, shape, 20) > 1.5 + 0.6 * d)
        extra[specks] = rng.uniform(120, 300)
    elif cls == 2:  # moyamoya: intraventricular blood with a fluid level + punctate bleeds
        vent = head["ventricles"]
        level = rng.uniform(-0.15, 0.2) - 0.1 * (size - 1.0)
        sides = [side] if rng.random() < 0.4 else [-1.0, 1.0]
        sel = np.zeros(shape, dtype=bool)
        for s in sides:
            sel |= (rel[2] * s > 0) & (rel[1] > level + rng.normal(0, jitter))
        blood[vent & sel] = density(rng.uniform(0.8, 0.95))
        for _ in range(rng.integers(1, 4)):
            c = np.array([0.15, rng.uniform(-0.2, 0.2), side * 0.2]) + rng.normal(0, jitter, 3)
            spot = _smoothstep(_ellipsoid(rel, c, (0.05 * size,) * 3), 0.4)
            blood = np.maximum(blood, spot * density(0.95))
    else:  # hypertension: compact dense deep ovoid (basal ganglia or thalamus), oedema rim
        if rng.random() < 0.6:
            c = np.array([0.0, 0.02, side * 0.28])
        else:
            c = np.array([0.06, 0.22, side * 0.11])
        c = c + rng.normal(0, jitter, 3)
        radii = np.array([0.17, 0.21, 0.15]) * size * rng.uniform(0.85, 1.15, 3)
        hem = _ellipsoid(rel, c, radii)
        blood = np.maximum(blood, _smoothstep(hem, 0.15) * density(1.15))
        rim = (hem >= 1.0) & (hem < 1.4)
        extra[rim & brain] = -12.0 * (1 - 0.5 * d)
    blood *= brain
    return np.clip(blood, 0.0, 1.3), extra


def _hemorrhage(rng, shape, d, label, offset) -> dict:
    head = _head(rng, shape, d, offset)
    tissue = head["tissue"]
    hu = _CT_HU[tissue]
    tex = _texture(rng, shape)
    soft = (tissue == GM) | (tissue == WM) | (tissue == DEEP)
    hu = hu + np.where(soft, 2.5 * tex, 0.0).astype(np.float32)
    hu = hu + np.where(tissue == SKULL, 120.0 * _field(rng, shape, 8), 0.0).astype(np.float32)
    blood, extra = _bleed(label, head, rng, shape, d)
    # a distractor of another class's style, smaller (patients bleed in more than one place)
    if rng.random() < 0.5 * d:
        other = int(rng.choice([c for c in range(4) if c != label]))
        b2, e2 = _bleed(other, head, rng, shape, d, scale=0.6)
        blood = np.maximum(blood, 0.8 * b2)
        extra = extra + e2
    # physiological calcifications (pineal gland, choroid plexus) in any class
    if rng.random() < 0.6 * d:
        pineal = _ellipsoid(head["rel"], (0.1, 0.3, 0.0), (0.03, 0.03, 0.03), squared=True) < 1
        extra[pineal & head["brain"]] += rng.uniform(60, 200)
    contrast = (55.0 - 30.0 * d) * rng.uniform(1.0 - 0.3 * d, 1.0 + 0.3 * d)
    blood_hu = 30.0 + contrast
    hu = hu * (1 - blood) + blood_hu * blood + extra
    hu = hu + 4.0 * _lowfreq(rng, shape, 0.4) * (tissue != AIR)  # low-frequency cupping
    hu = _blur(hu, 0.6)
    hu = hu + _noise(rng, shape, 3.0 + 12.0 * d)
    return {"hu": hu, "mask": (blood > 0.3).astype(np.int64)}


# ----------------------------------------------------------------------------- tumour
def _tumour(rng, shape, d, offset) -> dict:
    head = _head(rng, shape, d, offset)
    tissue, rel, brain = head["tissue"], head["rel"], head["brain"]
    # site: inside the brain, off-centre in one hemisphere, away from the ventricles' middle
    u = rng.normal(0, 1, 3)
    u /= np.linalg.norm(u)
    c = u * rng.uniform(0.25, 0.5)
    re = rng.uniform(0.18, 0.32) * float(np.exp(rng.normal(0, 0.1 + 0.2 * d)))
    warp_e = 1.0 + 0.25 * _field(rng, shape, 4)
    r_oedema = _ellipsoid(rel, c, re * rng.uniform(0.85, 1.15, 3)) * warp_e
    rc = re * rng.uniform(0.40, 0.65)
    c_core = c + rng.normal(0, 0.2 * rc, 3)
    warp_c = 1.0 + 0.15 * _field(rng, shape, 5)
    r_core = _ellipsoid(rel, c_core, rc * rng.uniform(0.85, 1.15, 3)) * warp_c
    rim = rng.uniform(0.25, 0.5)
    mask = np.zeros(shape, dtype=np.int64)
    mask[(r_oedema < 1) & brain & (tissue != CSF)] = 2
    core = (r_core < 1) & brain
    mask[core] = 3
    if rng.random() < 0.75:  # a necrotic centre inside the enhancing rim
        mask[core & (r_core < 1 - rim)] = 1
    # intensities per channel
    img = np.ascontiguousarray(np.moveaxis(_MR[tissue], -1, 0))
    tex = _texture(rng, shape)
    soft = (tissue == GM) | (tissue == WM) | (tissue == DEEP)
    img += (0.03 * tex * soft)[None]
    towards = 0.5 * d  # difficulty pulls tumour tissue towards white matter
    for value, row in ((1, 0), (2, 1), (3, 2)):
        sel = mask == value
        target = (1 - towards) * _MR_TUMOUR[row] + towards * _MR[WM]
        img[:, sel] = target[:, None] * (1 + 0.05 * tex[sel])[None]
    img = np.stack([_blur(ch, 0.6) for ch in img])
    bias_amp = 0.10 + 0.20 * d
    sigma = 0.02 + 0.06 * d
    noise = _noise(rng, img.shape, sigma)
    # The imaginary part reuses the same draws shifted by an odd number of voxels: at every voxel
    # the real and imaginary noise are then still independent, at half the cost of a second draw.
    im_all = np.roll(noise.reshape(-1), 7919).reshape(img.shape)
    for k in range(img.shape[0]):
        bias = np.exp(bias_amp * _lowfreq(rng, shape, 0.4))
        re_n = img[k] * bias + noise[k]
        im_n = im_all[k]
        img[k] = np.sqrt(re_n * re_n + im_n * im_n)  # Rician magnitude
    return {"mr": img.astype(np.float32), "mask": mask}


# ----------------------------------------------------------------------------- nodule
def _nodule(rng, shape, d, label, offset) -> dict:
    cd, ch, cw = (np.arange(n, dtype=np.float32) - (n - 1) / 2 for n in shape)  # mm at 1 mm
    cd, ch, cw = cd[:, None, None], ch[None, :, None], cw[None, None, :]
    hu = -860.0 + 30.0 * _field(rng, shape, 8) + 15.0 * _field(rng, shape, 16)
    hu = np.broadcast_to(hu, shape).astype(np.float32).copy()
    ext = np.array(shape, dtype=np.float32)
    # chest wall on one side (a half-space with a smooth, curved boundary)
    if rng.random() < 0.3:
        axis = int(rng.integers(1, 3))
        sign = rng.choice([-1.0, 1.0])
        coord = (cd, ch, cw)[axis] * sign
        curve = 3.0 * _lowfreq(rng, shape, 0.5)
        wall = _smoothstep((ext[axis] / 2 - rng.uniform(4, 14) - coord + curve) / 1.0 + 1, 1.0)
        hu = hu * (1 - wall) + 40.0 * wall
    # vessels: soft tubes along random lines
    for _ in range(int(rng.integers(3, 9))):
        p = (rng.uniform(-0.5, 0.5, 3) * ext).astype(np.float32)
        v = rng.normal(0, 1, 3)
        v = (v / np.linalg.norm(v)).astype(np.float32)
        rel = (cd - p[0], ch - p[1], cw - p[2])
        along = rel[0] * v[0] + rel[1] * v[1] + rel[2] * v[2]
        dist2 = sum(r * r for r in rel) - along * along
        rad = rng.uniform(0.6, 2.0)
        occ = _smoothstep(np.sqrt(np.maximum(dist2, 0)) / rad, 0.5)
        hu = hu * (1 - occ) + 30.0 * occ
    # the nodule, centred with a small offset
    c = (rng.normal(0, 1.5, 3) + np.asarray(offset)).astype(np.float32)
    rel = (cd - c[0], ch - c[1], cw - c[2])
    dist = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2) + 1e-6
    u = [r / dist for r in rel]
    spread = 0.25 + 0.15 * d
    atypical = rng.random() < 0.3 * d
    malignant_look = (label == 1) != atypical
    if label == 1:
        radius = 7.0 * (1 - 0.2 * d) * float(np.exp(rng.normal(0, spread)))
    else:
        radius = 4.0 * (1 + 0.35 * d) * float(np.exp(rng.normal(0, spread)))
    radius = float(np.clip(radius, 2.0, min(shape) / 2 - 4))
    shape_term = np.zeros(shape, dtype=np.float32)
    lob_amp = (0.12 + 0.12 * rng.random()) * (1 - 0.5 * d) if malignant_look else 0.04
    for _ in range(3):
        w = rng.normal(0, 1, 3)
        w = (w / np.linalg.norm(w)).astype(np.float32)
        dot = u[0] * w[0] + u[1] * w[1] + u[2] * w[2]
        shape_term += lob_amp * rng.choice([-1.0, 1.0]) * (2 * dot * dot - 1)
    if malignant_look:
        n_spikes = int(rng.integers(6, 16))
        amp = rng.uniform(0.6, 1.2) * (1 - 0.6 * d)
        for _ in range(n_spikes):
            w = rng.normal(0, 1, 3)
            w = (w / np.linalg.norm(w)).astype(np.float32)
            dot = np.maximum(u[0] * w[0] + u[1] * w[1] + u[2] * w[2], 0)
            d4 = dot * dot
            d4 *= d4
            d8 = d4 * d4
            d16 = d8 * d8
            shape_term += np.float32(amp) * (d16 * d16 * d16 * d8 * d4)  # dot**60, by squaring
    r_n = dist / (radius * (1 + shape_term))
    solid = _smoothstep(r_n, 0.15)
    nodule_hu = rng.uniform(10, 50)
    mask = r_n < 1
    if malignant_look and rng.random() < 0.3:  # part-solid: ground-glass halo around a smaller core
        ggo = _smoothstep(dist / (radius * 1.6 * (1 + shape_term)), 0.2)
        hu = hu * (1 - ggo) + (-450.0) * ggo
        mask |= dist < radius * 1.6 * (1 + shape_term)
    hu = hu * (1 - solid) + nodule_hu * solid
    if (not malignant_look) and rng.random() < 0.35 * (1 - d):  # benign calcification
        calc = _smoothstep(dist / (radius * rng.uniform(0.3, 0.7)), 0.3)
        hu = hu + rng.uniform(200, 600) * calc
    hu = _blur(hu, 0.7)
    hu = hu + _noise(rng, shape, 15.0 + 45.0 * d)
    return {"hu": hu, "mask": mask.astype(np.int64)}


# ----------------------------------------------------------------------------- public API
def make_phantom(
    kind: str,
    seed: int = 0,
    size=64,
    difficulty: float = 0.5,
    *,
    label: int | None = None,
    normalize: bool = True,
    offset=0.0,
) -> dict:
    """Generate one phantom volume, deterministically from ``seed``.

    Parameters
    ----------
    kind : {"hemorrhage", "tumour", "nodule"}
        See the module docstring.
    seed : int
        Everything random comes from ``numpy.random.default_rng(seed)``.
    size : int or (D, H, W)
        Volume shape (each side >= 8); 64 is the CPU default. Nodule patches are at 1 mm per voxel;
        heads span the volume whatever its size.
    difficulty : float in [0, 1]
        Contrast, noise, overlap between classes; see the module docstring's table.
    label : int, optional
        Class to draw (classification kinds); default: drawn from the seed.
    normalize : bool
        CT kinds: window to [-1, 1] (brain window level 40 / width 120 HU, lung window -600 / 1500);
        tumour: each channel by :func:`~rubikkit.data.intensity.minmax_to_unit`. False returns HU
        (CT) or raw MR intensities (white matter ~0.8).
    offset : float or 3 floats
        Move the head's centre (the nodule's, for ``"nodule"``) that many voxels (D, H, W; any
        sign, 1 mm each) off the volume's centre, e.g. to pre-train a cube puzzle on volumes whose
        grid of cubes is not centred on the anatomy; the field of view stays, so a head moved far
        loses a slice of itself at one side. Every draw is the same as without it. The centre must
        stay inside the volume.

    Returns
    -------
    dict
        ``image`` : (C, D, H, W) float32 (C = 1, or 4 for tumour: T1, T1c, T2, FLAIR);
        ``label`` : int class index, or None for tumour;
        ``mask`` : (D, H, W) int64: the lesion (0/1) for hemorrhage and nodule, the tumour labels
        0 background, 1 necrosis, 2 oedema, 3 enhancing for tumour;
        ``spacing`` : (1.0, 1.0, 1.0); ``kind`` : str.
    """
    k = _kind(kind)
    shape = _size3(size)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    difficulty = float(difficulty)
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty: expected a number in [0, 1], got {difficulty}")
    off = _offset3(offset, shape)
    rng = np.random.default_rng(int(seed))
    n_classes = len(KINDS[k]) if k != "tumour" else 0
    drawn = int(rng.integers(0, n_classes)) if n_classes else None
    if label is not None:
        if k == "tumour":
            raise ValueError("label: tumour phantoms are for segmentation and take no label")
        if not 0 <= int(label) < n_classes:
            raise ValueError(f"label: expected 0..{n_classes - 1} for {k}, got {label}")
        drawn = int(label)
    if k == "hemorrhage":
        out = _hemorrhage(rng, shape, difficulty, drawn, off)
        image = window_ct(out["hu"], *BRAIN_WINDOW) if normalize else out["hu"]
        image = image[None]
    elif k == "nodule":
        out = _nodule(rng, shape, difficulty, drawn, off)
        image = window_ct(out["hu"], *LUNG_WINDOW) if normalize else out["hu"]
        image = image[None]
    else:
        out = _tumour(rng, shape, difficulty, off)
        image = np.stack([minmax_to_unit(c) for c in out["mr"]]) if normalize else out["mr"]
    return {
        "image": np.ascontiguousarray(image, dtype=np.float32),
        "label": drawn,
        "mask": out["mask"],
        "spacing": (1.0, 1.0, 1.0),
        "kind": k,
    }


SPLIT_OFFSETS = {"train": 0, "all": 0, "val": 1_000_000, "test": 2_000_000}


class PhantomDataset(VolumeDataset):
    """A dataset of phantoms generated lazily, item ``i`` from seed ``seed + split_offset + i``.

    Parameters
    ----------
    kind : {"hemorrhage", "tumour", "nodule"}
    n : int
        Number of items.
    size : int or (D, H, W)
        Volume shape, default 64.
    seed : int
        Base seed. Splits use disjoint seed ranges (offsets 0, 1,000,000, 2,000,000 for train, val,
        test), so a model never sees a test volume in training.
    difficulty : float in [0, 1]
        See :func:`make_phantom`.
    split : {"train", "val", "test", "all"}
        ``"all"`` is the train range.
    offset : float or 3 floats
        Move every item's head (or nodule) that many voxels (D, H, W) off the volume's centre; see
        :func:`make_phantom`. Default 0: centred, the items as they were before the option existed.
    labels : {"raw", "whole", "core", "enhancing"}
        Tumour only: raw mask (0 background, 1 necrosis, 2 oedema, 3 enhancing) or a binary region.
    return_mask : bool
        Classification kinds: also return the lesion mask as ``mask`` (e.g. to score lesion
        candidates). Tumour always returns its mask.
    cache : bool or None
        Keep generated items in memory (default: when they take under 512 MB).
    transform : callable, optional
        Applied to the item dict.

    Notes
    -----
    Classes are balanced and interleaved: item ``i`` has label ``i % n_classes``, so ``labels`` is
    known without generating anything.
    """

    def __init__(
        self,
        kind: str = "hemorrhage",
        n: int = 100,
        size=64,
        seed: int = 0,
        difficulty: float = 0.5,
        split: str = "train",
        *,
        labels: str = "raw",
        offset=0.0,
        return_mask: bool = False,
        cache: bool | None = None,
        normalize: bool = True,
        transform=None,
    ):
        self.kind = _kind(kind)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split: expected one of {tuple(SPLIT_OFFSETS)}, got {split!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self.n = int(n)
        self.size = _size3(size)
        self.offset = _offset3(offset, self.size)
        self.seed = int(seed)
        self.difficulty = float(difficulty)
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty: expected a number in [0, 1], got {difficulty}")
        self.split = split
        self.name = f"phantoms:{self.kind}"
        self.normalize = normalize
        self.transform = transform
        self.return_mask = bool(return_mask)
        if self.kind == "tumour":
            self.task = "segmentation"
            self.label_mode = labels
            merge_labels(np.zeros((1, 1, 1), dtype=np.int64), labels, "phantom")  # validates
            self.class_names = label_class_names(labels, "phantom")
            self.num_channels = 4
            self.labels = None
        else:
            self.task = "classification"
            self.label_mode = "raw"
            self.class_names = list(KINDS[self.kind])
            self.num_channels = 1
            self.labels = np.arange(self.n, dtype=np.int64) % len(self.class_names)
        nbytes = self.n * self.num_channels * int(np.prod(self.size)) * 4
        self.cache = nbytes < 512 * 2**20 if cache is None else bool(cache)
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.n

    def seed_of(self, index: int) -> int:
        """The generator seed of item ``index``."""
        return self.seed + SPLIT_OFFSETS[self.split] + int(index)

    def _item(self, index: int) -> dict:
        if index in self._cache:
            return self._cache[index]
        label = None if self.labels is None else int(self.labels[index])
        ph = make_phantom(
            self.kind,
            self.seed_of(index),
            self.size,
            self.difficulty,
            label=label,
            normalize=self.normalize,
            offset=self.offset,
        )
        item = {"image": ph["image"], "id": f"{self.kind}-{self.split}-{index:05d}"}
        if self.task == "classification":
            item["label"] = label
            if self.return_mask:
                item["mask"] = ph["mask"]
        else:
            item["mask"] = merge_labels(ph["mask"], self.label_mode, "phantom")
        if self.cache:
            self._cache[index] = item
        return item

    def class_counts(self) -> dict[str, int]:
        if self.task == "classification":
            return super().class_counts()
        return super().class_counts()


def save_phantom_folder(
    dest,
    kind: str = "hemorrhage",
    n=(70, 10, 20),
    size=64,
    seed: int = 0,
    difficulty: float = 0.5,
    *,
    progress: bool = True,
) -> dict:
    """Write a phantom dataset as NIfTI files + ``labels.csv`` + ``dataset.json`` (``nifti:`` layout).

    Layout::

        dest/images/<kind>-<split>-<i>.nii.gz   (C, D, H, W) float32 volume, 1 mm voxels
        dest/masks/<kind>-<split>-<i>.nii.gz    (D, H, W) uint8 lesion / tumour labels
        dest/labels.csv                         file, mask, split [, label, class_name]
        dest/dataset.json                       kind, class_names, task and the generator options

    Every file is written atomically; a re-run with the same options skips the files already
    there (so an interrupted run resumes), and a run with other options rewrites them.

    Parameters
    ----------
    dest : str or Path
    kind : {"hemorrhage", "tumour", "nodule"}
    n : int or (n_train, n_val, n_test)
        Items per split (an int: that many train items, no val / test).
    size, seed, difficulty : as in :class:`PhantomDataset`.
    progress : bool
        tqdm progress bar.

    Returns
    -------
    dict
        ``{"written": int, "skipped": int, "dest": Path}``.
    """
    import json
    import os
    from pathlib import Path

    import pandas as pd
    from tqdm.auto import tqdm

    from rubikkit.data.io import atomic_path, save_nifti

    k = _kind(kind)
    counts = (int(n), 0, 0) if isinstance(n, (int, np.integer)) else tuple(int(v) for v in n)
    if len(counts) != 3 or min(counts) < 0 or sum(counts) < 1:
        raise ValueError(f"n: expected a positive int or 3 counts (train, val, test), got {n!r}")
    dest = Path(dest).expanduser()
    options = {
        "kind": k,
        "n": list(counts),
        "size": list(_size3(size)),
        "seed": int(seed),
        "difficulty": float(difficulty),
        "generator": 1,
    }
    meta_path = dest / "dataset.json"
    same = False
    if meta_path.is_file():
        try:
            same = json.loads(meta_path.read_text()).get("options") == options
        except ValueError:
            same = False
    datasets = {
        split: PhantomDataset(
            k, n=c, size=size, seed=seed, difficulty=difficulty, split=split, return_mask=True
        )
        for split, c in zip(("train", "val", "test"), counts)
        if c > 0
    }
    rows, written, skipped = [], 0, 0
    total = sum(len(ds) for ds in datasets.values())
    with tqdm(total=total, desc=f"phantoms:{k}", disable=not progress) as bar:
        for split, ds in datasets.items():
            for i in range(len(ds)):
                name = f"{k}-{split}-{i:05d}.nii.gz"
                img_path, mask_path = dest / "images" / name, dest / "masks" / name
                row = {"file": f"images/{name}", "mask": f"masks/{name}", "split": split}
                if ds.labels is not None:
                    row["label"] = int(ds.labels[i])
                    row["class_name"] = ds.class_names[int(ds.labels[i])]
                rows.append(row)
                if same and img_path.is_file() and mask_path.is_file():
                    skipped += 1
                else:
                    item = ds._item(i)
                    save_nifti(img_path, item["image"])
                    save_nifti(mask_path, np.asarray(item["mask"], dtype=np.uint8))
                    written += 1
                bar.update(1)
    with atomic_path(dest / "labels.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    first = next(iter(datasets.values()))
    info = {
        "kind": k,
        "task": first.task,
        "class_names": first.class_names if first.task == "classification" else KINDS["tumour"],
        "channels": list(MODALITIES) if k == "tumour" else ["ct"],
        "spacing_mm": [1.0, 1.0, 1.0],
        "options": options,
    }
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + os.linesep)
    return {"written": written, "skipped": skipped, "dest": dest}
