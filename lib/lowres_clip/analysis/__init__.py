"""Failure-case analysis of runs: pure functions that return data (arrays, DataFrames) and figures.

Modules:
    metrics: top-1 / top-k / balanced accuracy, per-class and head/medium/tail tables, confusion matrix.
    attention: attention maps (gradient-weighted rollout for ViTs, Grad-CAM for CNNs) and overlays.
    topk: most confident correct and incorrect predictions, overall and per class, as grids.
    clustering: 2-D UMAP of image features and clustering scores (silhouette, ARI, V-measure).
    improvements: samples one run fixes over another, ranked by entropy drop.
    browser: per-class failure browser (ipywidgets) and its headless PNG export.
    stats: paired seed t-interval, paired bootstrap over test images, McNemar, verdict wording.
    gap: modality gap (matched / wrong-class cosine, centroid gap) and its histogram figure.
    longtail: head/medium/tail by training shots, per-class recall vs shots, prediction collapse.

Every function of the failure analysis takes :class:`lowres_clip.runs.Predictions` (stats, gap and
longtail take arrays and are imported as modules); figures are saved with
:func:`lowres_clip.plots.save_figure` under ``figures/{run_key}/``.
"""

from .attention import AttentionError, AttentionSource, attention_map, attention_maps, overlay
from .browser import FailureBrowser, export_per_class, failure_browser, render_class
from .clustering import FeaturesMissingError, cluster_figure, cluster_figure_plotly, cluster_scores, embed_2d
from .improvements import (
    MismatchedRunsError,
    check_comparable,
    improvements_figure,
    rank_improvements,
    softmax_entropy,
)
from .metrics import (
    ConfusionMatrix,
    PredictionsError,
    accuracy,
    balanced_accuracy,
    confusion,
    group_table,
    per_class_table,
    summary,
    top_k_accuracy,
)
from .topk import UnknownClassError, sample_table, top_k, topk_figure

__all__ = [
    "AttentionError", "AttentionSource", "ConfusionMatrix", "FailureBrowser", "FeaturesMissingError",
    "MismatchedRunsError", "PredictionsError", "UnknownClassError", "accuracy", "attention_map", "attention_maps",
    "balanced_accuracy", "check_comparable", "cluster_figure", "cluster_figure_plotly", "cluster_scores",
    "confusion", "embed_2d", "export_per_class", "failure_browser", "group_table", "improvements_figure",
    "rank_improvements", "overlay", "per_class_table", "render_class", "sample_table", "softmax_entropy",
    "summary", "top_k", "top_k_accuracy", "topk_figure",
]
