"""Classification metrics of one run's :class:`~lowres_clip.runs.Predictions`.

Top-1, top-k and balanced (mean per-class recall) accuracy come from scikit-learn; the per-class
table, the head/medium/tail breakdown (long-tailed runs) and the confusion matrix (counts and
row-normalised, as data, table and figure) are built on :func:`sklearn.metrics.confusion_matrix`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .. import plots

if TYPE_CHECKING:
    from ..runs import Predictions

GROUP_ORDER = ("head", "medium", "tail")


class PredictionsError(ValueError):
    """Predictions are inconsistent or lack what an analysis needs; the message says what."""


def validate(pred: "Predictions") -> None:
    """Check shapes and label range of ``pred`` (raises :class:`PredictionsError`)."""
    logits = np.asarray(pred.logits)
    if logits.ndim != 2:
        raise PredictionsError(f"logits must be [N, C], got shape {logits.shape}")
    n, c = logits.shape
    if len(pred.labels) != n:
        raise PredictionsError(f"{n} logit rows but {len(pred.labels)} labels")
    if len(pred.classnames) != c:
        raise PredictionsError(f"{c} logit columns but {len(pred.classnames)} class names")
    if n and (pred.labels.min() < 0 or pred.labels.max() >= c):
        raise PredictionsError(f"labels must lie in [0, {c}); got range [{pred.labels.min()}, {pred.labels.max()}]")
    if pred.groups is not None and len(pred.groups) != c:
        raise PredictionsError(f"groups must have one entry per class ({c}), got {len(pred.groups)}")


def accuracy(pred: "Predictions") -> float:
    """Top-1 accuracy (:func:`sklearn.metrics.accuracy_score`)."""
    validate(pred)
    return float(skm.accuracy_score(pred.labels, pred.preds))


def top_k_accuracy(pred: "Predictions", k: int = 5) -> float:
    """Top-k accuracy (:func:`sklearn.metrics.top_k_accuracy_score`); NaN when ``k >= C`` (meaningless)."""
    validate(pred)
    c = len(pred.classnames)
    if k >= c:
        return float("nan")
    return float(skm.top_k_accuracy_score(pred.labels, pred.logits, k=k, labels=np.arange(c)))


def balanced_accuracy(pred: "Predictions") -> float:
    """Mean per-class recall over the classes present (:func:`sklearn.metrics.balanced_accuracy_score`)."""
    validate(pred)
    return float(skm.balanced_accuracy_score(pred.labels, pred.preds))


def per_class_table(pred: "Predictions") -> pd.DataFrame:
    """One row per class: ``index, class, correct, wrong, total, accuracy`` (+ ``group`` when known).

    ``accuracy`` is the class recall (NaN for a class with no test sample).
    """
    cm = confusion(pred).counts
    total = cm.sum(axis=1)
    correct = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(total > 0, correct / np.maximum(total, 1), np.nan)
    df = pd.DataFrame({
        "index": np.arange(len(pred.classnames)),
        "class": list(pred.classnames),
        "correct": correct.astype(int),
        "wrong": (total - correct).astype(int),
        "total": total.astype(int),
        "accuracy": acc,
    })
    if pred.groups is not None:
        df["group"] = list(pred.groups)
    return df


def group_table(pred: "Predictions") -> pd.DataFrame | None:
    """Head/medium/tail breakdown, or ``None`` when the run has no class groups.

    Columns: ``group, classes, correct, total, accuracy`` (over the group's samples) and
    ``balanced_accuracy`` (mean recall of the group's classes present in the test set).
    """
    if pred.groups is None:
        return None
    per = per_class_table(pred)
    rows = []
    names = [g for g in GROUP_ORDER if g in set(per["group"])] + sorted(set(per["group"]) - set(GROUP_ORDER))
    for g in names:
        sub = per[per["group"] == g]
        total = int(sub["total"].sum())
        correct = int(sub["correct"].sum())
        rows.append({
            "group": g,
            "classes": len(sub),
            "correct": correct,
            "total": total,
            "accuracy": correct / total if total else float("nan"),
            "balanced_accuracy": float(sub["accuracy"].mean()) if sub["accuracy"].notna().any() else float("nan"),
        })
    return pd.DataFrame(rows)


@dataclass
class ConfusionMatrix:
    """A confusion matrix with its class names (rows: true class, columns: predicted class).

    Attributes:
        counts: ``[C, C]`` integer counts.
        classnames: the ``C`` class names.
    """

    counts: np.ndarray
    classnames: list[str]

    @property
    def normalized(self) -> np.ndarray:
        """Row-normalised rates (each row sums to 1; rows of absent classes are 0)."""
        total = self.counts.sum(axis=1, keepdims=True)
        return self.counts / np.maximum(total, 1)

    def table(self, normalized: bool = False) -> pd.DataFrame:
        """The matrix as a DataFrame indexed by true class, columns by predicted class."""
        data = self.normalized if normalized else self.counts
        return pd.DataFrame(data, index=pd.Index(self.classnames, name="true"),
                            columns=pd.Index(self.classnames, name="predicted"))

    def figure(self, normalized: bool = True, backend: str = "matplotlib", title: str | None = None) -> Any:
        """Heatmap figure (``backend``: ``matplotlib`` or ``plotly``)."""
        data = self.normalized if normalized else self.counts
        if backend == "matplotlib":
            return plots.confusion_heatmap(data, self.classnames, normalized=normalized, title=title)
        if backend == "plotly":
            return plots.confusion_heatmap_plotly(data, self.classnames, normalized=normalized, title=title)
        raise ValueError(f"unknown backend {backend!r}; use 'matplotlib' or 'plotly'")

    def most_confused(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` largest off-diagonal cells: ``true, predicted, count, rate`` (rate of the true class)."""
        off = self.counts.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:n]
        rows = []
        for flat in order:
            i, j = np.unravel_index(flat, off.shape)
            if off[i, j] == 0:
                break
            rows.append({"true": self.classnames[i], "predicted": self.classnames[j],
                         "count": int(off[i, j]), "rate": float(self.normalized[i, j])})
        return pd.DataFrame(rows, columns=["true", "predicted", "count", "rate"])


def confusion(pred: "Predictions") -> ConfusionMatrix:
    """Confusion matrix over all ``C`` classes (:func:`sklearn.metrics.confusion_matrix`)."""
    validate(pred)
    c = len(pred.classnames)
    counts = skm.confusion_matrix(pred.labels, pred.preds, labels=np.arange(c))
    return ConfusionMatrix(counts=counts, classnames=list(pred.classnames))


def summary(pred: "Predictions") -> dict[str, float]:
    """Headline numbers: ``top1``, ``balanced``, ``top5`` (when ``C > 5``), ``n`` and per-group
    ``top1_{group}`` / ``balanced_{group}`` for long-tailed runs."""
    out: dict[str, float] = {"n": float(len(pred.labels)), "top1": accuracy(pred), "balanced": balanced_accuracy(pred)}
    if len(pred.classnames) > 5:
        out["top5"] = top_k_accuracy(pred, 5)
    groups = group_table(pred)
    if groups is not None:
        for row in groups.itertuples():
            out[f"top1_{row.group}"] = float(row.accuracy)
            out[f"balanced_{row.group}"] = float(row.balanced_accuracy)
    return out


def write_report(pred: "Predictions", root: str | Path | None = None,
                 formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Write a run's metric tables and figures under ``figures/{run_key}/``; returns the paths.

    Files: ``per_class.{csv,md}``, ``groups.{csv,md}`` (long-tailed runs), ``confusion_counts`` and
    ``confusion_normalized`` tables (CSV, Markdown) and heatmaps, ``per_class_accuracy`` bars,
    ``most_confused.{csv,md}``.
    """
    key = pred.run_key
    paths: list[Path] = []
    per = per_class_table(pred)
    paths += plots.save_table(per, key, "per_class", root=root)
    groups = group_table(pred)
    if groups is not None:
        paths += plots.save_table(groups, key, "groups", root=root)
    cm = confusion(pred)
    for norm, name in ((False, "confusion_counts"), (True, "confusion_normalized")):
        paths += plots.save_table(cm.table(normalized=norm), key, name, root=root, index=True)
        paths += plots.save_figure(cm.figure(normalized=norm), key, name, formats=formats, root=root)
    paths += plots.save_table(cm.most_confused(), key, "most_confused", root=root)
    paths += plots.save_figure(plots.per_class_accuracy_bars(per, title=f"per-class accuracy: {key}"),
                               key, "per_class_accuracy", formats=formats, root=root)
    return paths
