"""Run keys, run records, predictions files and aggregation over seeds.

A run is identified by its key ``{dataset}/{model}-{weights}/{method}/k{shots}-s{seed}``. Its
outputs live in ``runs/{run_key}/``: ``record.json`` (metrics, config, seed, package versions, git
commit, wall times) and ``predictions.npz`` (test logits, labels, features, sample paths). The
record is written last and atomically, so a run interrupted midway leaves no file that looks
finished; :func:`is_finished` is what the study runner checks to skip finished runs.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .atomic import atomic_write, atomic_write_text

REPO = Path(__file__).resolve().parents[2]
RUNS_ROOT = REPO / "runs"
FIGURES_ROOT = REPO / "figures"
METHOD_ORDER = ("zero_shot", "linear_probe", "lora", "bitfit", "meta_adapter")
TRACKED_PACKAGES = (
    "torch", "torchvision", "open_clip_torch", "peft", "diffusers", "timm", "transformers",
    "numpy", "scikit-learn", "umap-learn",
)


def canonical_method(method: str) -> str:
    """Order the parts of a combined method name canonically (``bitfit+lora`` -> ``lora+bitfit``).

    Parts that are not base methods (e.g. ``aug-classic``) keep their order after the base methods.
    """
    parts = [p.strip() for p in method.split("+") if p.strip()]
    if not parts:
        raise ValueError("empty method name")
    base = sorted((p for p in parts if p in METHOD_ORDER), key=METHOD_ORDER.index)
    return "+".join(base + [p for p in parts if p not in METHOD_ORDER])


def run_key(dataset: str, model: str, weights: str, method: str, shots: int, seed: int) -> str:
    """``{dataset}/{model}-{weights}/{method}/k{shots}-s{seed}`` (method in canonical order)."""
    from .models import weights_id

    ds = dataset.split(":", 1)[-1].rstrip("/").split("/")[-1] if dataset.startswith("imagefolder:") else dataset
    return f"{ds}/{model}-{weights_id(weights)}/{canonical_method(method)}/k{shots}-s{seed}"


def parse_run_key(key: str) -> dict[str, Any]:
    """Inverse of :func:`run_key` (model and weights are returned joined as ``model_weights``)."""
    dataset, mw, method, ks = key.split("/")
    k, s = ks.split("-s")
    return {"dataset": dataset, "model_weights": mw, "method": method, "shots": int(k[1:]), "seed": int(s)}


def run_dir(key: str, root: str | Path | None = None) -> Path:
    return Path(root or RUNS_ROOT) / key


def figure_dir(key: str, root: str | Path | None = None) -> Path:
    """``figures/{run_key}/`` (created)."""
    d = Path(root or FIGURES_ROOT) / key
    d.mkdir(parents=True, exist_ok=True)
    return d


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
        run_key: key of the run that made them.
        features: ``[N, D]`` L2-normalised image features (optional).
        groups: per-class ``head``/``medium``/``tail`` labels (long-tailed runs) or ``None``.
        split: evaluated split (``test``).
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

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.features is not None:
            self.features = np.asarray(self.features, dtype=np.float32)
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
        if self.features is not None:
            arrays["features"] = self.features
        atomic_write(path, lambda p: np.savez_compressed(p, **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            feats = z["features"] if "features" in z.files else None
            return cls(logits=z["logits"], labels=z["labels"], features=feats, **meta)


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


@dataclass
class RunRecord:
    """The one result file of a run (``record.json``), stamped with everything needed to trust it.

    Attributes:
        run_key: the run's key.
        metrics: test metrics (``top1``, ``balanced``...) and validation metrics (``val_top1``).
        config: the full resolved run configuration.
        seed: the run's seed.
        timings: wall seconds per step (``train``, ``eval``...).
        versions: package versions.
        commit: git commit of the code (``+dirty`` when uncommitted changes existed).
        created: UNIX time the record was written.
        extra: anything else a method wants to keep (parameter counts, shots report...).
    """

    run_key: str
    metrics: dict[str, float]
    config: dict[str, Any]
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    commit: str = field(default_factory=git_commit)
    created: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, root: str | Path | None = None) -> Path:
        """Write ``runs/{run_key}/record.json`` atomically (the run's completion marker)."""
        path = run_dir(self.run_key, root) / "record.json"
        text = json.dumps(asdict(self), indent=2, default=_json_default)
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RunRecord":
        return cls(**json.loads(Path(path).read_text()))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def is_finished(key: str, root: str | Path | None = None) -> bool:
    """A run is finished when its record exists (written last, atomically)."""
    return (run_dir(key, root) / "record.json").is_file()


def load_records(root: str | Path | None = None, dataset: str | None = None) -> list[RunRecord]:
    base = Path(root or RUNS_ROOT)
    pattern = f"{dataset}/**/record.json" if dataset else "**/record.json"
    return [RunRecord.load(p) for p in sorted(base.glob(pattern))]


# ----------------------------------------------------------------------------- aggregation
def aggregate(records: Sequence[RunRecord], metrics: Sequence[str] = ("top1", "balanced")):
    """Mean and sample std over seeds per (dataset, model, method, shots).

    Returns a pandas DataFrame with columns ``dataset, model_weights, method, shots, n_seeds`` and
    ``{metric}_mean`` / ``{metric}_std`` for each metric (std is 0 for a single seed).
    """
    import pandas as pd

    rows = []
    for r in records:
        row = parse_run_key(r.run_key)
        row.update({m: r.metrics.get(m, np.nan) for m in metrics})
        rows.append(row)
    if not rows:
        raise ValueError("no run records to aggregate")
    df = pd.DataFrame(rows)
    keys = ["dataset", "model_weights", "method", "shots"]
    g = df.groupby(keys, sort=True)
    out = g.size().rename("n_seeds").to_frame()
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    return out.reset_index()


def format_table(df, metrics: Sequence[str] = ("top1", "balanced"), scale: float = 100.0):
    """A display table: one ``mean ± std`` string column per metric (in percent by default)."""
    shown = df[["dataset", "model_weights", "method", "shots", "n_seeds"]].copy()
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
