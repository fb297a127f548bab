"""The steps the numbered notebooks run, as plain functions (no logic lives only in a notebook).

=====================  =========================================================================
notebook               step
=====================  =========================================================================
00_data                :func:`prepare_data` + :func:`data_overview`
01_zero_shot           :func:`run_method` for ``zero_shot`` and the ``linear_probe`` baseline
02..04                 :func:`run_method` for ``lora`` / ``bitfit`` / ``meta_adapter`` (and combos)
05_augment_generate    :func:`generate_augmentations`
06_augment_train       :func:`run_method` with ``augmentation`` (``lora+aug-classic``)
07_failure_analysis    :func:`failure_analysis` + :func:`failure_browser`
08_report_tables       :func:`report_tables`
=====================  =========================================================================

A run writes, under ``runs/{run_key}/``: ``checkpoint.pt`` (trained parameters, trained methods
only), ``predictions.npz`` and, last and atomically, ``record.json`` (metrics, config, seed,
versions, commit and wall seconds per step). An existing record is deleted before a run starts, so
a run interrupted at any point leaves no finished-looking record. Its figures (confusion matrices,
per-class accuracy, tables) go to ``figures/{run_key}/``.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .config import ConfigError, RunConfig
from .datasets import ImageDataset, Sample, SplitDataset, default_data_root, load_dataset
from .features import FeatureCache, default_cache_root, image_features
from .runs import FIGURES_ROOT, RUNS_ROOT, Predictions, RunRecord, is_finished, run_dir
from .sampling import FewShotSplit, few_shot

SMOKE_CLASSES = {
    "eurosat": [("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"), ("Highway", "Highway or Road"),
                ("SeaLake", "Sea or Lake")],
    "circuits": [("0", "others"), ("1", "audio amplifier/amplifier"), ("2", "LED"), ("3", "timer")],
}
TABLE_NAME = "results"


# ----------------------------------------------------------------------------- paths
def runs_root(cfg: RunConfig) -> Path:
    """Root of run outputs (``cfg.runs_root`` or ``<repo>/runs``)."""
    return Path(cfg.runs_root) if cfg.runs_root else RUNS_ROOT


def figures_root(cfg: RunConfig) -> Path:
    """Root of figures and tables (``cfg.figures_root`` or ``<repo>/figures``)."""
    return Path(cfg.figures_root) if cfg.figures_root else FIGURES_ROOT


def cache_root(cfg: RunConfig) -> Path:
    """Root of caches (``cfg.cache_root``, ``$LOWRES_CLIP_CACHE`` or ``<repo>/.cache/lowres_clip``)."""
    return Path(cfg.cache_root) if cfg.cache_root else default_cache_root()


def dataset_key(cfg: RunConfig) -> str:
    """The dataset part of the run key (``eurosat``; an ImageFolder's folder name)."""
    return cfg.run_key.split("/")[0]


def cell_tag(cfg: RunConfig) -> str:
    """``k{shots}-s{seed}`` (plus ``-lt{ratio}`` for long-tailed sampling)."""
    lt = f"-lt{cfg.long_tail_ratio:g}" if cfg.long_tail_ratio else ""
    return f"k{cfg.shots}{lt}-s{cfg.seed}"


def split_dir(cfg: RunConfig) -> Path:
    """Where K-shot splits are saved: ``runs/{dataset}/splits/`` (every method reads the same file)."""
    return runs_root(cfg) / dataset_key(cfg) / "splits"


def data_figure_dir(cfg: RunConfig) -> Path:
    """``figures/{dataset}/data/{k..-s..}/``: the data notebook's tables and figures."""
    return figures_root(cfg) / dataset_key(cfg) / "data" / cell_tag(cfg)


def data_outputs(cfg: RunConfig) -> list[Path]:
    """Files the data step writes (the study skips ``00_data`` when they all exist)."""
    d = data_figure_dir(cfg)
    return [d / "class_counts.csv", d / "class_counts.png", d / "examples.png"]


def failure_summary_path(cfg_a: RunConfig, cfg_b: RunConfig) -> Path:
    """``figures/{run_key_b}/failure_vs_{label_a}.json``: the failure analysis' summary."""
    return figures_root(cfg_b) / cfg_b.run_key / f"failure_vs_{cfg_a.label}.json"


def failure_outputs(cfg_a: RunConfig, cfg_b: RunConfig) -> list[Path]:
    """Files the failure analysis writes last (the study skips ``07`` when they exist)."""
    return [failure_summary_path(cfg_a, cfg_b)]


def tables_dir(cfg: RunConfig) -> Path:
    """``figures/{dataset}/tables/``."""
    return figures_root(cfg) / dataset_key(cfg) / "tables"


def table_paths(cfg: RunConfig) -> list[Path]:
    """The aggregated tables :func:`report_tables` writes (CSV, Markdown, LaTeX)."""
    d = tables_dir(cfg)
    return [d / f"{TABLE_NAME}.{ext}" for ext in ("csv", "md", "tex")]


def caveats(cfg: RunConfig) -> list[str]:
    """Warnings that belong next to this run's numbers (e.g. the embedded model's zero-shot caveat)."""
    from . import embedded

    out = []
    if cfg.model == embedded.EMBEDDED_MODEL or cfg.weights == "embedded":
        out.append(embedded.EMBEDDED_CAVEAT)
    if cfg.smoke:
        out.append("smoke run: tiny model and data, a handful of iterations; the numbers mean nothing.")
    if cfg.augmentation.kind == "classic":
        out.append("classic augmentation: image transforms stand in for the paper's diffusion model.")
    return out


def print_caveats(cfg: RunConfig) -> None:
    """Print :func:`caveats` (notebooks call this under the configuration)."""
    for text in caveats(cfg):
        print(f"NOTE: {text}")


def describe(cfg: RunConfig):
    """The key settings of a run as a pandas Series (shown at the top of each notebook)."""
    import pandas as pd

    return pd.Series({
        "profile": cfg.profile, "run_key": cfg.run_key, "dataset": cfg.dataset,
        "data_root": str(resolve_data_root(cfg, create=False)), "model": f"{cfg.model} ({cfg.weights})",
        "method": cfg.method, "augmentation": cfg.augmentation.kind, "shots": cfg.shots, "seed": cfg.seed,
        "device": str(resolve_device(cfg)), "smoke": cfg.smoke, "runs_root": str(runs_root(cfg)),
        "figures_root": str(figures_root(cfg)),
    }, name=cfg.run_key)


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the wall seconds of a block to ``timings[step]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + round(time.perf_counter() - t0, 3)


# ----------------------------------------------------------------------------- data
def class_pattern(label: int, index: int, size: int, seed: int = 0) -> np.ndarray:
    """A small RGB image whose colour and stripe direction/period identify ``label`` (learnable data)."""
    rng = np.random.default_rng([seed, label, index])
    hue = np.array([(label * 89 + 40) % 256, (label * 157 + 90) % 256, (label * 211 + 150) % 256], np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    coord = (xx, yy, xx + yy, xx - yy)[label % 4]
    stripes = ((coord // (2 + label % 3)) % 2).astype(np.float32)[..., None]
    img = hue * (0.55 + 0.45 * stripes) + rng.normal(0, 10, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_smoke_dataset(root: str | Path, dataset: str = "eurosat", per_split: Sequence[int] = (8, 4, 6),
                       size: int = 32, seed: int = 0) -> Path:
    """Write a tiny synthetic dataset (4 classes) in the official layout of ``dataset``; returns ``root``.

    ``eurosat``: ``root/eurosat/2750/<Class>/<Class>_<n>.png`` + ``split_zhou_EuroSAT.json``;
    ``circuits``: ``root/circuits/images/<n>.png`` + ``split_config.json`` + ``label_map.json``.
    Nothing is rewritten when the split file already exists.
    """
    from PIL import Image

    from .atomic import atomic_write, atomic_write_text

    if dataset not in SMOKE_CLASSES:
        raise ConfigError(f"smoke data exists for {sorted(SMOKE_CLASSES)}, not {dataset!r}; give data_root.")
    root = Path(root)
    base = root / dataset
    split_file = base / ("split_zhou_EuroSAT.json" if dataset == "eurosat" else "split_config.json")
    if split_file.is_file():
        return root
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    n = 0
    for label, (folder, name) in enumerate(SMOKE_CLASSES[dataset]):
        for part, count in zip(split, per_split):
            for _ in range(count):
                n += 1
                rel = f"{folder}/{folder}_{n}.png" if dataset == "eurosat" else f"{n}.png"
                path = base / ("2750" if dataset == "eurosat" else "images") / rel
                img = Image.fromarray(class_pattern(label, n, size, seed))
                atomic_write(path, img.save)  # parallel notebooks may write the same files
                split[part].append([rel, label, name])
    if dataset == "circuits":
        atomic_write_text(base / "label_map.json", json.dumps({str(i): c[1] for i, c in enumerate(SMOKE_CLASSES[dataset])}))
    atomic_write_text(split_file, json.dumps(split))  # last: its presence means the dataset is complete
    return root


def resolve_data_root(cfg: RunConfig, create: bool = True) -> Path:
    """``cfg.data_root``; with ``smoke`` and no data root, the synthetic dataset under the cache root
    (generated when ``create``); else :func:`lowres_clip.datasets.default_data_root`."""
    if cfg.data_root:
        return Path(cfg.data_root)
    if cfg.smoke:
        root = cache_root(cfg) / "smoke-data"
        return make_smoke_dataset(root, cfg.dataset) if create else root
    return default_data_root()


def test_samples(cfg: RunConfig, ds: SplitDataset) -> list[Sample]:
    """The evaluated test images: all of them, or ``cfg.test_subset`` of them, class-stratified and
    drawn with seed 0 (scikit-learn ``train_test_split``), kept in the split's order."""
    test = ds.split("test")
    if cfg.test_subset is None or cfg.test_subset >= len(test):
        return list(test)
    from sklearn.model_selection import train_test_split

    labels = [s.label for s in test]
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 and cfg.test_subset >= len(counts[counts > 0]) else None
    keep, _ = train_test_split(np.arange(len(test)), train_size=cfg.test_subset, random_state=0, stratify=stratify)
    return [test[i] for i in sorted(keep)]


def prepare_data(cfg: RunConfig) -> tuple[SplitDataset, FewShotSplit]:
    """Load the dataset and the K-shot split of ``(shots, seed)`` (sampled once, saved, reloaded).

    Raises:
        lowres_clip.datasets.DatasetError: the data are missing (the message says where to put them,
            or set ``data_root`` / ``$LOWRES_CLIP_DATA``).
    """
    root = resolve_data_root(cfg)
    ds = load_dataset(cfg.dataset, root)
    split = few_shot(ds, cfg.shots, cfg.seed, cfg.long_tail_ratio, save_dir=split_dir(cfg))
    return ds, split


@dataclass
class DataOverview:
    """What the data notebook shows.

    Attributes:
        counts: per class: images in train/val/test, sampled shots and val shots (and group).
        figures: ``{"class_counts": Figure, "examples": Figure}``.
        paths: files written under :func:`data_figure_dir`.
        split_file: the saved K-shot split.
    """

    counts: Any
    figures: dict[str, Any]
    paths: list[Path]
    split_file: Path


def class_counts(ds: SplitDataset, split: FewShotSplit):
    """DataFrame: ``class, train, val, test, shots, val_shots`` (+ ``group`` for long-tailed splits)."""
    import pandas as pd

    df = pd.DataFrame({"class": ds.classnames, "train": ds.counts("train"), "val": ds.counts("val"),
                       "test": ds.counts("test")})
    df["shots"] = np.bincount([s.label for s in split.train], minlength=ds.num_classes)
    df["val_shots"] = np.bincount([s.label for s in split.val], minlength=ds.num_classes)
    if split.groups is not None:
        df["group"] = split.groups
    return df


def class_counts_figure(counts) -> Any:
    """Horizontal bars of images per class in each split (log scale) with the sampled shots."""
    from . import plots

    fig = plots.new_figure(7.0, max(2.5, 0.32 * len(counts) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(counts))
    cols = ["train", "val", "test", "shots"]
    h = 0.8 / len(cols)
    for i, col in enumerate(cols):
        ax.barh(y - 0.4 + h * (i + 0.5), np.maximum(counts[col].to_numpy(), 0.8), h, label=col)
    ax.set_yticks(y, labels=list(counts["class"]), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("images (log scale)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("images per class and sampled shots")
    return fig


def examples_figure(ds: SplitDataset, split: FewShotSplit, per_class: int = 2, max_classes: int = 12) -> Any:
    """A grid of sampled training images, ``per_class`` for each of the first ``max_classes`` classes."""
    from . import plots

    data = ImageDataset(ds.image_root, split.train)
    images, titles = [], []
    for c in range(min(ds.num_classes, max_classes)):
        idx = [i for i, s in enumerate(split.train) if s.label == c][:per_class]
        for i in idx:
            images.append(data.load_image(i))
            titles.append(ds.classnames[c][:24])
    return plots.image_grid(images, titles, ncols=min(8, max(1, per_class * 4)),
                            title=f"{ds.name}: {split.name} training shots")


def data_overview(cfg: RunConfig, ds: SplitDataset, split: FewShotSplit) -> DataOverview:
    """Class counts table and figures of a K-shot split, written under :func:`data_figure_dir`."""
    from . import plots

    out = data_figure_dir(cfg)
    counts = class_counts(ds, split)
    figures = {"class_counts": class_counts_figure(counts), "examples": examples_figure(ds, split)}
    paths = plots.save_table(counts, out, "class_counts", formats=("csv", "md"))
    for name, fig in figures.items():
        paths += plots.save_figure(fig, out, name)
    split_file = split_dir(cfg) / f"{split.name}.json"
    return DataOverview(counts, figures, paths, split_file)


# ----------------------------------------------------------------------------- model
def resolve_device(cfg: RunConfig) -> torch.device:
    """``cfg.device`` (``auto``: CUDA when available); asking for CUDA without one is an error."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {cfg.device!r} requested but no CUDA device is available; use 'cpu' or 'auto'.")
    return torch.device(cfg.device)


def load_model(cfg: RunConfig):
    """The run's :class:`~lowres_clip.models.ClipBundle`, created under the run's seed, so that
    random-weight models (tests) are the same base model in every step that loads them."""
    from .models import load_clip
    from .utils import seeded

    device = resolve_device(cfg)
    with seeded(cfg.seed, device):
        return load_clip(cfg.model, cfg.weights, device=device, image_size=cfg.image_size)


def feature_cache(cfg: RunConfig) -> FeatureCache:
    return FeatureCache(cache_root(cfg) / "features")


# ----------------------------------------------------------------------------- augmentation
def make_run_generator(cfg: RunConfig):
    """The augmentation generator of ``cfg.augmentation`` (classic or diffusion)."""
    from .augment import make_generator

    if cfg.augmentation.kind == "none":
        raise ConfigError("augmentation.kind is 'none'; set it to 'classic' or 'diffusion' to generate images.")
    options = dict(cfg.augmentation.generator)
    if cfg.augmentation.kind == "diffusion" and "device" not in options and cfg.device != "auto":
        options["device"] = cfg.device
    return make_generator(cfg.augmentation.kind, dataset=dataset_key(cfg), **options)


def augmentation_dir(cfg: RunConfig, generator=None) -> Path:
    """``cfg.augmentation.out_dir`` or one folder per generator setting under the cache root."""
    from .augment import default_out_dir

    if cfg.augmentation.out_dir:
        return Path(cfg.augmentation.out_dir)
    return default_out_dir(dataset_key(cfg), generator or make_run_generator(cfg), cache_root(cfg))


def augmentation_kinds(cfg: RunConfig) -> list[str]:
    """Which generated kinds the run uses (``preserving``, ``breaking`` or both)."""
    return ["preserving", "breaking"] if cfg.augmentation.use == "both" else [cfg.augmentation.use]


@dataclass
class Augmentations:
    """Generated images of a run's K-shot training set.

    Attributes:
        manifest: rows of every generated image used (both kinds joined).
        out_dir: their folder.
        generator: the generator's description (``classic (classic-v1)``, ``diffusion (<model id>)``).
        figure: the gallery (sources with their preserving / breaking variants).
        paths: the gallery files written.
    """

    manifest: Any
    out_dir: Path
    generator: str
    figure: Any = None
    paths: list[Path] = field(default_factory=list)


def augmentation_figure_dir(cfg: RunConfig, out_dir: Path) -> Path:
    """``figures/{dataset}/augment/{generator folder}/{k..-s..}/``."""
    return figures_root(cfg) / dataset_key(cfg) / "augment" / out_dir.name / cell_tag(cfg)


def generate_augmentations(cfg: RunConfig, gallery: bool = True, progress: bool = True) -> Augmentations:
    """Generate (or reuse) the label-preserving / label-breaking images of the K-shot training images.

    Images already on disk are skipped (an interrupted generation resumes). With ``gallery`` the
    gallery figure is saved under :func:`augmentation_figure_dir`.

    Raises:
        lowres_clip.augment.GeneratorUnavailableError: e.g. diffusion weights missing offline (use
            ``augmentation.kind = "classic"``).
    """
    from . import plots
    from .augment import augmentation_gallery, generate

    ds, split = prepare_data(cfg)
    gen = make_run_generator(cfg)
    out = augmentation_dir(cfg, gen)
    manifest = None
    for kind in augmentation_kinds(cfg):
        part = generate(split.train, ds.image_root, ds.classnames, out, kind, gen, progress=progress)
        manifest = part if manifest is None else manifest + part
    result = Augmentations(manifest, out, gen.describe())
    if gallery:
        result.figure = augmentation_gallery(manifest, ds.image_root)
        result.paths = plots.save_figure(result.figure, augmentation_figure_dir(cfg, out), "gallery")
    return result


def augmentation_datasets(cfg: RunConfig, transform) -> tuple[Any, Any, dict[str, Any]]:
    """``(preserving dataset | None, breaking pair dataset | None, info)`` for the training loop."""
    from .augment import BreakingPairDataset, PreservingDataset

    aug = generate_augmentations(cfg, gallery=False, progress=cfg.train.progress)
    preserving = PreservingDataset(aug.manifest, transform) if "preserving" in augmentation_kinds(cfg) else None
    breaking = BreakingPairDataset(aug.manifest, transform) if "breaking" in augmentation_kinds(cfg) else None
    info = {"generator": aug.generator, "out_dir": str(aug.out_dir), "images": len(aug.manifest),
            "preserving": len(preserving) if preserving is not None else 0,
            "breaking_pairs": len(breaking) if breaking is not None else 0}
    return preserving, breaking, info


# ----------------------------------------------------------------------------- runs
def _run_linear_probe(cfg: RunConfig, bundle, ds: SplitDataset, split: FewShotSplit, timings: dict) -> tuple:
    from .methods.linear_probe import fit_linear_probe

    cache = feature_cache(cfg)
    with timed(timings, "features"):
        xtr, ytr = image_features(bundle, ds, "train", split.train, cache)
        xva, yva = image_features(bundle, ds, "val", split.val, cache)
        xte, yte = image_features(bundle, ds, "test", test_samples(cfg, ds), cache)
    with timed(timings, "train"):
        probe = fit_linear_probe(xtr, ytr, xva, yva, num_classes=ds.num_classes, seed=cfg.seed,
                                 show_progress=cfg.train.progress)
    with timed(timings, "eval"):
        logits = probe.predict_logits(xte)
    extra = {"probe": {"C": probe.C, "val_accuracy": probe.val_accuracy, "search": probe.search}}
    return logits, yte, xte, probe.val_accuracy, extra


def _run_adapted(cfg: RunConfig, bundle, ds: SplitDataset, split: FewShotSplit, timings: dict, out: Path) -> tuple:
    from .methods.adapted import build_adapted
    from .prompts import get_templates
    from .train import evaluate, evaluate_features, save_trained, train, train_transform

    cache = feature_cache(cfg)
    templates = get_templates(cfg.dataset, cfg.ensemble)
    support = None
    with timed(timings, "build"):
        if "meta_adapter" in cfg.method.split("+"):
            # the support is re-encoded by the adapted image tower when it trains, else cached features
            support = (ImageDataset(ds.image_root, split.train, bundle.preprocess_eval) if cfg.trains_vision
                       else image_features(bundle, ds, "train", split.train, cache))
        adapted = build_adapted(bundle, ds.classnames, templates, cfg.method, cfg.lora, cfg.bitfit, cfg.meta_adapter,
                                support=support, seed=cfg.seed)
    extra: dict[str, Any] = {"templates": templates, "parameter_counts": adapted.parameter_counts()}
    val_metric = float("nan")
    if cfg.trains:
        transform = train_transform(bundle)
        preserving = breaking = None
        if cfg.augmentation.kind != "none":
            with timed(timings, "augment"):
                preserving, breaking, extra["augmentation"] = augmentation_datasets(cfg, transform)
        with timed(timings, "train"):
            result = train(adapted, ImageDataset(ds.image_root, split.train, transform),
                           ImageDataset(ds.image_root, split.val, bundle.preprocess_eval), cfg.train,
                           preserving=preserving, breaking=breaking)
        val_metric = result.best_val
        extra["train"] = result.to_dict()
        with timed(timings, "checkpoint"):
            save_trained(adapted, out / "checkpoint.pt", meta={"run_key": cfg.run_key, "seed": cfg.seed,
                                                              "train_config": cfg.to_dict()["train"]})
    with timed(timings, "eval"):
        if adapted.encoders_frozen:
            xte, yte = image_features(bundle, ds, "test", test_samples(cfg, ds), cache)
            res = evaluate_features(adapted, xte, yte)
            if not cfg.trains:
                xva, yva = image_features(bundle, ds, "val", split.val, cache)
                val_metric = float((evaluate_features(adapted, xva, yva)["logits"].argmax(1) == yva).float().mean())
        else:
            test = ImageDataset(ds.image_root, test_samples(cfg, ds), bundle.preprocess_eval)
            res = evaluate(adapted, test, cfg.train.eval_batch_size, cfg.train.precision, cfg.train.num_workers,
                           progress=cfg.train.progress, desc=f"test {cfg.label}")
    return res["logits"], res["labels"], res["features"], val_metric, extra


def run_method(cfg: RunConfig) -> tuple[RunRecord, Predictions]:
    """Run one method end to end: data, model, (training with validation selection), test predictions,
    per-run figures, then the record (written last, atomically).

    Returns:
        the :class:`~lowres_clip.runs.RunRecord` (metrics ``top1``, ``balanced``, ``val_top1``...,
        wall seconds per step in ``timings``) and the test :class:`~lowres_clip.runs.Predictions`.
    """
    from .analysis import metrics as metrics_mod
    from .models import describe as describe_model
    from .utils import seed_everything

    key = cfg.run_key
    out = run_dir(key, runs_root(cfg))
    record_file = out / "record.json"
    if record_file.exists():
        record_file.unlink()  # a rerun interrupted midway must not leave the old record looking finished
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with timed(timings, "data"):
        ds, split = prepare_data(cfg)
    seed_everything(cfg.seed)
    with timed(timings, "model"):
        bundle = load_model(cfg)
    if cfg.method == "linear_probe":
        logits, labels, feats, val_metric, extra = _run_linear_probe(cfg, bundle, ds, split, timings)
    else:
        logits, labels, feats, val_metric, extra = _run_adapted(cfg, bundle, ds, split, timings, out)
    test = test_samples(cfg, ds)
    preds = Predictions(
        logits=_np(logits), labels=_np(labels), paths=[s.path for s in test], classnames=list(ds.classnames),
        image_root=str(ds.image_root), run_key=key, features=_np(feats), groups=split.groups,
    )
    metrics = metrics_mod.summary(preds)
    metrics["val_top1"] = float(val_metric)
    with timed(timings, "figures"):
        metrics_mod.write_report(preds, root=figures_root(cfg))
    with timed(timings, "save"):
        preds.save(out / "predictions.npz")
    timings["total"] = round(time.perf_counter() - t0, 3)
    extra.update({"model": describe_model(bundle), "split": split.name, "train_shots": len(split.train),
                  "val_shots": len(split.val), "shots_report": split.report})
    record = RunRecord(run_key=key, metrics=metrics, config=cfg.to_dict(), seed=cfg.seed, timings=timings, extra=extra)
    record.save(runs_root(cfg))
    return record, preds


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def load_run(cfg: RunConfig) -> tuple[RunRecord, Predictions]:
    """Record and predictions of a finished run (raises :class:`FileNotFoundError` when unfinished)."""
    out = run_dir(cfg.run_key, runs_root(cfg))
    if not is_finished(cfg.run_key, runs_root(cfg)):
        raise FileNotFoundError(f"run {cfg.run_key} is not finished (no {out / 'record.json'}); run it first.")
    return RunRecord.load(out / "record.json"), Predictions.load(out / "predictions.npz")


def ensure_run(cfg: RunConfig) -> tuple[RunRecord, Predictions]:
    """The finished run of ``cfg``, running it first when needed."""
    return load_run(cfg) if is_finished(cfg.run_key, runs_root(cfg)) else run_method(cfg)


def run_summary(record: RunRecord):
    """One-row DataFrame of a run's headline metrics and wall time (for notebooks)."""
    import pandas as pd

    row = {"run_key": record.run_key, **{k: record.metrics[k] for k in ("top1", "balanced", "val_top1") if k in record.metrics},
           "seconds": record.timings.get("total", float("nan"))}
    return pd.DataFrame([row])


def cell_results(cfg: RunConfig, metrics: Sequence[str] = ("top1", "balanced", "val_top1")):
    """Finished runs of the same dataset, model, K and seed as ``cfg`` (one row per method)."""
    import pandas as pd

    from .runs import load_records, parse_run_key

    rows = []
    for r in load_records(runs_root(cfg), dataset_key(cfg)):
        key = parse_run_key(r.run_key)
        if r.run_key.split("/")[1] == cfg.run_key.split("/")[1] and key["shots"] == cfg.shots and key["seed"] == cfg.seed:
            rows.append({"method": key["method"], **{m: r.metrics.get(m, float("nan")) for m in metrics},
                         "seconds": r.timings.get("total", float("nan"))})
    return pd.DataFrame(rows, columns=["method", *metrics, "seconds"])


def run_figures(preds: Predictions) -> dict[str, Any]:
    """The per-run figures for inline display: normalised confusion matrix and per-class accuracy."""
    from . import plots
    from .analysis import metrics as metrics_mod

    return {
        "confusion": metrics_mod.confusion(preds).figure(normalized=True, title=f"confusion: {preds.run_key}"),
        "per_class_accuracy": plots.per_class_accuracy_bars(metrics_mod.per_class_table(preds),
                                                            title=f"per-class accuracy: {preds.run_key}"),
    }


# ----------------------------------------------------------------------------- failure analysis
def attention_source(cfg: RunConfig, bundle=None):
    """An :class:`~lowres_clip.analysis.attention.AttentionSource` for a finished run's model, or
    ``None`` for the linear probe (its classifier is not a text embedding)."""
    from .analysis.attention import AttentionSource

    if cfg.method == "linear_probe":
        return None
    bundle = bundle or load_model(cfg)
    if cfg.trains:
        from .train import load_trained

        adapted = load_trained(bundle, run_dir(cfg.run_key, runs_root(cfg)) / "checkpoint.pt", cfg.method)
        with torch.no_grad():
            text = adapted.classifier().detach().float()
        return AttentionSource(adapted.model, bundle.preprocess_eval, text)
    from .methods.zero_shot import zero_shot_classifier
    from .prompts import get_templates

    classnames = load_run(cfg)[1].classnames
    return AttentionSource.from_bundle(bundle, zero_shot_classifier(bundle, classnames, get_templates(cfg.dataset, cfg.ensemble)))


@dataclass
class FailureReport:
    """Outputs of :func:`failure_analysis`.

    Attributes:
        baseline, adapted: the two runs' configs (A and B).
        pred_a, pred_b: their test predictions.
        improvements: samples A gets wrong and B right, largest entropy drop first.
        regressions: samples A gets right and B wrong (same ranking, roles swapped).
        cluster_scores: ``{run_key: scores}`` (silhouette, ARI, V-measure...).
        summary: headline numbers (also written as JSON).
        attention: ``{run_key: AttentionSource | None}``.
        paths: every file written.
    """

    baseline: RunConfig
    adapted: RunConfig
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


def failure_analysis(cfg: RunConfig, run_a: str = "zero_shot", run_b: str = "lora", k: int = 8,
                     attention: bool = True, embedding: str | None = None) -> FailureReport:
    """Where does run B (adapted) fix or keep failing what run A (baseline) got wrong?

    Runs A and B (method labels, e.g. ``zero_shot`` and ``lora+aug-classic``) are loaded, or run
    first when unfinished. Written under ``figures/{run_key_b}/``: the improvements ranking
    (``improvements_vs_{A}``, entropy drop, with both runs' attention maps), regressions, top-k
    most confident successes and failures, UMAP clusters and scores (also for A), the per-class
    failure grids of the headless browser (``browser/*.png``), and finally
    ``failure_vs_{A}.json`` with the summary. ``embedding``: ``umap`` or ``pca`` (default: ``pca``
    for smoke runs, else ``umap``).
    """
    from .analysis import browser, clustering, improvements as imp, metrics as metrics_mod, topk

    cfg_a, cfg_b = cfg.with_label(run_a), cfg.with_label(run_b)
    _, pred_a = ensure_run(cfg_a)
    _, pred_b = ensure_run(cfg_b)
    imp.check_comparable(pred_a, pred_b)
    root = figures_root(cfg)
    bundle = load_model(cfg_b) if attention else None
    att = {pred_a.run_key: attention_source(cfg_a, bundle) if attention else None,
           pred_b.run_key: attention_source(cfg_b, bundle) if attention else None}
    att_a, att_b = att[pred_a.run_key], att[pred_b.run_key]
    paths = imp.write_improvements(pred_a, pred_b, k=min(k, 6), attention_a=att_a, attention_b=att_b, root=root)
    regressions = imp.rank_improvements(pred_b, pred_a)
    from . import plots

    paths += plots.save_table(regressions, pred_b.run_key, f"regressions_vs_{cfg_a.label}", root=root)
    paths += topk.write_topk(pred_b, k, att_b, root=root)
    scores: dict[str, dict[str, float]] = {}
    for pred in (pred_a, pred_b):
        scores[pred.run_key], written = clustering.write_clustering(
            pred, seed=cfg.seed, root=root, embedding=embedding or ("pca" if cfg.smoke else "umap"))
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
    out = failure_summary_path(cfg_a, cfg_b)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(out)
    paths.append(out)
    return FailureReport(cfg_a, cfg_b, pred_a, pred_b, table, regressions, scores, summary, att, paths)


def failure_browser(report: FailureReport, k: int = 8):
    """The per-class failure browser (ipywidgets) over both runs of a :class:`FailureReport`."""
    from .analysis.browser import failure_browser as make_browser

    runs = {report.pred_b.run_key: report.pred_b, report.pred_a.run_key: report.pred_a}
    attention = {key: src for key, src in report.attention.items() if src is not None}
    return make_browser(runs, attention=attention, k=k)


# ----------------------------------------------------------------------------- report
@dataclass
class ReportTables:
    """Outputs of :func:`report_tables`.

    Attributes:
        table: the aggregate (one row per dataset, model, method, K: ``n_seeds``, means, stds).
        display: the same with ``mean ± std`` strings (percent).
        runs: one row per finished run (metrics, seconds).
        figures: ``{name: Figure}``.
        paths: files written under ``figures/{dataset}/tables/``.
    """

    table: Any
    display: Any
    runs: Any
    figures: dict[str, Any]
    paths: list[Path]


def method_order(labels: Sequence[str]) -> list[str]:
    """Method labels in study order: baselines, single adapters, combinations, augmented runs."""
    from .runs import METHOD_ORDER

    def key(label: str) -> tuple:
        parts = label.split("+")
        first = METHOD_ORDER.index(parts[0]) if parts[0] in METHOD_ORDER else len(METHOD_ORDER)
        return ("aug-" in label, len(parts), first, label)

    return sorted(dict.fromkeys(labels), key=key)


def report_tables(cfg: RunConfig, metrics: Sequence[str] = ("top1", "balanced")) -> ReportTables:
    """Aggregate every finished run of the dataset over seeds and write the tables and figures.

    ``figures/{dataset}/tables/results.{csv,md,tex}`` (mean ± std over seeds, via
    :func:`lowres_clip.runs.aggregate` / :func:`~lowres_clip.runs.write_tables`), ``runs.csv`` (one
    row per run) and ``methods_by_shots.png`` (accuracy per method, grouped by K, std error bars).
    """
    import pandas as pd

    from . import plots
    from .runs import aggregate, format_table, load_records, parse_run_key, write_tables

    records = load_records(runs_root(cfg), dataset_key(cfg))
    if not records:
        raise FileNotFoundError(f"no finished runs of {dataset_key(cfg)!r} under {runs_root(cfg)}; run some methods first.")
    table = aggregate(records, metrics)
    rank = {m: i for i, m in enumerate(method_order(table["method"]))}
    table = table.sort_values(["dataset", "model_weights", "method", "shots"],
                              key=lambda col: col.map(rank) if col.name == "method" else col).reset_index(drop=True)
    out = tables_dir(cfg)
    paths = write_tables(table, out, TABLE_NAME, metrics)
    runs = pd.DataFrame([{**parse_run_key(r.run_key), **{m: r.metrics.get(m, float("nan")) for m in metrics},
                          "seconds": r.timings.get("total", float("nan"))} for r in records])
    paths += plots.save_table(runs, out, "runs", formats=("csv",))
    fig = plots.compare_methods(runs, value=metrics[0], method="method", hue="shots", order=method_order(runs["method"]),
                                title=f"{dataset_key(cfg)}: {metrics[0]} per method (mean ± std over seeds)")
    paths += plots.save_figure(fig, out, "methods_by_shots")
    return ReportTables(table, format_table(table, metrics), runs, {"methods_by_shots": fig}, paths)


__all__ = [
    "Augmentations", "DataOverview", "FailureReport", "ReportTables", "attention_source", "augmentation_dir",
    "caveats", "cell_results", "class_counts", "data_overview", "describe", "ensure_run", "failure_analysis",
    "failure_browser", "generate_augmentations", "load_model", "load_run", "make_smoke_dataset", "method_order",
    "prepare_data", "print_caveats", "report_tables", "resolve_data_root", "run_figures", "run_method",
    "run_summary", "test_samples",
]
