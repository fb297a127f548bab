"""Long-tail breakdown of one run by training shots, and measures of prediction collapse.

The head / medium / tail label of each class is not decided here: it comes with the run's split,
whose owner states the rule (:func:`lowres_clip.sampling.few_shot`: thirds of the class order for
long-tailed sampling; :meth:`lowres_clip.datasets.SplitDataset.natural_groups` for a naturally
long-tailed dataset such as Circuits). Every function takes them as ``groups``.

Collapse: a run that predicts few classes for everything. :func:`prediction_collapse` reports the
share of predictions given to the most-predicted class and the entropy of the predicted-class
distribution (nats, and divided by ``log C``: 1 when every class is predicted equally often, 0
when one class takes every prediction); the same numbers of the true labels are the reference
(an imbalanced test set has less than full entropy with perfect predictions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

GROUP_ORDER = ("head", "medium", "tail")

class LongTailInputError(ValueError):
    """Shots, labels or predictions are inconsistent; the message says what."""


def _check(shots, labels, preds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(shots)
    y = np.asarray(labels)
    p = np.asarray(preds)
    c = s.size
    if y.ndim != 1 or y.shape != p.shape or y.size == 0:
        raise LongTailInputError(f"labels and predictions must be 1-D, non-empty and of one length, got {y.shape} and {p.shape}")
    for name, v in (("labels", y), ("predictions", p)):
        if not np.issubdtype(v.dtype, np.integer) or v.min() < 0 or v.max() >= c:
            raise LongTailInputError(f"{name} must be integer classes in [0, {c}) (one class per shots entry)")
    return s, y, p


def per_class_recall(shots: Sequence[int], labels, preds, groups: Sequence[str] | None = None,
                     classnames: Sequence[str] | None = None) -> pd.DataFrame:
    """Recall of every class against its training shots.

    Columns: ``class`` (index), ``name`` (when ``classnames`` is given), ``shots``, ``group``
    (``groups``; ``""`` for every class without them, e.g. a balanced run), ``support`` (test images), ``correct``, ``recall``
    (NaN for classes without test images), ``predicted`` (test images predicted as the class).
    Rows sorted by shots, most first (ties: class index).
    """
    s, y, p = _check(shots, labels, preds)
    c = s.size
    g = [""] * c if groups is None else list(groups)
    if len(g) != c:
        raise LongTailInputError(f"groups must have one entry per class ({c}), got {len(g)}")
    support = np.bincount(y, minlength=c)
    correct = np.bincount(y[y == p], minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
    df = pd.DataFrame({"class": np.arange(c), "shots": s, "group": g, "support": support, "correct": correct,
                       "recall": recall, "predicted": np.bincount(p, minlength=c)})
    if classnames is not None:
        df.insert(1, "name", list(classnames))
    return df.sort_values(["shots", "class"], ascending=[False, True], kind="stable").reset_index(drop=True)


def group_accuracy(shots: Sequence[int], labels, preds, groups: Sequence[str]) -> pd.DataFrame:
    """Accuracy per group: ``group, classes, support, correct, accuracy`` (over the group's test
    images) and ``balanced_accuracy`` (mean recall of its classes with test images); groups in
    head, medium, tail order, empty groups left out."""
    per = per_class_recall(shots, labels, preds, groups)
    rows = []
    present = set(per["group"])
    for name in [x for x in GROUP_ORDER if x in present] + sorted(present - set(GROUP_ORDER)):
        sub = per[per["group"] == name]
        total, corr = int(sub["support"].sum()), int(sub["correct"].sum())
        rows.append({"group": name, "classes": len(sub), "support": total, "correct": corr,
                     "accuracy": corr / total if total else float("nan"),
                     "balanced_accuracy": float(sub["recall"].mean()) if sub["recall"].notna().any() else float("nan")})
    return pd.DataFrame(rows)


def _entropy(counts: np.ndarray) -> float:
    q = counts[counts > 0] / counts.sum()
    return float(-(q * np.log(q)).sum())


@dataclass(frozen=True)
class Collapse:
    """How concentrated a run's predictions are.

    Attributes:
        num_classes: ``C``.
        top_class: the most-predicted class (lowest index on ties).
        top_share: share of all predictions given to ``top_class``.
        entropy: entropy of the predicted-class distribution in nats.
        normalized_entropy: ``entropy / log C`` (NaN when ``C = 1``).
        label_top_share, label_normalized_entropy: the same of the true labels (the reference).
    """

    num_classes: int
    top_class: int
    top_share: float
    entropy: float
    normalized_entropy: float
    label_top_share: float
    label_normalized_entropy: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-able fields."""
        return {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in self.__dict__.items()}


def prediction_collapse(labels, preds, num_classes: int) -> Collapse:
    """Top-class share and entropy of the predictions (and of the labels, for reference).

    Args:
        labels: ``[N]`` true classes.
        preds: ``[N]`` predicted classes.
        num_classes: ``C`` (classes never predicted still count in ``log C``).
    """
    _, y, p = _check(np.zeros(num_classes), labels, preds)
    pc = np.bincount(p, minlength=num_classes)
    lc = np.bincount(y, minlength=num_classes)
    log_c = math.log(num_classes) if num_classes > 1 else float("nan")
    return Collapse(num_classes=num_classes, top_class=int(pc.argmax()), top_share=float(pc.max() / pc.sum()),
                    entropy=_entropy(pc), normalized_entropy=_entropy(pc) / log_c,
                    label_top_share=float(lc.max() / lc.sum()), label_normalized_entropy=_entropy(lc) / log_c)


@dataclass(frozen=True)
class LongTailSummary:
    """One run's long-tail numbers: ``accuracy``, ``balanced_accuracy`` (mean recall over classes
    with test images), per group ``groups`` (:func:`group_accuracy`) and ``collapse``."""

    accuracy: float
    balanced_accuracy: float
    groups: pd.DataFrame
    collapse: Collapse

    def to_dict(self) -> dict[str, float | int]:
        """Flat JSON-able dict: ``accuracy``, ``balanced_accuracy``, ``accuracy_{group}``,
        ``balanced_{group}`` and the collapse fields prefixed ``collapse_``."""
        out: dict[str, float | int] = {"accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy}
        for row in self.groups.itertuples():
            out[f"accuracy_{row.group}"] = float(row.accuracy)
            out[f"balanced_{row.group}"] = float(row.balanced_accuracy)
        out.update({f"collapse_{k}": v for k, v in self.collapse.to_dict().items()})
        return out


def longtail_summary(shots: Sequence[int], labels, preds, groups: Sequence[str]) -> LongTailSummary:
    """Accuracy, balanced accuracy, per-group accuracy and collapse of one run (``C = len(shots)``)."""
    per = per_class_recall(shots, labels, preds, groups)
    y, p = np.asarray(labels), np.asarray(preds)
    return LongTailSummary(accuracy=float((y == p).mean()), balanced_accuracy=float(per["recall"].mean()),
                           groups=group_accuracy(shots, labels, preds, groups),
                           collapse=prediction_collapse(labels, preds, len(per)))
