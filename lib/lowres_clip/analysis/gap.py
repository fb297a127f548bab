"""Modality gap between image features and class text embeddings (numpy and matplotlib; no torch).

Liang et al., "Mind the Gap: Understanding the Modality Gap in Multi-modal Contrastive
Representation Learning", NeurIPS 2022, measure the gap as the distance between the centroids of
the L2-normalised image and text embeddings, ``||mean_i x_i - mean_i y_i||`` over ``n`` image-text
pairs ``(x_i, y_i)``. A classifier has one text embedding per class rather than one caption per image,
so :func:`modality_gap` reports two centroid gaps:

* ``gap`` (the headline): image centroid = mean over the ``N`` images, text centroid = unweighted
  mean over the ``C`` class text embeddings (each class counts once, whatever its test frequency).
* ``paired_gap``: the paper's pairing taken literally, each image paired with its own class's text
  embedding, so the text centroid is the class embeddings weighted by the labels' frequencies. On a
  balanced test set the two are equal.

Centroids are not renormalised (as in the paper). Alongside the gap: the distribution of the matched
cosine similarity (each image with its own class's text embedding), and the cosine to the most
similar wrong class and the margin between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

#: Largest allowed deviation of an input vector's L2 norm from 1 (fp16 features stay well inside).
UNIT_NORM_TOLERANCE = 1e-2


class GapInputError(ValueError):
    """Features, labels or text embeddings are inconsistent; the message says what."""


@dataclass(frozen=True)
class GapResult:
    """Modality gap of one run's image features against its class text embeddings.

    Attributes:
        matched: ``[N]`` cosine of each image with its own class's text embedding.
        wrong_max: ``[N]`` cosine of each image with the most similar other class (NaN when ``C = 1``).
        gap_vector: ``[D]`` image centroid (over images) minus text centroid (over classes).
        paired_gap_vector: ``[D]`` image centroid minus the label-weighted text centroid.
    """

    matched: np.ndarray
    wrong_max: np.ndarray
    gap_vector: np.ndarray
    paired_gap_vector: np.ndarray

    @property
    def n(self) -> int:
        return int(self.matched.size)

    @property
    def matched_mean(self) -> float:
        """Mean matched cosine."""
        return float(self.matched.mean())

    @property
    def matched_std(self) -> float:
        """Standard deviation of the matched cosine (population, ``ddof=0``)."""
        return float(self.matched.std())

    @property
    def wrong_max_mean(self) -> float:
        """Mean over images of the cosine to the most similar wrong class."""
        return float(self.wrong_max.mean())

    @property
    def margin_mean(self) -> float:
        """Mean over images of matched cosine minus the most similar wrong class's cosine
        (negative on average when most images are closer to a wrong class)."""
        return float((self.matched - self.wrong_max).mean())

    @property
    def gap(self) -> float:
        """``||mean over images - mean over class text embeddings||`` (module doc)."""
        return float(np.linalg.norm(self.gap_vector))

    @property
    def paired_gap(self) -> float:
        """``||mean over images - mean over each image's own class embedding||`` (module doc)."""
        return float(np.linalg.norm(self.paired_gap_vector))

    def to_dict(self) -> dict[str, float | int]:
        """Summary as JSON-able Python numbers (the per-image values stay out)."""
        return {"n": self.n, "matched_mean": self.matched_mean, "matched_std": self.matched_std,
                "wrong_max_mean": self.wrong_max_mean, "margin_mean": self.margin_mean,
                "gap": self.gap, "paired_gap": self.paired_gap}


def _check_unit(x: np.ndarray, what: str) -> None:
    norms = np.linalg.norm(x, axis=1)
    bad = np.abs(norms - 1) > UNIT_NORM_TOLERANCE
    if bad.any():
        i = int(np.argmax(bad))
        raise GapInputError(f"{what} must be L2-normalised: row {i} has norm {norms[i]:.4f} "
                            f"({int(bad.sum())} rows off by more than {UNIT_NORM_TOLERANCE})")


def modality_gap(image_features, labels, text_embeddings) -> GapResult:
    """Matched cosine, wrong-class cosine and centroid gaps of one run.

    Args:
        image_features: ``[N, D]`` L2-normalised image features (test images).
        labels: ``[N]`` true class of each image, in ``[0, C)``.
        text_embeddings: ``[C, D]`` L2-normalised class text embeddings (the run's classifier).

    Raises:
        GapInputError: on mismatched shapes, labels out of range or vectors that are not unit length.
    """
    x = np.asarray(image_features, dtype=np.float64)
    t = np.asarray(text_embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or t.ndim != 2 or x.shape[1] != t.shape[1]:
        raise GapInputError(f"need image features [N, D] and text embeddings [C, D], got {x.shape} and {t.shape}")
    if y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise GapInputError(f"need one label per image ({x.shape[0]} images, at least one), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise GapInputError(f"labels must be integers, got dtype {y.dtype}")
    c = t.shape[0]
    if y.min() < 0 or y.max() >= c:
        raise GapInputError(f"labels must lie in [0, {c}), got range [{y.min()}, {y.max()}]")
    _check_unit(x, "image_features")
    _check_unit(t, "text_embeddings")
    sims = x @ t.T  # [N, C] cosines
    rows = np.arange(len(y))
    matched = sims[rows, y]
    if c > 1:
        others = sims.copy()
        others[rows, y] = -np.inf
        wrong_max = others.max(axis=1)
    else:
        wrong_max = np.full(len(y), np.nan)
    image_centroid = x.mean(axis=0)
    return GapResult(matched=matched, wrong_max=wrong_max, gap_vector=image_centroid - t.mean(axis=0),
                     paired_gap_vector=image_centroid - t[y].mean(axis=0))


def matched_cosine_figure(results: Mapping[str, GapResult], bins: int = 40, title: str | None = None) -> Figure:
    """Histograms of the matched cosine, one per method, on one axes (density, step outlines).

    Args:
        results: ``{method label: GapResult}``; the legend gives each label with its mean matched
            cosine and gap.
        bins: number of bins, shared by all methods (one range over all of them).
        title: axes title (default: "Matched image-text cosine").
    """
    if not results:
        raise GapInputError("no results to plot")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    values = np.concatenate([r.matched for r in results.values()])
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    for label, r in results.items():
        ax.hist(r.matched, bins=edges, density=True, histtype="step", linewidth=1.5,
                label=f"{label} (mean {r.matched_mean:.3f}, gap {r.gap:.3f})")
    ax.set_xlabel("cosine(image, own class text)")
    ax.set_ylabel("density")
    ax.set_title(title or "Matched image-text cosine")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
