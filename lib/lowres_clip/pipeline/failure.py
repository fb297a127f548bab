"""The failure-analysis step (notebook ``07_failure_analysis``): where does run B fix or keep failing
what run A got wrong? Improvements, regressions, top-k with attention, clusters, per-class browser."""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..runs import Predictions
from ..spec import RunSpec
from .common import load_model
from .run import ensure_run, load_run, templates_of


def attention_source(spec: RunSpec, bundle=None):
    """An :class:`~lowres_clip.analysis.attention.AttentionSource` for a finished run's model, or
    ``None`` for a method the registry runs on cached features (the linear probe: its classifier is
    not a text embedding)."""
    import torch

    from ..analysis.attention import AttentionSource

    cfg = spec.config
    if spec.label.entries[0].runner != "adapted":  # the linear probe's classifier is no text embedding
        return None
    bundle = bundle or load_model(spec)
    if cfg.trains:
        from ..train import load_trained

        adapted = load_trained(bundle, spec.checkpoint_path, cfg.method)
        with torch.no_grad():
            text = adapted.classifier().detach().float()
        return AttentionSource(adapted.model, bundle.preprocess_eval, text)
    from ..methods.zero_shot import zero_shot_classifier

    classnames = load_run(spec)[1].classnames
    return AttentionSource.from_bundle(bundle, zero_shot_classifier(bundle, classnames, templates_of(spec)))


@dataclass
class FailureReport:
    """Outputs of :func:`failure_analysis`.

    Attributes:
        baseline, adapted: the two runs (A and B).
        pred_a, pred_b: their test predictions.
        improvements: samples A gets wrong and B right, largest entropy drop first.
        regressions: samples A gets right and B wrong (same ranking, roles swapped).
        cluster_scores: ``{run_key: scores}`` (silhouette, ARI, V-measure...).
        summary: headline numbers (also written as JSON).
        attention: ``{run_key: AttentionSource | None}``.
        paths: every file written.
    """

    baseline: RunSpec
    adapted: RunSpec
    pred_a: Predictions
    pred_b: Predictions
    improvements: Any
    regressions: Any
    cluster_scores: dict[str, dict[str, float]]
    summary: dict[str, Any]
    attention: dict[str, Any]
    paths: list[Path] = field(default_factory=list)

    def figures(self) -> dict[str, Path]:
        """``{name: png path}`` of the PNG figures written (for inline display)."""
        return {p.stem if p.parent.name != "browser" else f"browser/{p.stem}": p for p in self.paths if p.suffix == ".png"}

    @property
    def improvements_name(self) -> str:
        """Name of the improvements figure and table (:meth:`RunSpec.failure_name`)."""
        return self.adapted.failure_name("improvements", self.baseline)


def failure_analysis(spec: RunSpec, run_a: str = "zero_shot", run_b: str = "lora", k: int = 8,
                     attention: bool = True, embedding: str | None = None) -> FailureReport:
    """Where does run B (adapted) fix or keep failing what run A (baseline) got wrong?

    Runs A and B (method labels, e.g. ``zero_shot`` and ``lora+aug-classic``) are loaded, or run
    first when unfinished. Written under ``figures/{run_key_b}/``: the improvements ranking
    (``improvements_vs_{A}-{variant A}``, :meth:`RunSpec.failure_name`; entropy drop, with both runs' attention maps), regressions, top-k
    most confident successes and failures, UMAP clusters and scores (also for A), the per-class
    failure grids of the headless browser (``browser/*.png``), and finally
    ``failure_vs_{A}.json`` with the summary. ``embedding``: ``umap`` or ``pca`` (default: ``pca``
    for smoke runs, else ``umap``).
    """
    from .. import plots
    from ..analysis import browser, clustering, improvements as imp, metrics as metrics_mod, topk

    spec_a, spec_b = spec.with_label(run_a), spec.with_label(run_b)
    _, pred_a = ensure_run(spec_a)
    _, pred_b = ensure_run(spec_b)
    imp.check_comparable(pred_a, pred_b)
    root = spec.figures_root
    bundle = load_model(spec_b) if attention else None
    att = {pred_a.run_key: attention_source(spec_a, bundle) if attention else None,
           pred_b.run_key: attention_source(spec_b, bundle) if attention else None}
    att_a, att_b = att[pred_a.run_key], att[pred_b.run_key]
    paths = imp.write_improvements(pred_a, pred_b, k=min(k, 6), attention_a=att_a, attention_b=att_b, root=root,
                                   name=spec_b.failure_name("improvements", spec_a))
    regressions = imp.rank_improvements(pred_b, pred_a)
    paths += plots.save_table(regressions, pred_b.run_key, spec_b.failure_name("regressions", spec_a), root=root)
    paths += topk.write_topk(pred_b, k, att_b, root=root)
    scores: dict[str, dict[str, float]] = {}
    for pred in (pred_a, pred_b):
        scores[pred.run_key], written = clustering.write_clustering(
            pred, seed=spec.config.seed, root=root, embedding=embedding or ("pca" if spec.config.smoke else "umap"))
        paths += written
    paths += browser.export_per_class(pred_b, k=k, attention=att_b, root=root)
    table = imp.rank_improvements(pred_a, pred_b)
    summary = {
        "baseline": pred_a.run_key, "adapted": pred_b.run_key,
        "top1": {pred_a.run_key: metrics_mod.accuracy(pred_a), pred_b.run_key: metrics_mod.accuracy(pred_b)},
        "fixed": int(len(table)), "broken": int(len(regressions)),
        "still_wrong": int(((pred_a.preds != pred_a.labels) & (pred_b.preds != pred_b.labels)).sum()),
        "cluster_scores": scores,
    }
    out = spec_b.failure_summary_path(spec_a)
    atomic_write_text(out, json.dumps(summary, indent=1, default=float))
    paths.append(out)
    return FailureReport(spec_a, spec_b, pred_a, pred_b, table, regressions, scores, summary, att, paths)


def failure_browser(report: FailureReport, k: int = 8):
    """The per-class failure browser (ipywidgets) over both runs of a :class:`FailureReport`."""
    from ..analysis.browser import failure_browser as make_browser

    runs = {report.pred_b.run_key: report.pred_b, report.pred_a.run_key: report.pred_a}
    attention = {key: src for key, src in report.attention.items() if src is not None}
    return make_browser(runs, attention=attention, k=k)


