"""The run step (notebooks ``01`` to ``04`` and ``06``): one method end to end, then its record.

The method registry picks the runner (:attr:`lowres_clip.registry.Method.runner`): :func:`run_adapted`
(an :class:`~lowres_clip.methods.adapted.AdaptedCLIP`, trained when the method trains) or
:func:`run_linear_probe` (a classifier on cached image features)."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .. import registry
from ..analysis.longtail import per_class_recall
from ..datasets import ImageDataset, SplitDataset
from ..features import image_features, prepared_images
from ..runs import Predictions, RunRecord, aggregate, load_records, pack_correct
from ..sampling import FewShotSplit
from ..spec import RunSpec
from .augment import augmentation_datasets
from .common import feature_cache, load_model, test_samples, timed
from .data import prepare_data


def run_linear_probe(spec: RunSpec, bundle, ds: SplitDataset, split: FewShotSplit, timings: dict) -> tuple:
    """Runner ``features``: fit the linear probe on cached image features; ``(logits, labels,
    features, val metric, extra, protocol)`` of the test images."""
    from ..methods.linear_probe import fit_linear_probe

    cache = feature_cache(spec)
    with timed(timings, "features"):
        xtr, ytr = image_features(bundle, ds, "train", split.train, cache)
        xva, yva = image_features(bundle, ds, "val", split.val, cache)
        xte, yte = image_features(bundle, ds, "test", test_samples(spec, ds), cache)
    with timed(timings, "train"):
        probe = fit_linear_probe(xtr, ytr, xva, yva, num_classes=ds.num_classes, seed=spec.config.seed,
                                 show_progress=spec.config.train.progress)
    with timed(timings, "eval"):
        logits = probe.predict_logits(xte)
    extra = {"probe": {"C": probe.C, "val_accuracy": probe.val_accuracy, "search": probe.search}}
    protocol = {"selection": "best_val (C of the logistic regression on validation)", "selected_step": None,
                "precision": {"train": "fp32", "eval": "fp32"}}
    return logits, yte, xte, None, probe.val_accuracy, extra, protocol


def templates_of(spec: RunSpec) -> list[str]:
    """The prompt templates the run uses."""
    return spec.config.templates()  # RunConfig.template (a name or a literal) or the dataset default / ensemble


def run_adapted(spec: RunSpec, bundle, ds: SplitDataset, split: FewShotSplit, timings: dict) -> tuple:
    """Runner ``adapted``: build the :class:`~lowres_clip.methods.adapted.AdaptedCLIP` of the label's
    parts (each with its settings), train it when the method trains, evaluate it on the test images."""
    from ..methods.adapted import build_adapted
    from ..numerics import precision_name
    from ..train import evaluate, evaluate_features, save_trained, train, train_transform
    from ..utils import resolve_precision

    cfg = spec.config
    cache = feature_cache(spec)
    templates = templates_of(spec)
    support = None
    with timed(timings, "build"):
        if any(entry.head is not None for entry in spec.label.entries):  # a head on the features needs the support set
            # the support is re-encoded by the adapted image tower when it trains, else cached features
            support = (ImageDataset(ds.image_root, split.train, bundle.preprocess_eval) if cfg.trains_vision
                       else image_features(bundle, ds, "train", split.train, cache))
        settings = {entry.name: cfg.settings_of(entry.name) for entry in spec.label.entries}
        adapted = build_adapted(bundle, ds.classnames, templates, cfg.method, support=support, seed=cfg.seed,
                                settings=settings)
    extra: dict[str, Any] = {"templates": templates, "parameter_counts": adapted.parameter_counts()}
    protocol: dict[str, Any] = {"selection": None, "selected_step": None, "precision": {"train": None, "eval": "fp32"}}
    val_metric = float("nan")
    if cfg.trains:
        transform = train_transform(bundle, cfg.effective_train().crop_scale)  # Meta-Adapter alone: 0.5-1
        preserving = breaking = None
        if cfg.augmentation.kind != "none":
            with timed(timings, "augment"):
                preserving, breaking, extra["augmentation"] = augmentation_datasets(spec, transform)
        with timed(timings, "train"):
            result = train(adapted, ImageDataset(ds.image_root, split.train, transform),
                           ImageDataset(ds.image_root, split.val, bundle.preprocess_eval), cfg.train_settings(),
                           preserving=preserving, breaking=breaking)
        val_metric = result.selected_val
        extra["train"] = result.to_dict()
        protocol.update({"selection": result.selection, "selected_step": result.selected_step,
                         "selection_reason": result.selection_reason})
        protocol["precision"]["train"] = result.precision
        with timed(timings, "checkpoint"):
            save_trained(adapted, spec.checkpoint_path, meta={"run_id": spec.id, "config_hash": spec.config_hash,
                                                             "seed": cfg.seed, "train_config": asdict(cfg.effective_train())})
    with timed(timings, "eval"):
        if adapted.encoders_frozen:
            xte, yte = image_features(bundle, ds, "test", test_samples(spec, ds), cache)
            res = evaluate_features(adapted, xte, yte)
            if not cfg.trains:
                xva, yva = image_features(bundle, ds, "val", split.val, cache)
                val_metric = float((evaluate_features(adapted, xva, yva)["logits"].argmax(1) == yva).float().mean())
        else:
            test = prepared_images(ds, "test", test_samples(spec, ds), bundle.preprocess_eval, cache)
            protocol["precision"]["eval"] = precision_name(resolve_precision(cfg.train.precision, adapted.device))
            res = evaluate(adapted, test, cfg.train.eval_batch_size, cfg.train.precision, cfg.train.num_workers,
                           progress=cfg.train.progress, desc=f"test {spec.label}")
    return res["logits"], res["labels"], res["features"], res["text"], val_metric, extra, protocol


def run_method(spec: RunSpec) -> tuple[RunRecord, Predictions]:
    """Run one method end to end: data, model, (training with the selection rule on validation),
    test predictions, per-run figures, then the record (written last, atomically).

    The run writes only into its own folder (:attr:`RunSpec.run_dir`, named by its settings), so a
    run with other settings is never overwritten. If the run fails, a folder it created is removed.

    Returns:
        the :class:`~lowres_clip.runs.RunRecord` (metrics ``top1``, ``balanced``, ``val_top1``...,
        wall seconds per step in ``timings``) and the test :class:`~lowres_clip.runs.Predictions`.
    """
    from ..analysis import metrics as metrics_mod
    from ..analysis.separation import separation_metrics
    from ..models import describe as describe_model
    from ..utils import seed_everything

    cfg = spec.config
    created = not spec.run_dir.exists()
    spec.record_path.unlink(missing_ok=True)  # an interrupted rerun must not leave the old record looking finished
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with timed(timings, "data"):
            ds, split = prepare_data(spec)
        seed_everything(cfg.seed)
        with timed(timings, "model"):
            bundle = load_model(spec)
        runner = registry.runner_of(spec.label.parts)
        logits, labels, feats, text, val_metric, extra, protocol = runner(spec, bundle, ds, split, timings)
        test = test_samples(spec, ds)
        preds = Predictions(
            logits=_np(logits), labels=_np(labels), paths=[s.path for s in test], classnames=list(ds.classnames),
            image_root=str(ds.image_root), run_key=spec.id, features=_np(feats), groups=split.groups,
            text=None if text is None else _np(text),
        )
        metrics = metrics_mod.summary(preds)
        metrics["val_top1"] = float(val_metric)
        with timed(timings, "separation"):
            metrics.update(separation_metrics(preds))
        with timed(timings, "figures"):
            metrics_mod.write_report(preds, root=spec.figures_root)
        with timed(timings, "save"):
            preds.save(spec.predictions_path)
        timings["total"] = round(time.perf_counter() - t0, 3)
    except BaseException:
        if created:
            shutil.rmtree(spec.run_dir, ignore_errors=True)
        raise
    extra["test_correct"] = pack_correct(preds.correct)  # paired statistics over test images (results/rendering.py)
    extra["per_class"] = _per_class(split, preds)
    extra.update({"model": describe_model(bundle), "split": split.name, "train_shots": len(split.train),
                  "val_shots": len(split.val), "shots_report": split.report})
    protocol.update({"template": extra.get("templates"), "augmentation": _augmentation_protocol(spec),
                     "test_images": len(test), "validation_images": len(split.val)})
    record = RunRecord.for_run(spec, metrics, protocol=protocol, timings=timings, extra=extra)
    record.save(spec.record_path)
    return record, preds


def _per_class(split: FewShotSplit, preds: Predictions) -> dict[str, list]:
    """Per class (index order): the training images the run had, its test recall (``None``: no test
    image) and how many test images it predicted as the class (the long-tail report's recall
    against training shots, from records alone)."""
    trained = np.bincount([s.label for s in split.train], minlength=len(preds.classnames))
    table = per_class_recall(trained, preds.labels, preds.preds, split.groups)
    table = table.sort_values("class")
    return {"shots": [int(v) for v in trained], "recall": [None if v != v else float(v) for v in table["recall"]],
            "predicted": [int(v) for v in table["predicted"]]}


def _augmentation_protocol(spec: RunSpec) -> str:
    """How generated images were used: ``none`` or ``{kind}/{use}/{variant}`` (``classic/both/lrv``)."""
    aug = spec.config.augmentation
    return "none" if aug.kind == "none" else f"{aug.kind}/{aug.use}/{aug.variant}"


def _np(x: Any) -> np.ndarray:
    import torch

    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def load_run(spec: RunSpec) -> tuple[RunRecord, Predictions]:
    """Record and predictions of a run finished with these settings (else :class:`FileNotFoundError`)."""
    if not spec.is_finished():
        raise FileNotFoundError(f"run {spec.id} is not finished with these settings (no matching "
                                f"{spec.record_path}); run it first.")
    return RunRecord.load(spec.record_path), Predictions.load(spec.predictions_path)


def ensure_run(spec: RunSpec) -> tuple[RunRecord, Predictions]:
    """The finished run of ``spec``, running it first when needed."""
    return load_run(spec) if spec.is_finished() else run_method(spec)


def run_summary(record: RunRecord):
    """One-row DataFrame of a run's headline metrics, selection and wall time (for notebooks)."""
    import pandas as pd

    row = {"run": record.identity["key"], "variant": record.identity["variant"],
           **{k: record.metrics[k] for k in ("top1", "balanced", "val_top1") if k in record.metrics},
           "selection": record.protocol.get("selection"), "selected_step": record.protocol.get("selected_step"),
           "seconds": record.timings.get("total", float("nan"))}
    return pd.DataFrame([row])


def cell_results(spec: RunSpec, metrics: Sequence[str] = ("top1", "balanced", "val_top1")):
    """Finished runs of the same dataset, model, K and seed as ``spec`` (one row per run)."""
    import pandas as pd

    rows = []
    for r in load_records(spec.runs_root, spec.dataset):
        i = r.identity
        if i["model_weights"] == spec.model_weights and i["shots"] == spec.config.shots and i["seed"] == spec.config.seed:
            rows.append({"method": i["method"], "variant": i["variant"], **{m: r.metrics.get(m, float("nan")) for m in metrics},
                         "seconds": r.timings.get("total", float("nan"))})
    return pd.DataFrame(rows, columns=["method", "variant", *metrics, "seconds"])


def run_figures(preds: Predictions) -> dict[str, Any]:
    """The per-run figures for inline display: normalised confusion matrix and per-class accuracy."""
    from .. import plots
    from ..analysis import metrics as metrics_mod

    return {
        "confusion": metrics_mod.confusion(preds).figure(normalized=True, title=f"confusion: {preds.run_key}"),
        "per_class_accuracy": plots.per_class_accuracy_bars(metrics_mod.per_class_table(preds),
                                                            title=f"per-class accuracy: {preds.run_key}"),
    }


@dataclass
class GridResults:
    """The runs of one notebook (one run, or a method's slice of the K x seed grid).

    Attributes:
        specs: the runs, in order.
        records: their records.
    """

    specs: list[RunSpec]
    records: list[RunRecord]

    @property
    def table(self):
        """One row per run: key, variant, metrics, selection, seconds."""
        import pandas as pd

        return pd.concat([run_summary(r) for r in self.records], ignore_index=True)

    def figure(self, metric: str = "top1"):
        """Accuracy against K (mean ± 1 std over seeds) when the runs span several K, else the
        per-class accuracy of the run."""
        from .. import plots

        if len({s.config.shots for s in self.specs}) > 1:
            return plots.accuracy_vs_shots(aggregate(self.records, (metric,)), metric,
                                           title=f"{self.specs[0].label}: {metric} vs shots")
        return run_figures(self.predictions())["per_class_accuracy"]

    def predictions(self, index: int = -1) -> Predictions:
        """Test predictions of one run (default: the last)."""
        return Predictions.load(self.specs[index].predictions_path)


def run_all(specs: Sequence[RunSpec], progress: bool = True) -> GridResults:
    """Each run of ``specs``; runs finished with the same settings are loaded, not rerun."""
    from tqdm.auto import tqdm

    records = []
    for spec in tqdm(specs, desc=f"runs of {specs[0].label}", unit="run", disable=not progress or len(specs) == 1):
        records.append(ensure_run(spec)[0])
    return GridResults(list(specs), records)
