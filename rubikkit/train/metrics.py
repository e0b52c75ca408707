"""Target-task metrics: accuracy, balanced accuracy and ROC AUC for classification; IoU, mIoU and
Dice for segmentation.

Classification metrics take the true class of every item and the predicted class probabilities;
segmentation metrics are computed from a confusion matrix accumulated over a whole split (voxels of
every volume counted together), so that a split's mIoU does not depend on how it was batched.

The Rubik's cube paper scores hemorrhage classification by accuracy and tumour segmentation by mIoU
(Zhuang et al. 2019, Sec. 3.1 and 3.2); TCPC adds ROC AUC (Zhou et al., Sec. 3.2).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "accuracy",
    "accuracy_at_threshold",
    "balanced_accuracy",
    "classification_metrics",
    "confusion_matrix",
    "dice",
    "iou_per_class",
    "mean_iou",
    "roc_auc",
    "segmentation_metrics",
    "validation_threshold",
]


def _numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - reported as a TypeError naming the argument
        raise TypeError(f"{name}: expected an array or tensor, got {type(x).__name__}") from exc


def _labels(y_true, n: int | None = None) -> np.ndarray:
    y = _numpy(y_true, "y_true")
    if y.ndim != 1:
        raise ValueError(f"y_true: expected a 1-D array of class indices, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true: expected integer class indices")
        y = y.astype(np.int64)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"y_true: {y.shape[0]} labels for {n} predictions")
    return y.astype(np.int64, copy=False)


def _predicted(y_pred) -> np.ndarray:
    p = _numpy(y_pred, "y_pred")
    if p.ndim == 2:
        p = p.argmax(axis=1)
    elif p.ndim != 1:
        raise ValueError(f"y_pred: expected (N,) classes or (N, K) scores, got shape {p.shape}")
    return p.astype(np.int64)


def accuracy(y_true, y_pred) -> float:
    """Fraction of items whose predicted class is the true class.

    Parameters
    ----------
    y_true : (N,) int array or tensor
        True class indices.
    y_pred : (N,) int array, or (N, K) scores
        Predicted class indices, or per-class scores / probabilities / logits (argmax is taken).

    Returns
    -------
    float
        In [0, 1]; NaN for N = 0.
    """
    p = _predicted(y_pred)
    y = _labels(y_true, p.shape[0])
    if y.size == 0:
        return float("nan")
    return float(np.mean(p == y))


def roc_auc(y_true, scores, n_classes: int | None = None) -> float:
    """Area under the ROC curve: binary, or the one-vs-rest mean over classes (macro).

    Parameters
    ----------
    y_true : (N,) int array or tensor
        True class indices in ``0 .. K - 1``.
    scores : (N,) array or (N, K) array
        Binary: the score of class 1 (or (N, 2) probabilities, column 1 is used). Multi-class:
        (N, K) class probabilities (rows summing to 1, as after a softmax).
    n_classes : int, optional
        K; default ``scores.shape[1]``.

    Returns
    -------
    float
        NaN when undefined (a split holding a single class, or a class absent from ``y_true`` in
        the one-vs-rest case: scikit-learn's ``roc_auc_score`` cannot score it).
    """
    from sklearn.metrics import roc_auc_score

    s = _numpy(scores, "scores").astype(np.float64)
    y = _labels(y_true, s.shape[0])
    if s.ndim == 1:
        k = 2
    elif s.ndim == 2:
        k = s.shape[1] if n_classes is None else int(n_classes)
        if s.shape[1] != k:
            raise ValueError(f"scores: {s.shape[1]} columns for n_classes={k}")
    else:
        raise ValueError(f"scores: expected (N,) or (N, K), got shape {s.shape}")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"y_true: class indices must lie in 0..{k - 1}")
    present = np.unique(y)
    if k == 2:
        if present.size < 2:
            return float("nan")
        return float(roc_auc_score(y, s if s.ndim == 1 else s[:, 1]))
    if present.size < k:
        return float("nan")
    sums = s.sum(axis=1, keepdims=True)
    if not np.allclose(sums, 1.0):
        # Scores that are not probabilities: one-vs-rest AUC only needs each column's ranking,
        # which a positive row scaling could change, so refuse rather than guess.
        raise ValueError("scores: one-vs-rest AUC needs class probabilities (rows summing to 1)")
    return float(roc_auc_score(y, s, multi_class="ovr", average="macro", labels=np.arange(k)))


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean over the true classes of the fraction of that class predicted correctly (recall).

    Unlike :func:`accuracy` it does not reward predicting the majority class: a head that predicts
    one class for every item scores 1/K, whatever the class balance.

    Parameters
    ----------
    y_true : (N,) int array or tensor
    y_pred : (N,) int array, or (N, K) scores (argmax is taken)

    Returns
    -------
    float
        Classes absent from ``y_true`` are left out of the mean; NaN for N = 0.
    """
    p = _predicted(y_pred)
    y = _labels(y_true, p.shape[0])
    if y.size == 0:
        return float("nan")
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))


def _binary_scores(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    s = _numpy(scores, "scores").astype(np.float64)
    if s.ndim == 2:
        if s.shape[1] != 2:
            raise ValueError(f"scores: a threshold needs two classes, got {s.shape[1]} columns")
        s = s[:, 1]
    elif s.ndim != 1:
        raise ValueError(f"scores: expected (N,) or (N, 2), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores: expected finite numbers")
    y = _labels(y_true, s.shape[0])
    if y.size and (y.min() < 0 or y.max() > 1):
        raise ValueError("y_true: a threshold needs binary labels (0 or 1)")
    return y, s


def accuracy_at_threshold(y_true, scores, threshold: float) -> float:
    """Accuracy when an item is called class 1 if its class-1 score is at least ``threshold``.

    Parameters
    ----------
    y_true : (N,) array of 0 and 1
    scores : (N,) class-1 scores, or (N, 2) class probabilities (column 1 is used)
    threshold : float

    Returns
    -------
    float
        NaN for N = 0.
    """
    y, s = _binary_scores(y_true, scores)
    if y.size == 0:
        return float("nan")
    return float(np.mean((s >= float(threshold)).astype(np.int64) == y))


def validation_threshold(y_true, scores, default: float = 0.5) -> float:
    """The threshold on the class-1 score that maximises accuracy on these (validation) items.

    Selecting a fine-tuned model by validation AUC rewards ranking, not the 0.5 cut of the softmax:
    a model picked early in training can rank the test items well and still call most of them one
    class. Choosing the cut on the validation split, where the model was selected, and applying it
    unchanged to the test split separates the two (the ``acc_val_thr`` metric of
    :func:`rubikkit.train.evaluate`).

    Candidates are the midpoints between consecutive distinct scores, plus one cut below and one
    above all of them; of the cuts with the best accuracy, the one closest to ``default`` is
    returned (so a split that cannot tell the cuts apart keeps the usual 0.5).

    Parameters
    ----------
    y_true : (N,) array of 0 and 1
    scores : (N,) class-1 scores, or (N, 2) class probabilities
    default : float

    Returns
    -------
    float
        ``default`` when N = 0.
    """
    y, s = _binary_scores(y_true, scores)
    if y.size == 0:
        return float(default)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    # Cut i calls items i.. positive: correct = negatives before i + positives from i on.
    neg_before = np.concatenate([[0], np.cumsum(y == 0)])
    pos_from = np.concatenate([np.cumsum((y == 1)[::-1])[::-1], [0]])
    correct = neg_before + pos_from
    mid = (s[:-1] + s[1:]) / 2
    mid = np.where(mid > s[:-1], mid, s[1:])  # adjacent floats: the midpoint rounds down
    cuts = np.concatenate([[s[0]], mid, [np.nextafter(s[-1], np.inf)]])
    valid = np.concatenate([[True], s[:-1] < s[1:], [True]])  # tied scores cannot be split
    best = correct[valid].max()
    candidates = cuts[valid & (correct == best)]
    return float(candidates[np.argmin(np.abs(candidates - default))])


def classification_metrics(y_true, probs) -> dict[str, float]:
    """Accuracy, balanced accuracy, ROC AUC and the share of the most-predicted class.

    Parameters
    ----------
    y_true : (N,) int array or tensor
    probs : (N, K) array or tensor
        Class probabilities (softmax of the logits).

    Returns
    -------
    dict
        ``acc``, ``bal_acc`` (:func:`balanced_accuracy`), ``auc`` (NaN when undefined, see
        :func:`roc_auc`), ``top_share``, the fraction of items predicted as the class predicted
        most often: 1.0 means the head predicts one class for everything (collapse), whatever
        the AUC of its scores, and ``majority_acc``, the accuracy of calling every item the most
        frequent true class (the ACC a model must beat on an imbalanced split).
    """
    p = _numpy(probs, "probs")
    if p.ndim != 2:
        raise ValueError(f"probs: expected (N, K) class probabilities, got shape {p.shape}")
    pred = _predicted(p)
    y = _labels(y_true, p.shape[0])

    def largest_share(classes):  # of the most frequent class among ``classes``
        return float(np.bincount(classes, minlength=p.shape[1]).max() / classes.size)

    return {
        "acc": accuracy(y, p),
        "bal_acc": balanced_accuracy(y, pred),
        "auc": roc_auc(y, p),
        "top_share": largest_share(pred) if pred.size else math.nan,
        "majority_acc": largest_share(y) if y.size else math.nan,
    }


def confusion_matrix(pred, target, n_classes: int) -> torch.Tensor:
    """Voxel confusion matrix ``C[t, p]`` = number of voxels of true class t predicted as p.

    Parameters
    ----------
    pred : int tensor of any shape
        Predicted class per voxel (e.g. ``logits.argmax(1)``, shape (B, D, H, W)).
    target : int tensor, same shape
        True class per voxel.
    n_classes : int

    Returns
    -------
    (n_classes, n_classes) int64 tensor on ``pred``'s device
    """
    if not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes: expected a positive int, got {n_classes!r}")
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target, device=pred.device)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred: shape {tuple(pred.shape)} differs from target {tuple(target.shape)}"
        )
    p = pred.reshape(-1).long()
    t = target.reshape(-1).long()
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= n_classes):
        raise ValueError(f"pred: class indices must lie in 0..{n_classes - 1}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(f"target: class indices must lie in 0..{n_classes - 1}")
    flat = torch.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _confusion(conf) -> np.ndarray:
    c = _numpy(conf, "confusion").astype(np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion: expected a square (K, K) matrix, got shape {c.shape}")
    return c


def iou_per_class(confusion) -> np.ndarray:
    """Intersection over union of every class, ``TP / (TP + FP + FN)``.

    Parameters
    ----------
    confusion : (K, K) array or tensor
        From :func:`confusion_matrix` (rows true class, columns prediction).

    Returns
    -------
    (K,) float64 array
        NaN for a class that is neither present nor predicted (0 / 0).
    """
    c = _confusion(confusion)
    tp = np.diag(c)
    union = c.sum(axis=0) + c.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion, ignore_background: bool = False) -> float:
    """Mean of :func:`iou_per_class` over the classes where it is defined (mIoU).

    ``ignore_background`` leaves out class 0. The Rubik's cube paper reports mIoU over the tumour
    classes and background alike (after Long et al., FCN, ref. [2] there), the default.
    """
    iou = iou_per_class(confusion)
    if ignore_background:
        iou = iou[1:]
    iou = iou[~np.isnan(iou)]
    return float(iou.mean()) if iou.size else float("nan")


def dice(confusion, ignore_background: bool = True) -> np.ndarray:
    """Dice coefficient of every class, ``2 TP / (2 TP + FP + FN)``.

    Parameters
    ----------
    confusion : (K, K) array or tensor
    ignore_background : bool
        Drop class 0 from the result (Dice is usually quoted for the foreground classes).

    Returns
    -------
    (K,) or (K - 1,) float64 array; NaN for a class neither present nor predicted.
    """
    c = _confusion(confusion)
    tp = np.diag(c)
    denom = c.sum(axis=0) + c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
    return d[1:] if ignore_background and d.size > 1 else d


def segmentation_metrics(confusion, class_names=None) -> dict[str, float]:
    """mIoU, mean foreground Dice, voxel accuracy and per-class IoU / Dice from a confusion matrix.

    Returns
    -------
    dict
        ``miou``, ``dice`` (mean over foreground classes), ``voxel_acc``, and ``iou/<name>``,
        ``dice/<name>`` for every class (``name`` from ``class_names`` or the class index).
        Undefined entries are NaN.
    """
    c = _confusion(confusion)
    k = c.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"class_names: {len(names)} names for {k} classes")
    iou = iou_per_class(c)
    d = dice(c, ignore_background=False)
    fg = d[1:] if k > 1 else d
    fg = fg[~np.isnan(fg)]
    total = c.sum()
    out = {
        "miou": mean_iou(c),
        "dice": float(fg.mean()) if fg.size else float("nan"),
        "voxel_acc": float(np.trace(c) / total) if total > 0 else float("nan"),
    }
    for i, name in enumerate(names):
        out[f"iou/{name}"] = float(iou[i])
    for i, name in enumerate(names):
        out[f"dice/{name}"] = float(d[i])
    return out


def finite(value: float) -> bool:
    """True for a finite number (metrics may be NaN when undefined on a split)."""
    return isinstance(value, (int, float)) and math.isfinite(value)
