"""Training: self-supervised pre-training, fine-tuning, evaluation, metrics and checkpoints.

* :func:`pretrain` trains a backbone on a proxy task (:mod:`rubikkit.tasks`);
* :func:`finetune` transfers it into a classifier, U-Net or DUC and trains on (a fraction of) the
  labels;
* :func:`evaluate` scores a checkpoint on a split;
* :func:`proxy_ceiling` measures what a contrastive task's batches allow any model, untrained.

Each run folder holds ``config.json``, ``log.jsonl`` (one JSON object per epoch and split, read by
:func:`rubikkit.viz.plot_log`), ``last.pt``, ``best.pt`` and ``metrics.json`` (:func:`to_record`
turns it into a :mod:`rubikkit.results` record). The same functions run under
``torchrun --nproc_per_node=N -m rubikkit pretrain ...`` with DistributedDataParallel
(:mod:`.distributed`).
"""

from rubikkit.train.checkpoint import load_checkpoint, save_checkpoint
from rubikkit.train.evaluate import evaluate, load_model
from rubikkit.train.finetune import finetune, label_subset, load_init
from rubikkit.train.metrics import (
    accuracy,
    accuracy_at_threshold,
    balanced_accuracy,
    classification_metrics,
    confusion_matrix,
    dice,
    iou_per_class,
    mean_iou,
    roc_auc,
    segmentation_metrics,
    validation_threshold,
)
from rubikkit.train.pretrain import pretrain, proxy_ceiling
from rubikkit.train.runs import to_record

__all__ = [
    "accuracy",
    "accuracy_at_threshold",
    "balanced_accuracy",
    "classification_metrics",
    "confusion_matrix",
    "dice",
    "evaluate",
    "finetune",
    "iou_per_class",
    "label_subset",
    "load_checkpoint",
    "load_init",
    "load_model",
    "mean_iou",
    "pretrain",
    "proxy_ceiling",
    "roc_auc",
    "save_checkpoint",
    "segmentation_metrics",
    "to_record",
    "validation_threshold",
]
