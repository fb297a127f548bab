"""What a method fixes: samples run A gets wrong and run B gets right, on the same test set.

Samples are ranked by the drop of predictive entropy from A to B: ``entropy_diff = H_A − H_B``
(``H = −Σ softmax(logits) log softmax(logits)``, in nats), largest first, so the top rows are the
fixed samples where A was most unsure and B is most sure. Regressions (right in A, wrong in B) are
``rank_improvements(b, a)``.

Runs must share the test set: same class list, same sample paths and labels in the same order;
otherwise :class:`MismatchedRunsError` is raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax
from scipy.stats import entropy as _entropy

from .. import plots
from .metrics import validate
from .topk import load_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..runs import Predictions
    from .attention import AttentionSource


class MismatchedRunsError(ValueError):
    """Two runs cannot be compared sample by sample (different classes or test sets)."""


def check_comparable(a: "Predictions", b: "Predictions") -> None:
    """Raise :class:`MismatchedRunsError` unless both runs have the same classes, paths and labels."""
    validate(a)
    validate(b)
    if list(a.classnames) != list(b.classnames):
        raise MismatchedRunsError(
            f"runs {a.run_key!r} and {b.run_key!r} have different class lists "
            f"({len(a.classnames)} vs {len(b.classnames)} classes); compare runs of the same dataset.")
    if len(a.paths) != len(b.paths) or list(a.paths) != list(b.paths):
        raise MismatchedRunsError(
            f"runs {a.run_key!r} ({len(a.paths)} samples, split {a.split!r}) and {b.run_key!r} "
            f"({len(b.paths)} samples, split {b.split!r}) were evaluated on different test sets (sample paths "
            "differ or are ordered differently); evaluate both on the same split.")
    if not np.array_equal(a.labels, b.labels):
        raise MismatchedRunsError(f"runs {a.run_key!r} and {b.run_key!r} disagree on the labels of the same samples.")


def softmax_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy (nats) of ``softmax(logits)`` per row; logits are used as given (CLIP's are already
    scaled by the logit scale)."""
    p = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return _entropy(p, axis=1)


def rank_improvements(a: "Predictions", b: "Predictions", k: int | None = None) -> pd.DataFrame:
    """Samples wrong in ``a`` and right in ``b``, ranked by ``entropy_diff = H_A − H_B``, largest first.

    Args:
        a: the baseline run (e.g. zero-shot).
        b: the compared run (e.g. LoRA) on the same test set.
        k: keep only the first ``k`` rows.

    Returns:
        Columns ``index, path, label, class, pred_a, class_a, pred_b, class_b, entropy_a, entropy_b,
        entropy_diff, p_true_a, p_true_b, p_pred_a`` (ties in ``entropy_diff`` keep sample order).
    """
    check_comparable(a, b)
    pa, pb = a.preds, b.preds
    idx = np.flatnonzero((pa != a.labels) & (pb == b.labels))
    ha, hb = softmax_entropy(a.logits), softmax_entropy(b.logits)
    proba = softmax(a.logits.astype(np.float64), axis=1)
    probb = softmax(b.logits.astype(np.float64), axis=1)
    names = np.asarray(a.classnames, dtype=object)
    y = a.labels[idx]
    df = pd.DataFrame({
        "index": idx,
        "path": [a.paths[i] for i in idx],
        "label": y,
        "class": names[y],
        "pred_a": pa[idx],
        "class_a": names[pa[idx]],
        "pred_b": pb[idx],
        "class_b": names[pb[idx]],
        "entropy_a": ha[idx],
        "entropy_b": hb[idx],
        "entropy_diff": ha[idx] - hb[idx],
        "p_true_a": proba[idx, y],
        "p_true_b": probb[idx, y],
        "p_pred_a": proba[idx, pa[idx]],
    })
    df = df.sort_values(["entropy_diff", "index"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return df if k is None else df.head(k)


def improvements_figure(
    a: "Predictions",
    b: "Predictions",
    table: pd.DataFrame | None = None,
    k: int = 6,
    attention_a: "AttentionSource | None" = None,
    attention_b: "AttentionSource | None" = None,
    top_classes: int = 3,
) -> "Figure":
    """The top ``k`` improvements: per row the image, optionally both runs' attention maps (A for its
    wrong prediction, B for its correct one), and both runs' probabilities of the classes that
    matter (true class and each run's top classes).

    Args:
        a, b: the two runs (see :func:`rank_improvements`).
        table: rows to show (default ``rank_improvements(a, b)``).
        k: rows shown.
        attention_a, attention_b: attention sources of the two runs' models (optional, independent).
        top_classes: classes per run added to the probability panel.
    """
    check_comparable(a, b)
    rows = (rank_improvements(a, b) if table is None else table).head(k)
    title = f"fixed by {b.run_key}\n(wrong in {a.run_key}; ranked by H_A − H_B)"
    if rows.empty:
        return plots.message_figure(f"{title}\nno sample is wrong in A and right in B", width=7.0)
    images = [load_image(a.image_root, p) for p in rows["path"]]
    shown = images
    panels: list[tuple[str, list]] = []
    for src, run, col in ((attention_a, "A", "pred_a"), (attention_b, "B", "pred_b")):
        if src is not None:
            shown, maps = src.explain(images, [int(t) for t in rows[col]])
            panels.append((run, maps))
    ncols = 2 + len(panels)
    fig = plots.new_figure(2.4 * ncols + 1.5, 2.3 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), ncols, squeeze=False, width_ratios=[1.0] * (ncols - 1) + [1.8])
    proba = softmax(a.logits.astype(np.float64), axis=1)
    probb = softmax(b.logits.astype(np.float64), axis=1)
    for r, (_, row) in enumerate(rows.iterrows()):
        ax = axes[r, 0]
        ax.imshow(np.asarray(shown[r]))
        ax.set_title(f"true: {row['class']}\nΔH={row['entropy_diff']:.2f}", fontsize=7)
        ax.axis("off")
        for c, (run, maps) in enumerate(panels, start=1):
            axes[r, c].imshow(plots.overlay(shown[r], maps[r]))
            axes[r, c].set_title(f"{run}: {row['class_a'] if run == 'A' else row['class_b']}", fontsize=7)
            axes[r, c].axis("off")
        i = int(row["index"])
        classes = [int(row["label"])]
        for p in (proba[i], probb[i]):
            classes += [int(j) for j in np.argsort(-p, kind="stable")[:top_classes]]
        classes = list(dict.fromkeys(classes))
        y = np.arange(len(classes))
        ax = axes[r, -1]
        ax.barh(y - 0.2, proba[i, classes], 0.4, label="A", color="#d62728")
        ax.barh(y + 0.2, probb[i, classes], 0.4, label="B", color="#2ca02c")
        ax.set_yticks(y, labels=[str(a.classnames[j])[:20] for j in classes], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
        if r == 0:
            ax.legend(fontsize=7, loc="lower right")
            ax.set_title("probabilities", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def write_improvements(a: "Predictions", b: "Predictions", k: int = 6, attention_a: "AttentionSource | None" = None,
                       attention_b: "AttentionSource | None" = None, root: str | Path | None = None,
                       formats: Sequence[str] = ("png",), name: str | None = None) -> list[Path]:
    """Write the ranked table (CSV, Markdown) and the figure under ``figures/{b.run_key}/`` as
    ``name`` (default ``improvements_vs_{a.run_key}`` made file-safe)."""
    name = name or "improvements_vs_" + "".join(ch if ch.isalnum() or ch in "-_+" else "_" for ch in a.run_key)
    table = rank_improvements(a, b)
    paths = plots.save_table(table, b.run_key, name, root=root)
    fig = improvements_figure(a, b, table, k=k, attention_a=attention_a, attention_b=attention_b)
    return paths + plots.save_figure(fig, b.run_key, name, formats=formats, root=root)
