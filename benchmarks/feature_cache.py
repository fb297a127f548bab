"""Benchmark: zero-shot evaluation of the EuroSAT validation split, cold versus warm feature cache.

Goal: the warm run is at least 20x faster than the cold one. Both runs happen in this process, in
a fresh temporary cache folder, so the ratio is measured in one run. Skips (exit 0) when
``../shared/data`` (or ``--data-root``) has no EuroSAT.

    python benchmarks/feature_cache.py [--model EffLite0-MiniLM --weights embedded] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from lowres_clip.datasets import DatasetError, default_data_root, load_dataset
from lowres_clip.features import FeatureCache, image_features, text_classifier
from lowres_clip.models import load_clip
from lowres_clip.prompts import get_templates


def zero_shot_val(bundle, ds, samples, cache: FeatureCache) -> float:
    """Top-1 of zero-shot CLIP on ``samples``, every feature through ``cache``."""
    feats, labels = image_features(bundle, ds, "val", samples, cache=cache)
    weights = text_classifier(bundle, ds.name, ds.classnames, get_templates(ds.name), cache)
    return ((100 * feats @ weights.T).argmax(1) == labels).float().mean().item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="EffLite0-MiniLM")
    ap.add_argument("--weights", default="embedded")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N validation images")
    args = ap.parse_args()
    try:
        ds = load_dataset("eurosat", args.data_root or default_data_root())
    except DatasetError as exc:
        print(f"SKIP: EuroSAT not available ({exc})")
        return 0
    torch.set_num_threads(torch.get_num_threads())
    bundle = load_clip(args.model, args.weights)
    samples = ds.split("val")[: args.limit or None]
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        t0 = time.perf_counter()
        acc_cold = zero_shot_val(bundle, ds, samples, cache)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc_warm = zero_shot_val(bundle, ds, samples, cache)
        warm = time.perf_counter() - t0
    assert acc_cold == acc_warm, "warm cache must reproduce the cold numbers exactly"
    ratio = cold / warm
    print(f"model {args.model} ({args.weights}), {len(samples)} EuroSAT val images, {torch.get_num_threads()} threads")
    print(f"cold cache: {cold:8.2f} s  ({len(samples) / cold:.1f} images/s), zero-shot top-1 {acc_cold:.4f}")
    print(f"warm cache: {warm:8.4f} s, zero-shot top-1 {acc_warm:.4f}")
    print(f"SUMMARY feature-cache: warm is {ratio:.0f}x faster than cold (goal >= 20x): {'MET' if ratio >= 20 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
