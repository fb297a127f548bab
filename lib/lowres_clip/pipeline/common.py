"""What every step shares: the data root, the model, the feature cache, caveats and timings."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from ..datasets import Sample, SplitDataset
from ..features import FeatureCache
from ..settings import EMBEDDED_MODEL
from ..smoke import resolve_data_root  # noqa: F401 (re-exported: the steps use it)
from ..spec import RunSpec


def feature_cache(spec: RunSpec) -> FeatureCache:
    """The on-disk feature cache under the run's cache root."""
    return FeatureCache(spec.cache_root / "features")


def load_model(spec: RunSpec):
    """The run's :class:`~lowres_clip.models.ClipBundle`, created under the run's seed, so that
    random-weight models (tests) are the same base model in every step that loads them."""
    from ..models import load_clip, resolve_device
    from ..utils import seeded

    cfg = spec.config
    device = resolve_device(cfg.device)
    with seeded(cfg.seed, device):
        return load_clip(cfg.model, cfg.weights, device=device, image_size=cfg.image_size)


def test_samples(spec: RunSpec, ds: SplitDataset) -> list[Sample]:
    """The evaluated test images: all of them, or ``test_subset`` of them, class-stratified and
    drawn with seed 0 (scikit-learn ``train_test_split``), kept in the split's order."""
    import numpy as np

    test = ds.split("test")
    n = spec.config.test_subset
    if n is None or n >= len(test):
        return list(test)
    from sklearn.model_selection import train_test_split

    labels = [s.label for s in test]
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 and n >= len(counts[counts > 0]) else None
    keep, _ = train_test_split(np.arange(len(test)), train_size=n, random_state=0, stratify=stratify)
    return [test[i] for i in sorted(keep)]


def caveats(spec: RunSpec) -> list[str]:
    """Warnings that belong next to this run's numbers (e.g. the embedded model's zero-shot caveat)."""
    cfg = spec.config
    out = []
    if cfg.model == EMBEDDED_MODEL or cfg.weights == "embedded":
        from ..embedded import EMBEDDED_CAVEAT

        out.append(EMBEDDED_CAVEAT)
    if cfg.smoke:
        out.append("smoke run: tiny model and data, a handful of iterations; the numbers mean nothing.")
    if cfg.augmentation.kind == "classic":
        out.append("classic augmentation: image transforms stand in for the paper's diffusion model.")
    return out


def print_caveats(spec: RunSpec) -> None:
    """Print :func:`caveats` (notebooks call this under the configuration)."""
    for text in caveats(spec):
        print(f"NOTE: {text}")


def describe(spec: RunSpec):
    """The key settings of a run as a pandas Series (shown at the top of each notebook)."""
    import pandas as pd

    cfg = spec.config
    return pd.Series({
        "profile": cfg.profile, "run": spec.key, "variant (settings hash)": spec.variant,
        "config hash": spec.config_hash, "dataset": cfg.dataset,
        "data_root": str(resolve_data_root(spec, create=False)), "model": f"{cfg.model} ({cfg.weights})",
        "method": spec.label, "shots": cfg.shots, "seed": cfg.seed, "device": cfg.device, "smoke": cfg.smoke,
        "run folder": str(spec.run_dir), "figures": str(spec.figure_dir),
    }, name=spec.id)


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the wall seconds of a block to ``timings[step]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + round(time.perf_counter() - t0, 3)
