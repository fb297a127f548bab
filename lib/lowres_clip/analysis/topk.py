"""Most confident successes and failures of a run, overall or per class, as tables and image grids.

* correct predictions are ranked by the logit of their true class (highest similarity first);
* incorrect predictions are ranked by the logit of the wrongly predicted class (the most
  confident mistakes first).

Figures show each image (and, given an :class:`~lowres_clip.analysis.attention.AttentionSource`,
its attention map for the predicted class); without a model they work from the predictions alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax

from .. import plots
from .metrics import validate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..runs import Predictions
    from .attention import AttentionSource

SHOW = ("incorrect", "correct")


class UnknownClassError(ValueError):
    """A class given by name or index is not one of the run's classes."""


def class_index(pred: "Predictions", cls: int | str) -> int:
    """Index of a class given by index or name (raises :class:`UnknownClassError`)."""
    c = len(pred.classnames)
    if isinstance(cls, (int, np.integer)):
        if not 0 <= int(cls) < c:
            raise UnknownClassError(f"class index {cls} out of range [0, {c})")
        return int(cls)
    if cls in pred.classnames:
        return list(pred.classnames).index(cls)
    raise UnknownClassError(f"unknown class {cls!r}; classes: {list(pred.classnames)}")


def sample_table(pred: "Predictions") -> pd.DataFrame:
    """One row per test sample: ``index, path, label, class, pred, pred_class, correct, true_logit,
    pred_logit, p_true, p_pred`` (probabilities are ``softmax(logits)``)."""
    validate(pred)
    n = len(pred.labels)
    rows = np.arange(n)
    preds = pred.preds
    probs = softmax(pred.logits.astype(np.float64), axis=1)
    names = np.asarray(pred.classnames, dtype=object)
    return pd.DataFrame({
        "index": rows,
        "path": list(pred.paths),
        "label": pred.labels,
        "class": names[pred.labels] if n else [],
        "pred": preds,
        "pred_class": names[preds] if n else [],
        "correct": preds == pred.labels,
        "true_logit": pred.logits[rows, pred.labels],
        "pred_logit": pred.logits[rows, preds],
        "p_true": probs[rows, pred.labels],
        "p_pred": probs[rows, preds],
    })


def top_k(pred: "Predictions", k: int = 8, correct: bool = False, cls: int | str | None = None,
          per_class: bool = False) -> pd.DataFrame:
    """The ``k`` most confident correct (``correct=True``) or incorrect predictions.

    Args:
        pred: a run's predictions.
        k: rows to keep (per class when ``per_class``).
        correct: rank correct predictions by their true-class logit, or (default) incorrect ones by
            the logit of the wrongly predicted class.
        cls: only samples whose *true* class is ``cls`` (index or name).
        per_class: keep the top ``k`` of every true class (rows ordered by class, then score).

    Returns:
        :func:`sample_table` rows plus ``score`` (the ranking logit), best first.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    df = sample_table(pred)
    df = df[df["correct"] == bool(correct)].copy()
    df["score"] = df["true_logit"] if correct else df["pred_logit"]
    if cls is not None:
        df = df[df["label"] == class_index(pred, cls)]
    df = df.sort_values(["score", "index"], ascending=[False, True], kind="stable")
    if per_class:
        df = df.groupby("label", sort=True, group_keys=False).head(k).sort_values(
            ["label", "score", "index"], ascending=[True, False, True], kind="stable")
    else:
        df = df.head(k)
    return df.reset_index(drop=True)


def load_image(image_root: str | Path, path: str) -> Any:
    """Open an image as PIL RGB; a missing or unreadable file gives a grey placeholder and a warning
    (so predictions whose images are not on this machine still give figures)."""
    from PIL import Image, UnidentifiedImageError

    full = Path(image_root) / path
    try:
        with Image.open(full) as im:
            return im.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        warnings.warn(f"cannot read image {full} ({type(exc).__name__}); showing a placeholder", stacklevel=2)
        return Image.new("RGB", (64, 64), (128, 128, 128))


def sample_title(row: Any, width: int = 28) -> str:
    """Two-line panel title: true class, and predicted class with its probability."""
    def short(s: str) -> str:
        return s if len(s) <= width else s[: width - 1] + "…"

    return f"true: {short(str(row['class']))}\npred: {short(str(row['pred_class']))} (p={row['p_pred']:.2f})"


def grid_figure(pred: "Predictions", rows: pd.DataFrame, attention: "AttentionSource | None" = None,
                target: str = "pred", ncols: int = 4, title: str | None = None,
                empty_message: str = "no samples") -> "Figure":
    """Image grid of the given :func:`top_k` / :func:`sample_table` rows.

    Args:
        pred: the run's predictions (for ``image_root``).
        rows: rows to show, in order.
        attention: when given, each image is shown with its attention map.
        target: class the attention map explains: ``pred`` (predicted class) or ``true``.
        ncols: samples per row.
        title: figure title (default: the run key).
        empty_message: text shown when ``rows`` is empty.
    """
    if target not in ("pred", "true"):
        raise ValueError(f"target must be 'pred' or 'true', got {target!r}")
    images = [load_image(pred.image_root, p) for p in rows["path"]]
    titles = [sample_title(r) for _, r in rows.iterrows()]
    heatmaps = None
    if attention is not None and len(rows):
        targets = [int(t) for t in rows["pred" if target == "pred" else "label"]]
        images, heatmaps = attention.explain(images, targets)
    return plots.image_grid(images, titles, heatmaps, ncols=ncols, title=title or pred.run_key,
                            empty_message=empty_message)


def topk_figure(pred: "Predictions", k: int = 8, correct: bool = False, cls: int | str | None = None,
                attention: "AttentionSource | None" = None, ncols: int = 4) -> "Figure":
    """Grid of the :func:`top_k` most confident correct/incorrect predictions (of one class or all)."""
    rows = top_k(pred, k, correct=correct, cls=cls)
    what = "correct" if correct else "incorrect"
    scope = "all classes" if cls is None else f"class {pred.classnames[class_index(pred, cls)]}"
    return grid_figure(pred, rows, attention, ncols=ncols,
                       title=f"{pred.run_key}: top-{k} {what} ({scope})",
                       empty_message=f"no {what} predictions for {scope}")


def write_topk(pred: "Predictions", k: int = 8, attention: "AttentionSource | None" = None,
               root: str | Path | None = None, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``topk_correct`` / ``topk_incorrect`` grids and per-class tables under ``figures/{run_key}/``."""
    paths: list[Path] = []
    for correct, name in ((True, "correct"), (False, "incorrect")):
        paths += plots.save_figure(topk_figure(pred, k, correct=correct, attention=attention), pred.run_key,
                                   f"topk_{name}", formats=formats, root=root)
        table = top_k(pred, k, correct=correct, per_class=True)
        paths += plots.save_table(table, pred.run_key, f"topk_{name}_per_class", formats=("csv",), root=root)
    return paths
