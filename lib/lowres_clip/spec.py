"""What a run is: :class:`RunSpec`, built once from a resolved :class:`~lowres_clip.config.RunConfig`.

A run is its settings. The spec owns, and is the only place that builds:

* the readable **key** ``{dataset}/{model}-{weights}/{label}/k{shots}-s{seed}`` (for people);
* the **settings** that change a result: the resolved config less its ``runtime`` fields (paths,
  device, worker counts, progress bars), less the settings of methods the run does not use, plus
  ``sampler`` (:data:`lowres_clip.sampling.SAMPLER`): the code that draws the K shots is part of
  what a run is, so runs (and committed records) made with another sampler are not reused;
* three short hashes of those settings: :attr:`RunSpec.config_hash` (all of them: the run's
  identity), :attr:`RunSpec.group_hash` (all but the seed: runs a table averages over seeds) and
  :attr:`RunSpec.curve_hash` (all but seed and shots: one line of an accuracy-vs-shots figure);
* the **variant**: a hash of the settings the key does not show, so that ``{key}/{variant}`` (the
  run id) names one set of settings exactly and two runs whose settings differ never share a folder;
* every path derived from them (record, predictions, checkpoint, figures, executed notebook), and
  whether the run is finished *with these settings* (:meth:`RunSpec.is_finished`).

Other modules receive a spec and ask it; nobody rebuilds a key or a path. This module imports
nothing heavy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from . import registry
from .config import RunConfig, generator_config_class, resolve_config
from .registry import MethodLabel
from .sampling import SAMPLER, cell_name  # noqa: F401 (cell_name: the one writer of cell names)

REPO = Path(__file__).resolve().parents[2]
RUNS_ROOT = REPO / "runs"
FIGURES_ROOT = REPO / "figures"
CACHE_ENV = "LOWRES_CLIP_CACHE"
RECORD_FILE = "record.json"
PREDICTIONS_FILE = "predictions.npz"
CHECKPOINT_FILE = "checkpoint.pt"
STUDY_LOG = "study-log.json"  # runs/{dataset}/: the last study invocation that ran something
STUDY_LOGS = "study-logs"  # runs/{dataset}/study-logs/{date}.json: every invocation
HASH_LENGTH = 8
RANDOM_WEIGHTS = ("random", "none", "")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# settings shown by the key itself (left out of the variant hash)
KEY_SETTINGS = ("dataset", "model", "weights", "method", "augmentation.kind", "augmentation.use", "shots", "seed")
SEED_SETTINGS = ("seed", "train.seed")


def weights_kind(weights: str | None) -> str:
    """What ``weights`` names: ``random`` (``None``, ``random``, ``none``, ``""``), ``file`` (a path:
    it holds a path separator or ends in a checkpoint suffix, :data:`CHECKPOINT_SUFFIXES`) or ``tag``
    (a pretrained tag such as ``openai``, or ``embedded``). The one owner of that decision
    (:func:`weights_id`, :mod:`lowres_clip.models`, :mod:`lowres_clip.preflight` ask it)."""
    if weights is None or str(weights).lower() in RANDOM_WEIGHTS:
        return "random"
    w = str(weights)
    if os.sep in w or "/" in w or w.endswith(CHECKPOINT_SUFFIXES):
        return "file"
    return "tag"


def weights_id(weights: str | None) -> str:
    """A filesystem-safe identifier for ``weights`` (file paths become ``file-<name>-<hash>``)."""
    kind = weights_kind(weights)
    if kind == "random":
        return "random"
    w = str(weights)
    if kind == "file":
        p = Path(w)
        stat = f"{p.resolve()}:{p.stat().st_size if p.exists() else 0}"
        return f"file-{p.stem}-{hashlib.sha1(stat.encode()).hexdigest()[:8]}"
    return w.replace("/", "_")


def dataset_name(dataset: str) -> str:
    """The dataset part of keys and folders: ``eurosat``; an ImageFolder's folder name."""
    if dataset.startswith("imagefolder:"):
        return dataset.split(":", 1)[-1].rstrip("/").split("/")[-1]
    return dataset


def default_cache_root() -> Path:
    """``$LOWRES_CLIP_CACHE`` or ``<repo>/.cache/lowres_clip``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / ".cache" / "lowres_clip"


def short_hash(value: Any) -> str:
    """The first :data:`HASH_LENGTH` hex digits of the SHA-256 of ``value`` as canonical JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


_ABSENT = object()


def _settings_of(obj: Any) -> Any:
    """A dataclass as a JSON-able dict without its ``runtime`` fields, nor the fields added later
    that hold the value they had before they existed (:func:`lowres_clip.settings.added_field`),
    recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _settings_of(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("runtime") and getattr(obj, f.name) != f.metadata.get("absent_means", _ABSENT)}
    if isinstance(obj, Mapping):
        return {str(k): _settings_of(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_settings_of(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def result_settings(cfg: RunConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that change a result (see the module docstring).

    Added: ``sampler``, the identity of the few-shot sampler. Left out: ``runtime`` fields; the settings of methods the run does not combine; the training
    loop's settings for runs without one; augmentation settings for runs without augmentation (and
    the generator's runtime options for runs with it). Weights are given by :func:`weights_id`.
    """
    label = cfg.method_label
    out = _settings_of(cfg)
    out["method"] = label.method  # canonical (lora+bitfit), however the config spells it
    out["weights"] = weights_id(cfg.weights)
    out["sampler"] = SAMPLER  # which shots a seed gives (lowres_clip.sampling)
    out.pop("plugin_settings", None)
    for name, entry in registry.methods().items():
        if entry.config_field and name not in label.parts:
            out.pop(entry.config_field, None)
        elif entry.config_field and entry.config_field not in out:  # a method registered outside the package
            out[entry.config_field] = _settings_of(cfg.settings_of(name))
    if label.trains:
        # Kept for hash continuity: runs were recorded when validation copied the run's seed and
        # augmentation variant into ``train``; the settings show the loop's values
        # (RunConfig.train_settings), here and nowhere else, so every recorded hash still holds.
        out["train"] = _settings_of(cfg.train_settings())
    else:
        out.pop("train", None)
    if not label.augmented:
        out.pop("augmentation", None)
    else:
        runtime = {f.name for f in dataclasses.fields(generator_config_class(label.aug_kind)) if f.metadata.get("runtime")}
        gen = out["augmentation"]["generator"]
        out["augmentation"]["generator"] = {k: v for k, v in gen.items() if k not in runtime}
    return out


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _without(settings: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in flatten(settings).items() if k not in names}


def distinguishing(settings: list[Mapping[str, Any]], ignore: tuple[str, ...] = ("shots", *SEED_SETTINGS)) -> list[str]:
    """For several runs' settings, one text per run naming what sets it apart (``lora.rank=4``).

    For each flattened setting that differs between the runs (``ignore`` excepted), the value most
    runs share is the reference; a run's text lists the settings where it departs from it, so the
    common (default) run gets ``""``. A setting absent from some runs' settings (a field added later,
    holding the value that reproduces the code before it: :func:`lowres_clip.settings.added_field`)
    has that absent value as its reference, however many runs share it.
    """
    flat = [_without(s, ignore) for s in settings]
    keys = sorted({k for f in flat for k in f})
    texts: list[list[str]] = [[] for _ in flat]
    for k in keys:
        values = [json.dumps(f.get(k), sort_keys=True, default=str) if k in f else "" for f in flat]
        if len(set(values)) < 2:
            continue
        reference = "" if "" in values else max(dict.fromkeys(values), key=values.count)  # most common; ties: first seen
        for text, f, v in zip(texts, flat, values):
            if v != reference:
                text.append(f"{k}={f.get(k, '-')}")
    return [", ".join(t) for t in texts]


@dataclass(frozen=True)
class RunSpec:
    """One run: its settings, identity and paths (see the module docstring).

    Attributes:
        config: the resolved, validated run configuration.
        origin: the command that resolved it (profile, result-affecting parameters, overrides), so
            that a stored record can be re-resolved by the current code (:func:`resolve_origin`).
    """

    config: RunConfig
    origin: dict[str, Any] | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ identity
    @cached_property
    def label(self) -> MethodLabel:
        """The parsed method label (:mod:`lowres_clip.registry`)."""
        return self.config.method_label

    @property
    def dataset(self) -> str:
        """Dataset name of keys and folders (:func:`dataset_name`)."""
        return dataset_name(self.config.dataset)

    @property
    def model_weights(self) -> str:
        """``{model}-{weights id}``, the key's model part."""
        return f"{self.config.model}-{weights_id(self.config.weights)}"

    @property
    def cell(self) -> str:
        """``k{shots}-s{seed}`` (``k{shots}-lt{ratio}-s{seed}`` for long-tailed sampling)."""
        return cell_name(self.config.shots, self.config.seed, self.config.long_tail_ratio)

    @property
    def method_key(self) -> str:
        """``{dataset}/{model}-{weights}/{label}``: the key without the cell (a method's slice of a grid)."""
        return f"{self.dataset}/{self.model_weights}/{self.label}"

    @cached_property
    def key(self) -> str:
        """The readable key ``{dataset}/{model}-{weights}/{label}/k{shots}-s{seed}``."""
        return f"{self.method_key}/{self.cell}"

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Everything that changes this run's result (:func:`result_settings`)."""
        return result_settings(self.config)

    @cached_property
    def config_hash(self) -> str:
        """Hash of every result-affecting setting: the run's identity."""
        return short_hash(self.settings)

    @cached_property
    def group_hash(self) -> str:
        """Hash of every result-affecting setting but the seed (runs averaged in one table row)."""
        return short_hash(_without(self.settings, SEED_SETTINGS))

    @cached_property
    def curve_hash(self) -> str:
        """Hash of every result-affecting setting but seed and shots (one accuracy-vs-shots line)."""
        return short_hash(_without(self.settings, ("shots", *SEED_SETTINGS)))

    @cached_property
    def variant(self) -> str:
        """Hash of the result-affecting settings the key does not show."""
        return short_hash(_without(self.settings, KEY_SETTINGS + SEED_SETTINGS))

    @property
    def id(self) -> str:
        """``{key}/{variant}``: names exactly one set of settings; folders are named by it."""
        return f"{self.key}/{self.variant}"

    def identity(self) -> dict[str, Any]:
        """What records store so that tables never parse keys (and the command that resolved it)."""
        return {"origin": self.origin, "run_id": self.id, "key": self.key, "variant": self.variant, "dataset": self.dataset,
                "model_weights": self.model_weights, "method": str(self.label), "shots": self.config.shots,
                "seed": self.config.seed, "long_tail_ratio": self.config.long_tail_ratio,
                "config_hash": self.config_hash, "group_hash": self.group_hash, "curve_hash": self.curve_hash}

    # ------------------------------------------------------------------ related runs
    def with_label(self, label: str | MethodLabel) -> "RunSpec":
        """The same settings running another method label (``zero_shot``, ``lora+aug-classic``)."""
        origin = None if self.origin is None else {**self.origin, "params": {**self.origin["params"], "method": str(label)}}
        return RunSpec(self.config.with_label(str(label)), origin)

    def replace(self, **changes: Any) -> "RunSpec":
        """A spec with some (possibly dotted) settings changed."""
        origin = None if self.origin is None else {**self.origin, "overrides": {**self.origin["overrides"], **changes}}
        return RunSpec(self.config.replace(**changes), origin)

    # ------------------------------------------------------------------ roots and paths
    @property
    def runs_root(self) -> Path:
        return Path(self.config.runs_root) if self.config.runs_root else RUNS_ROOT

    @property
    def figures_root(self) -> Path:
        return Path(self.config.figures_root) if self.config.figures_root else FIGURES_ROOT

    @property
    def cache_root(self) -> Path:
        return Path(self.config.cache_root) if self.config.cache_root else default_cache_root()

    @property
    def run_dir(self) -> Path:
        """``runs/{key}/{variant}/``: record, predictions, checkpoint."""
        return self.runs_root / self.id

    @property
    def record_path(self) -> Path:
        return self.run_dir / RECORD_FILE

    @property
    def predictions_path(self) -> Path:
        return self.run_dir / PREDICTIONS_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    @property
    def figure_dir(self) -> Path:
        """``figures/{key}/{variant}/``: the run's figures."""
        return self.figures_root / self.id

    def failure_name(self, kind: str, baseline: "RunSpec") -> str:
        """The one name of a failure-analysis output of this run against ``baseline``:
        ``{kind}_vs_{baseline label}-{baseline variant}`` (``kind``: ``failure``, ``improvements``,
        ``regressions``). The variant is part of it, so two baselines that differ only in their
        settings never overwrite each other's files."""
        return f"{kind}_vs_{baseline.label}-{baseline.variant}"

    def failure_summary_path(self, baseline: "RunSpec") -> Path:
        """Summary of the failure analysis of this run against ``baseline`` (written last)."""
        return self.figure_dir / f"{self.failure_name('failure', baseline)}.json"

    @property
    def split_dir(self) -> Path:
        """``runs/{dataset}/splits/``: the saved K-shot splits every method of a cell reads
        (``splits/exclude-{hash}/`` when images are excluded: other data, other splits)."""
        base = self.runs_root / self.dataset / "splits"
        return base / f"exclude-{short_hash(sorted(self.config.exclude))}" if self.config.exclude else base

    @property
    def data_figure_dir(self) -> Path:
        """``figures/{dataset}/data/{cell}/``: the data step's tables and figures."""
        return self.figures_root / self.dataset / "data" / self.cell

    def data_outputs(self) -> list[Path]:
        """Files the data step writes (the study skips it when they all exist)."""
        d = self.data_figure_dir
        return [d / "class_counts.csv", d / "class_counts.png", d / "examples.png"]

    def augmentation_figure_dir(self, generator_folder: str) -> Path:
        """``figures/{dataset}/augment/{generator folder}/{cell}/``."""
        return self.figures_root / self.dataset / "augment" / generator_folder / self.cell

    @property
    def tables_dir(self) -> Path:
        """``figures/{dataset}/tables/``: tables aggregated over runs."""
        return self.figures_root / self.dataset / "tables"

    def table_paths(self, name: str = "results") -> list[Path]:
        """The aggregated tables of the dataset (CSV, Markdown, LaTeX)."""
        return [self.tables_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")]

    def notebook_path(self, notebooks_root: Path, notebook: str) -> Path:
        """Where the study writes the executed notebook of this run."""
        return Path(notebooks_root) / self.id / notebook

    # ------------------------------------------------------------------ state
    def stored_hash(self) -> str | None:
        """The ``config_hash`` of the record in :attr:`run_dir` (``None``: no readable record)."""
        try:
            return json.loads(self.record_path.read_text())["identity"]["config_hash"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def is_finished(self) -> bool:
        """Whether a record made with exactly these settings exists."""
        return self.stored_hash() == self.config_hash


RUNTIME_PARAMS = ("data_root", "runs_root", "figures_root", "cache_root", "device")


def resolve_run(profile: Any = "cpu", overrides: Mapping[str, Any] | None = None, **params: Any) -> RunSpec:
    """The :class:`RunSpec` of a notebook's parameters (see :func:`lowres_clip.config.resolve_config`)."""
    cfg = resolve_config(profile, overrides, **params)
    origin = {"profile": str(getattr(profile, "name", profile)), "overrides": dict(overrides or {}),
              "params": {k: v for k, v in params.items() if v is not None and k not in RUNTIME_PARAMS}}
    return RunSpec(cfg, origin)


def resolve_runs(profile: Any = "cpu", overrides: Mapping[str, Any] | None = None, shots: Any = None,
                 seed: Any = None, **params: Any) -> list[RunSpec]:
    """The runs of a notebook: one per (K, seed) when ``shots`` / ``seed`` are lists (the study's
    per-method notebooks run a method's slice of the grid in one kernel), else one."""
    ks = list(shots) if isinstance(shots, (list, tuple)) else [shots]
    ss = list(seed) if isinstance(seed, (list, tuple)) else [seed]
    return [resolve_run(profile, overrides, shots=k, seed=s, **params) for k in ks for s in ss]


def resolve_origin(origin: Mapping[str, Any], **runtime: Any) -> RunSpec:
    """Resolve a stored origin again with the current code (``runtime``: roots, device)."""
    return resolve_run(origin["profile"], origin.get("overrides") or None, **origin.get("params", {}), **runtime)
