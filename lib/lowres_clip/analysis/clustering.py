"""How the image features of a run cluster: 2-D UMAP views and clustering scores.

* :func:`embed_2d`: seeded UMAP (umap-learn) of the L2-normalised image features; tiny sets (or a
  UMAP failure) fall back to PCA with a warning.
* :func:`cluster_scores`: silhouettes of the features under the *true* labels for all, correct
  and wrong samples, by two definitions reported side by side (:func:`silhouettes`):

  - ``silhouette_in_full_set_*`` (this study's): every sample's silhouette is computed once on
    the *full* set (cosine distance), then averaged over all / correct / wrong samples. A wrong
    sample lying in another class's cluster scores below 0: it answers "do the misclassified
    images sit in the wrong cluster?";
  - ``silhouette_within_subset_*`` (the seed report's ``compute_silhouette_scores``): each subset
    is scored *on its own* (``silhouette_score`` of the correct, resp. wrong, samples alone,
    Euclidean distance). It answers "are the correct (wrong) images, taken alone, grouped by
    their true class?" - wrong images that all drift into the *same* other cluster score high.

  ``_all`` differ only in the distance. And, taking the *predictions* as cluster assignments
  against the targets, ARI, homogeneity, completeness and V-measure (scikit-learn). Degenerate
  cases (fewer than two classes present, too few samples) give NaN instead of an error.
* :func:`cluster_figure` (matplotlib, three panels: true label, prediction, correct vs wrong) and
  :func:`cluster_figure_plotly` (the same, interactive, hover shows the sample).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib import colormaps
from sklearn import metrics as skm
from sklearn.decomposition import PCA

from .. import plots
from .metrics import validate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..runs import Predictions

MIN_UMAP_SAMPLES = 4


class FeaturesMissingError(ValueError):
    """The predictions carry no image features; re-run evaluation with features saved."""


def features_of(pred: "Predictions") -> np.ndarray:
    """The run's ``[N, D]`` image features (raises :class:`FeaturesMissingError` when absent)."""
    validate(pred)
    if pred.features is None:
        raise FeaturesMissingError(
            f"Predictions of {pred.run_key!r} have no image features; evaluate with features kept "
            "(Predictions.features) to use the clustering analysis.")
    feats = np.asarray(pred.features, dtype=np.float32)
    if feats.ndim != 2 or len(feats) != len(pred.labels):
        raise FeaturesMissingError(f"features must be [N={len(pred.labels)}, D], got shape {feats.shape}")
    return feats


def embed_2d(features: np.ndarray, seed: int = 0, method: str = "umap", n_neighbors: int = 15,
             min_dist: float = 0.1, metric: str = "cosine") -> np.ndarray:
    """2-D embedding ``[N, 2]`` of features.

    Args:
        features: ``[N, D]`` features.
        seed: UMAP ``random_state`` (same seed, same layout; UMAP then runs single-threaded).
        method: ``umap`` or ``pca``.
        n_neighbors: UMAP neighbourhood size (capped at ``N - 1``).
        min_dist: UMAP minimum distance.
        metric: UMAP metric (``cosine`` suits L2-normalised CLIP features).

    With fewer than 4 samples, or if UMAP fails, PCA is used (with a warning); missing components
    (``N < 2`` or ``D < 2``) are zero.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    if method not in ("umap", "pca"):
        raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
    n = len(x)
    if method == "umap" and n >= MIN_UMAP_SAMPLES:
        try:
            import umap

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*n_jobs value.*")
                reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, n - 1)), min_dist=min_dist,
                                    metric=metric, random_state=seed, init="spectral" if n > 10 else "random")
                return np.asarray(reducer.fit_transform(x), dtype=np.float32)
        except Exception as exc:  # UMAP/numba raise many types on degenerate inputs
            warnings.warn(f"UMAP failed ({type(exc).__name__}: {exc}); using PCA", stacklevel=2)
    elif method == "umap":
        warnings.warn(f"only {n} samples: using PCA instead of UMAP", stacklevel=2)
    out = np.zeros((n, 2), dtype=np.float32)
    k = min(2, n, x.shape[1]) if n > 1 else 0
    if k:
        out[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(x)
    return out


SUBSETS = ("all", "correct", "wrong")


def _silhouette_defined(labels: np.ndarray) -> bool:
    """scikit-learn's silhouette needs 2 <= number of classes <= samples - 1."""
    return 2 <= len(np.unique(labels)) <= len(labels) - 1


def silhouettes(features: np.ndarray, labels: np.ndarray, correct: np.ndarray,
                metric: str = "cosine", subset_metric: str = "euclidean") -> dict[str, float]:
    """Both silhouette definitions for all / correct / wrong samples (see the module docstring).

    Args:
        features: ``[N, D]`` image features.
        labels: true labels ``[N]`` (the clusters).
        correct: boolean ``[N]``, prediction == label.
        metric: distance of ``silhouette_in_full_set_*`` (cosine suits L2-normalised CLIP features).
        subset_metric: distance of ``silhouette_within_subset_*`` (the seed report: Euclidean).

    Returns:
        ``silhouette_in_full_set_{all,correct,wrong}`` and ``silhouette_within_subset_{all,correct,wrong}``;
        NaN where a score is undefined (an empty subset, fewer than two classes in it...).
    """
    x, y, ok = np.asarray(features, dtype=np.float32), np.asarray(labels), np.asarray(correct, dtype=bool)
    per_sample = skm.silhouette_samples(x, y, metric=metric) if _silhouette_defined(y) else np.full(len(y), np.nan)
    out: dict[str, float] = {}
    for name, mask in zip(SUBSETS, (np.ones_like(ok), ok, ~ok)):
        out[f"silhouette_in_full_set_{name}"] = float(per_sample[mask].mean()) if mask.any() else math.nan
    for name, mask in zip(SUBSETS, (np.ones_like(ok), ok, ~ok)):
        defined = mask.any() and _silhouette_defined(y[mask])
        out[f"silhouette_within_subset_{name}"] = (
            float(skm.silhouette_score(x[mask], y[mask], metric=subset_metric)) if defined else math.nan)
    return out


def stratified_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of about ``size`` images, each class kept in proportion (at least one image
    of every class present), drawn with ``seed``: the same subset for every run with these labels."""
    labels = np.asarray(labels)
    if len(labels) <= size:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, size=max(1, round(size * len(idx) / len(labels))), replace=False))
    return np.sort(np.concatenate(keep))


def cluster_scores(pred: "Predictions", metric: str = "cosine", silhouette_images: int | None = None) -> dict[str, float]:
    """Clustering quality of a run.

    Args:
        silhouette_images: compute the silhouettes (``O(N^2 D)``) on a class-stratified subset of
            this many images (:func:`stratified_subset`, seed 0; reported as ``silhouette_images``);
            ``None``: on every image. ARI and V-measure always use every image.

    Returns:
        the six silhouettes of :func:`silhouettes` (``silhouette_in_full_set_*``: per-sample
        silhouettes on the full set with ``metric``, averaged per subset;
        ``silhouette_within_subset_*``: each subset scored alone, Euclidean, as the seed report;
        NaN without features);
        ``ari``, ``homogeneity``, ``completeness``, ``v_measure``: predictions as cluster
        assignments against the true labels (NaN when fewer than two true classes are present).
    """
    validate(pred)
    labels, preds = pred.labels, pred.preds
    if pred.features is not None:
        keep = stratified_subset(labels, silhouette_images) if silhouette_images else np.arange(len(labels))
        out = silhouettes(features_of(pred)[keep], labels[keep], (preds == labels)[keep], metric=metric)
        if silhouette_images:
            out["silhouette_images"] = float(len(keep))
    else:
        out = {f"silhouette_{kind}_{name}": math.nan for kind in ("in_full_set", "within_subset") for name in SUBSETS}
    if len(np.unique(labels)) < 2:
        out.update(ari=math.nan, homogeneity=math.nan, completeness=math.nan, v_measure=math.nan)
        return out
    h, c, v = skm.homogeneity_completeness_v_measure(labels, preds)
    out.update(ari=float(skm.adjusted_rand_score(labels, preds)), homogeneity=float(h), completeness=float(c),
               v_measure=float(v))
    return out


def _class_colours(n: int) -> np.ndarray:
    """``[n, 4]`` RGBA class colours: tab10/tab20 for up to 20 classes, else evenly spaced turbo."""
    if n <= 20:
        cmap = colormaps["tab10" if n <= 10 else "tab20"]
        return np.asarray([cmap(i) for i in range(n)])
    return colormaps["turbo"](np.linspace(0.0, 1.0, n))


def cluster_figure(pred: "Predictions", coords: np.ndarray | None = None, seed: int = 0,
                   max_legend: int = 20, point_size: float = 12.0) -> "Figure":
    """Three scatter panels of the 2-D embedding: coloured by true label, by prediction, and
    correct (green) vs wrong (red). ``coords`` defaults to :func:`embed_2d` of the features."""
    coords = embed_2d(features_of(pred), seed=seed) if coords is None else np.asarray(coords)
    if coords.shape != (len(pred.labels), 2):
        raise ValueError(f"coords must be [N={len(pred.labels)}, 2], got {coords.shape}")
    c = len(pred.classnames)
    colours = _class_colours(c)
    fig = plots.new_figure(15.0, 5.2)
    axes = fig.subplots(1, 3)
    for ax, values, name in ((axes[0], pred.labels, "true label"), (axes[1], pred.preds, "prediction")):
        for i in range(c):
            m = values == i
            if m.any():
                ax.scatter(coords[m, 0], coords[m, 1], s=point_size, color=colours[i], label=pred.classnames[i])
        ax.set_title(f"coloured by {name}")
    ok = pred.preds == pred.labels
    axes[2].scatter(coords[ok, 0], coords[ok, 1], s=point_size, color="#2ca02c", label=f"correct ({ok.sum()})")
    axes[2].scatter(coords[~ok, 0], coords[~ok, 1], s=point_size, color="#d62728", marker="x",
                    label=f"wrong ({(~ok).sum()})")
    axes[2].set_title("correct vs wrong")
    axes[2].legend(fontsize=8)
    if c <= max_legend:
        axes[0].legend(fontsize=7, markerscale=1.0, loc="best")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"image features (2-D): {pred.run_key}", fontsize=10)
    return fig


def cluster_figure_plotly(pred: "Predictions", coords: np.ndarray | None = None, seed: int = 0):
    """Interactive version of :func:`cluster_figure` (hover: path, true class, prediction)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    coords = embed_2d(features_of(pred), seed=seed) if coords is None else np.asarray(coords)
    names = np.asarray(pred.classnames, dtype=object)
    preds = pred.preds
    ok = preds == pred.labels
    hover = [f"{p}<br>true: {names[t]}<br>pred: {names[q]}" for p, t, q in zip(pred.paths, pred.labels, preds)]
    hover = np.asarray(hover, dtype=object)
    fig = make_subplots(rows=1, cols=3, subplot_titles=("true label", "prediction", "correct vs wrong"))
    colours = [f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})" for r, g, b, _ in _class_colours(len(names))]
    for col, values in ((1, pred.labels), (2, preds)):
        for i, name in enumerate(names):
            m = values == i
            if m.any():
                fig.add_trace(go.Scattergl(x=coords[m, 0], y=coords[m, 1], mode="markers", name=str(name),
                                           legendgroup=str(name), showlegend=col == 1,
                                           marker={"color": colours[i], "size": 6}, text=hover[m],
                                           hoverinfo="text"), row=1, col=col)
    for m, name, colour in ((ok, "correct", "#2ca02c"), (~ok, "wrong", "#d62728")):
        fig.add_trace(go.Scattergl(x=coords[m, 0], y=coords[m, 1], mode="markers", name=name,
                                   marker={"color": colour, "size": 6}, text=hover[m], hoverinfo="text"),
                      row=1, col=3)
    fig.update_layout(title=f"image features (2-D): {pred.run_key}", height=480, width=1400)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def write_clustering(pred: "Predictions", seed: int = 0, root: str | Path | None = None,
                     formats: Sequence[str] = ("png",), embedding: str = "umap") -> tuple[dict[str, float], list[Path]]:
    """Compute the 2-D embedding once (``embedding``: ``umap``, or ``pca`` to skip UMAP's JIT
    compilation in smoke runs), write ``clusters`` (PNG and HTML) and ``cluster_scores.{csv,md}``
    under ``figures/{run_key}/``; returns ``(scores, paths)``."""
    import pandas as pd

    coords = embed_2d(features_of(pred), seed=seed, method=embedding)
    scores = cluster_scores(pred)
    paths = plots.save_figure(cluster_figure(pred, coords), pred.run_key, "clusters", formats=formats, root=root)
    paths += plots.save_figure(cluster_figure_plotly(pred, coords), pred.run_key, "clusters", root=root)
    paths += plots.save_table(pd.DataFrame([scores]), pred.run_key, "cluster_scores", root=root)
    return scores, paths


__all__ = ["FeaturesMissingError", "cluster_figure", "cluster_figure_plotly", "cluster_scores",
           "embed_2d", "features_of", "silhouettes", "write_clustering"]
