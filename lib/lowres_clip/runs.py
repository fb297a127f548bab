"""Run records, predictions files and aggregation of records into tables.

What a run *is* (key, settings hash, paths) is owned by :class:`lowres_clip.spec.RunSpec`. A run's
outputs live in its ``spec.run_dir``: ``predictions.npz`` (test logits, labels, features, sample
paths) and, written last and atomically, ``record.json`` (:class:`RunRecord`: metrics, the full
resolved config and its result-affecting settings with their hashes, seed, selection rule and
selected step, template, augmentation variant, package versions, commit, machine and wall times).
Tables are built from records, grouped by their settings hash (:func:`aggregate`), never from keys.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .config import ConfigError
from .spec import REPO, RECORD_FILE, RUNS_ROOT, SEED_SETTINGS, RunSpec, distinguishing, resolve_origin

TRACKED_PACKAGES = (
    "torch", "torchvision", "open_clip_torch", "peft", "diffusers", "timm", "transformers",
    "numpy", "scikit-learn", "umap-learn",
)


# ----------------------------------------------------------------------------- predictions
@dataclass
class Predictions:
    """Test-set outputs of one run, enough to redo every analysis without retraining.

    Attributes:
        logits: ``[N, C]`` float32 (logit scale 100 times cosine similarity for CLIP heads).
        labels: ``[N]`` int64 true labels.
        paths: sample paths relative to ``image_root``.
        classnames: class names ordered by label.
        image_root: folder the paths are relative to.
        run_key: id of the run that made them (``{key}/{variant}``, :attr:`RunSpec.id`); its
            figures go to ``figures/{run_key}/``.
        features: ``[N, D]`` L2-normalised image features (optional).
        groups: per-class ``head``/``medium``/``tail`` labels (long-tailed runs) or ``None``.
        split: evaluated split (``test``).
        text: ``[C, D]`` L2-normalised class embeddings the logits compare the features with (the
            run's text side after adaptation; optional: the linear probe has none). With
            ``features`` it gives the modality gap (:mod:`lowres_clip.analysis.gap`).
    """

    logits: np.ndarray
    labels: np.ndarray
    paths: list[str]
    classnames: list[str]
    image_root: str
    run_key: str
    features: np.ndarray | None = None
    groups: list[str] | None = None
    split: str = "test"
    text: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.features is not None:
            self.features = np.asarray(self.features, dtype=np.float32)
        if self.text is not None:
            self.text = np.asarray(self.text, dtype=np.float32)
        n, c = self.logits.shape
        if len(self.labels) != n or len(self.paths) != n:
            raise ValueError(f"Predictions: {n} logit rows, {len(self.labels)} labels, {len(self.paths)} paths")
        if c != len(self.classnames):
            raise ValueError(f"Predictions: {c} logit columns but {len(self.classnames)} class names")

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {k: getattr(self, k) for k in ("paths", "classnames", "image_root", "run_key", "groups", "split")}
        arrays = {"logits": self.logits, "labels": self.labels, "meta": np.array(json.dumps(meta))}
        for name in ("features", "text"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        atomic_write(path, lambda p: np.savez_compressed(p, **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            optional = {name: z[name] for name in ("features", "text") if name in z.files}
            return cls(logits=z["logits"], labels=z["labels"], **optional, **meta)


def pack_correct(correct: np.ndarray) -> dict[str, Any]:
    """Which test images a run got right, for a record: ``{"n": N, "bits": base64 of the packed
    booleans}`` (8,100 images: 1.4 kB). Paired statistics over images (bootstrap, McNemar) need it."""
    import base64

    correct = np.asarray(correct, dtype=bool)
    return {"n": int(len(correct)), "bits": base64.b64encode(np.packbits(correct).tobytes()).decode()}


def unpack_correct(packed: dict[str, Any] | None) -> np.ndarray | None:
    """The booleans :func:`pack_correct` packed (``None`` for a record without them)."""
    import base64

    if not packed:
        return None
    bits = np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(bits)[: int(packed["n"])].astype(bool)


# ----------------------------------------------------------------------------- records
def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "absent"
    return out


def git_commit(repo: Path = REPO) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if sha.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """Where a record was made and what there can change its numbers: CPU model, ISA flags, caches,
    cores, torch's thread count, platform, torch / oneDNN / MKL versions, GPU
    (:func:`lowres_clip.numerics.host_facts`)."""
    from .numerics import host_facts

    return host_facts()


@dataclass
class RunRecord:
    """The one result file of a run (``record.json``), stamped with everything needed to trust it.

    Attributes:
        identity: what the run is (:meth:`lowres_clip.spec.RunSpec.identity`: run id, key, variant,
            dataset, model, method label, shots, seed and the settings hashes).
        metrics: test metrics (``top1``, ``balanced``...) and validation metrics (``val_top1``).
        config: the full resolved run configuration.
        settings: its result-affecting settings (what :attr:`config_hash` hashes).
        protocol: how the numbers were obtained: ``selection`` rule and ``selected_step``,
            ``template`` (prompts), ``augmentation`` variant.
        timings: wall seconds per step (``train``, ``eval``...).
        versions: package versions.
        commit: git commit of the code (``+dirty`` when uncommitted changes existed).
        machine: CPU, ISA flags, caches, cores, threads, platform, library versions, GPU
            (:func:`machine`): what reproduction compares.
        created: UNIX time the record was written.
        extra: anything else a method keeps (parameter counts, shots report, training history...).
    """

    identity: dict[str, Any]
    metrics: dict[str, float]
    config: dict[str, Any]
    settings: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    commit: str = field(default_factory=git_commit)
    machine: dict[str, Any] = field(default_factory=machine)
    created: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_run(cls, spec: RunSpec, metrics: dict[str, float], **kwargs: Any) -> "RunRecord":
        """A record of ``spec``'s run (identity, config and settings from the spec)."""
        return cls(identity=spec.identity(), metrics=metrics, config=spec.config.to_dict(), settings=spec.settings,
                   **kwargs)

    @property
    def run_id(self) -> str:
        return self.identity["run_id"]

    @property
    def config_hash(self) -> str:
        return self.identity["config_hash"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)

    def save(self, path: str | Path) -> Path:
        """Write the record atomically to ``path`` (the run's completion marker)."""
        atomic_write_text(Path(path), self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "RunRecord":
        """Read a record (raises :class:`ValueError` for files not written by this version)."""
        data = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)}
        if "identity" not in data:
            raise ValueError(f"{path}: a record of an older version (no settings hash); rerun that run.")
        return cls(**{k: v for k, v in data.items() if k in names})


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_records(root: str | Path | None = None, dataset: str | None = None) -> list[RunRecord]:
    """Every record under ``root`` (default ``runs/``), of one dataset folder if given.

    Records of an older format are skipped with one warning naming how many.
    """
    base = Path(root or RUNS_ROOT)
    pattern = f"{dataset}/**/{RECORD_FILE}" if dataset else f"**/{RECORD_FILE}"
    out, old = [], []
    for p in sorted(base.glob(pattern)):
        try:
            out.append(RunRecord.load(p))
        except (ValueError, TypeError, KeyError):
            old.append(p)
    if old:
        warnings.warn(f"skipped {len(old)} record(s) of an older format under {base} (e.g. {old[0]}); rerun those runs.")
    return out


# ----------------------------------------------------------------------------- staleness
@dataclass
class Stale:
    """A committed record the current code would not reproduce with the same command."""

    run_id: str
    stored_hash: str
    current_hash: str | None
    reason: str


def stale_records(records) -> list[Stale]:
    """Records whose stored settings hash differs from the current code's for the same command."""
    out = []
    for r in records:
        origin = r.identity.get("origin")
        if not origin:
            out.append(Stale(r.run_id, r.config_hash, None, "the record names no command (origin)"))
            continue
        try:
            current = resolve_origin(origin).config_hash
        except ConfigError as exc:
            out.append(Stale(r.run_id, r.config_hash, None, f"the command no longer resolves: {exc}"))
            continue
        if current != r.config_hash:
            out.append(Stale(r.run_id, r.config_hash, current, "settings changed since the record was made"))
    return out


# ----------------------------------------------------------------------------- aggregation


def records_frame(records: Sequence[RunRecord], metrics: Sequence[str] = ("top1", "balanced"),
                  ignore: Sequence[str] = ()):
    """One row per record: its identity (``long_tail_ratio`` 1 for balanced K-shot), a ``setting``
    text naming what sets its settings apart from other runs of the same method (``lora.rank=4``;
    ``""`` when nothing does; settings in ``ignore`` are not named, e.g. ``long_tail_ratio`` in a table
    with a ratio column), metrics, seconds."""
    import pandas as pd

    if not records:
        raise ValueError("no run records to aggregate")
    rows = [{**{k: r.identity[k] for k in ("dataset", "model_weights", "method", "shots", "seed", "variant",
                                          "group_hash", "curve_hash", "run_id")},
             "long_tail_ratio": float(r.identity.get("long_tail_ratio") or 1.0),
             **{m: r.metrics.get(m, np.nan) for m in metrics}, "seconds": r.timings.get("total", np.nan),
             "selection": r.protocol.get("selection"), "template": r.protocol.get("template")} for r in records]
    df = pd.DataFrame(rows)
    df["setting"] = ""
    skip = ("shots", *SEED_SETTINGS, *ignore)
    for _, idx in df.groupby(["dataset", "model_weights", "method"]).groups.items():
        texts = distinguishing([records[i].settings for i in idx], ignore=skip)
        df.loc[idx, "setting"] = texts
    df["row"] = [m if not s else f"{m} ({s})" for m, s in zip(df["method"], df["setting"])]
    return df


def split_long_tail(records) -> tuple[list, list]:
    """``(balanced, long_tailed)``: the records without and with an imbalance ratio
    (``identity.long_tail_ratio``; a dataset's natural long tail, e.g. Circuits, is "balanced" here:
    its runs have no ratio and report their groups in the main table)."""
    balanced = [r for r in records if not r.identity.get("long_tail_ratio")]
    return balanced, [r for r in records if r.identity.get("long_tail_ratio")]


def aggregate(records: Sequence[RunRecord], metrics: Sequence[str] = ("top1", "balanced"), ignore: Sequence[str] = ()):
    """Mean and sample std over seeds of runs whose settings differ in nothing but the seed.

    Runs are grouped by the settings hash their records store (``group_hash``), never by parsing
    keys: a row never averages unlike runs. Returns a DataFrame with ``dataset, model_weights,
    method, setting, row`` (the method plus what distinguishes it but ``ignore``: see
    :func:`records_frame`), ``shots, long_tail_ratio, n_seeds, seeds``, ``{metric}_mean`` /
    ``{metric}_std`` (std 0 for one seed), ``selection``, ``template``, ``group_hash`` and ``curve_hash``.
    """
    return aggregate_frame(records_frame(records, metrics, ignore), metrics)


def aggregate_frame(df, metrics: Sequence[str] = ("top1", "balanced")):
    """:func:`aggregate` of a :func:`records_frame` already built (one frame for a table and its runs)."""
    first = ["dataset", "model_weights", "method", "setting", "row", "shots", "long_tail_ratio", "variant", "curve_hash",
             "selection", "template"]
    g = df.groupby("group_hash", sort=False)
    out = g[first].first()
    out["n_seeds"] = g.size()
    out["seeds"] = g["seed"].agg(lambda s: ",".join(str(v) for v in sorted(s)))
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    return out.reset_index()


def format_table(df, metrics: Sequence[str] = ("top1", "balanced"), scale: float = 100.0):
    """A display table: one ``mean ± std`` string column per metric (in percent by default)."""
    ratio = ["long_tail_ratio"] if "long_tail_ratio" in df and (df["long_tail_ratio"] != 1).any() else []
    shown = df[["dataset", "model_weights", "row", "shots", *ratio, "n_seeds"]].rename(
        columns={"row": "method", "long_tail_ratio": "imbalance ratio"})
    for m in metrics:
        shown[m] = [f"{a * scale:.2f} ± {b * scale:.2f}" for a, b in zip(df[f"{m}_mean"], df[f"{m}_std"])]
    return shown


def write_tables(df, out_dir: str | Path, name: str, metrics: Sequence[str] = ("top1", "balanced")) -> list[Path]:
    """Write ``{name}.csv`` (raw numbers), ``{name}.md`` and ``{name}.tex`` (mean ± std)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = format_table(df, metrics)
    paths = [out_dir / f"{name}.csv", out_dir / f"{name}.md", out_dir / f"{name}.tex"]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(shown.to_markdown(index=False) + "\n")
    paths[2].write_text(shown.to_latex(index=False).replace("±", r"$\pm$"))
    return paths
