"""What every run's record says beside its accuracy: how its features separate, how far they sit
from the text side, and whether its predictions collapse onto a few classes.

One function, :func:`separation_metrics`, so that every run (not only the failure-analysis pair)
carries the same numbers and tables can compare all methods on them:

* clustering scores of the test features (:func:`lowres_clip.analysis.clustering.cluster_scores`:
  both silhouette definitions for all / correct / wrong images, ARI, homogeneity, completeness,
  V-measure); silhouettes cost ``O(N^2 D)``, so above :data:`SILHOUETTE_IMAGES` test images they are
  computed on a class-stratified subset of that size drawn with seed 0 (the same images for every
  run of a dataset; about 19 s -> 1.5 s per EuroSAT run on one thread); ARI and V-measure use every
  image;
* the modality gap (:func:`lowres_clip.analysis.gap.modality_gap`, Liang et al. 2022): mean and spread
  of the matched image-text cosine, the mean margin to the closest wrong class, and the distance
  between the image and text centroids; only for runs whose logits compare image features with
  class embeddings (not the linear probe);
* prediction collapse (:func:`lowres_clip.analysis.longtail.prediction_collapse`): the share of the
  most-predicted class and the normalised entropy of the predicted classes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .clustering import cluster_scores
from .gap import modality_gap
from .longtail import prediction_collapse

if TYPE_CHECKING:
    from ..runs import Predictions

SILHOUETTE_IMAGES = 2000
GAP_KEYS = ("gap_matched_mean", "gap_matched_std", "gap_margin_mean", "gap_centroid")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def gap_metrics(pred: "Predictions") -> dict[str, float]:
    """``gap_*`` numbers of a run (NaN without features or class embeddings)."""
    if pred.features is None or pred.text is None:
        return {k: math.nan for k in GAP_KEYS}
    g = modality_gap(_unit(pred.features), pred.labels, _unit(pred.text))
    return {"gap_matched_mean": g.matched_mean, "gap_matched_std": g.matched_std,
            "gap_margin_mean": g.margin_mean, "gap_centroid": g.gap}


def separation_metrics(pred: "Predictions", silhouette_images: int = SILHOUETTE_IMAGES) -> dict[str, float]:
    """Clustering scores, modality gap and collapse of one run, flat and JSON-able (see module doc)."""
    out = {k: float(v) for k, v in cluster_scores(pred, silhouette_images=silhouette_images).items()}
    out.update(gap_metrics(pred))
    c = prediction_collapse(pred.labels, pred.preds, len(pred.classnames))
    out.update(collapse_top_share=c.top_share, collapse_entropy=c.normalized_entropy,
               collapse_label_entropy=c.label_normalized_entropy)
    return out
