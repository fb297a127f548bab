"""Which checkpoint-selection rule should the CPU profile use? ``last`` against ``best_val``, measured.

For each method, one training run of the CPU profile (EuroSAT, 16 shots) records the trainable
parameters at every validation; the accuracy on held-out TRAIN images (:func:`lowres_clip.heldout.
held_out_dataset`: 100 per class, never in the K-shot draw; the dataset has no test split, so no
test label is read) of the parameters each rule keeps (:func:`lowres_clip.train.select_checkpoint`)
is then measured on the same trajectory, so the rules are compared without retraining. Also prints
the untrained (step 0) accuracy. The profiles keep CLIP-LoRA's rule (``last``) whatever this prints:
it is a check of the anchor's rule, not a choice.

    python benchmarks/selection_rule.py --methods lora bitfit meta_adapter --seeds 1

Ends with ``SUMMARY``: whether the profile's rule (``train.selection``) is within 0.5 points of the
better rule's mean held-out accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def measure(method: str, seed: int, args) -> dict:
    from lowres_clip import pipeline
    from lowres_clip import train as train_mod
    from lowres_clip.train import loop as train_loop  # where train() looks _validator up
    from lowres_clip.datasets import ImageDataset
    from lowres_clip.features import image_features
    from lowres_clip.methods.adapted import build_adapted
    from lowres_clip.spec import resolve_run

    from lowres_clip.datasets import load_dataset
    from lowres_clip.heldout import held_out_dataset
    from lowres_clip.sampling import few_shot

    overrides = {"method": method, "seed": seed, "runs_root": args.work,
                 "figures_root": args.work, "train.progress": False, **dict(args.set or [])}
    if args.data_root:
        overrides["data_root"] = args.data_root
    spec = resolve_run(args.profile, overrides)
    cfg = spec.config
    ds = held_out_dataset(load_dataset(cfg.dataset, pipeline.resolve_data_root(spec), exclude=cfg.exclude))
    split = few_shot(ds, cfg.shots, seed)
    bundle = pipeline.load_model(spec)
    cache = pipeline.feature_cache(spec)
    support = None
    if "meta_adapter" in spec.label.parts:  # as the run step: re-encoded when the image tower trains
        support = (ImageDataset(ds.image_root, split.train, bundle.preprocess_eval) if cfg.trains_vision
                   else image_features(bundle, ds, "train", split.train, cache))
    adapted = build_adapted(bundle, ds.classnames, cfg.templates(), cfg.method, cfg.lora, cfg.bitfit,
                            cfg.meta_adapter, support=support, seed=cfg.seed)
    states: dict[int, dict] = {}
    original = train_loop._validator

    def snapshot_validator(adapted_, val_set, tcfg, dtype):
        score = original(adapted_, val_set, tcfg, dtype)
        calls = iter(range(10**9))

        def scored() -> float:
            n = next(calls)
            states[n] = {k: v.detach().clone() for k, v in adapted_.trainable_state().items()}
            return score()

        return scored

    train_loop._validator = snapshot_validator
    try:
        eff = cfg.effective_train()
        t0 = time.perf_counter()
        result = train_mod.train(
            adapted, ImageDataset(ds.image_root, split.train, train_mod.train_transform(bundle, eff.crop_scale)),
            ImageDataset(ds.image_root, split.val, bundle.preprocess_eval), dataclasses.replace(cfg.train, selection="last"))
        seconds = time.perf_counter() - t0
    finally:
        train_loop._validator = original
    steps = [h["step"] for h in result.history]
    state_at = {step: states[i] for i, step in enumerate(steps)}
    chosen = {rule: train_mod.select_checkpoint(result.history, rule)[0] for rule in ("last", "best_val")}
    dev = ds.split("dev")
    xte = yte = None
    if adapted.encoders_frozen:
        xte, yte = image_features(bundle, ds, "dev", dev, cache)
    accuracy: dict[int, float] = {}
    for step in sorted({0, *chosen.values()}):
        adapted.load_trainable_state(state_at[step])
        if xte is not None:
            out = train_mod.evaluate_features(adapted, xte, yte)
        else:
            out = train_mod.evaluate(adapted, ImageDataset(ds.image_root, dev, bundle.preprocess_eval),
                                     cfg.train.eval_batch_size, cfg.train.precision, progress=False)
        accuracy[step] = float((out["logits"].argmax(1) == out["labels"]).float().mean())
    vals = {h["step"]: h["val"] for h in result.history}
    return {"method": method, "seed": seed, "iterations": result.iterations, "train_s": round(seconds, 1),
            "val": vals, "chosen": chosen, "dev": {rule: accuracy[s] for rule, s in chosen.items()},
            "step0": accuracy[0], "overrides": result.overrides}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--methods", nargs="+", default=["lora", "bitfit", "meta_adapter"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--data-root", default=None)
    p.add_argument("--work", default=None, help="folder for splits and caches (default: a temporary one)")
    p.add_argument("--set", nargs=2, action="append", metavar=("KEY", "VALUE"), type=str,
                   help="extra dotted override, value parsed as YAML (e.g. --set meta_adapter.dropout 0.4)")
    args = p.parse_args(argv)
    import yaml

    args.set = [(k, yaml.safe_load(v)) for k, v in (args.set or [])]
    args.work = args.work or tempfile.mkdtemp(prefix="selection_rule_")
    from lowres_clip.datasets import default_data_root

    root = Path(args.data_root) if args.data_root else default_data_root()
    if not (root / "eurosat" / "split_zhou_EuroSAT.json").is_file():
        print(f"SKIP: EuroSAT not under {root}")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            r = measure(method, seed, args)
            rows.append(r)
            print(f"{method} seed {seed}: {r['iterations']} iterations in {r['train_s']}s; val by step {r['val']}; "
                  f"step 0 dev {r['step0']:.4f}; last -> step {r['chosen']['last']} dev {r['dev']['last']:.4f}; "
                  f"best_val -> step {r['chosen']['best_val']} dev {r['dev']['best_val']:.4f}"
                  + (f"; overrides {r['overrides']}" if r["overrides"] else ""), flush=True)
    from lowres_clip.config import resolve_config

    mean = {rule: float(np.mean([r["dev"][rule] for r in rows])) for rule in ("last", "best_val")}
    chosen = resolve_config(args.profile).train.selection
    met = mean[chosen] >= max(mean.values()) - 0.005
    print(f"SUMMARY goal: the {args.profile} profile's rule ({chosen}) within 0.5 points of the better rule; mean held-out "
          f"accuracy over {len(rows)} runs: last {mean['last']:.4f}, best_val {mean['best_val']:.4f}: "
          f"{'MET' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
