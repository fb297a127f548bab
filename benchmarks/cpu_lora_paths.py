"""Benchmark: the two CPU LoRA paths the grid relies on, each against what it replaced, in one run.

On the embedded model (profile ``cpu``, EuroSAT, K=16, seed 1, LoRA on the image tower's 1x1
convolutions and MiniLM's q/k/v):

1. **training step**: the adapters' dropout as :class:`~lowres_clip.methods.lora_fused.MaskDropout`
   (keep masks from random bytes; what the project uses) against plain ``nn.Dropout``
   (``bernoulli_``), the same number of steps of batch 32 each;
2. **evaluation**: encoding ``--eval-images`` test images with the adapters folded into the weights
   (:func:`~lowres_clip.methods.lora.merged_lora`, what :func:`~lowres_clip.train.evaluate` does)
   against the unmerged peft layers, after a short training so that ``B != 0``.

Goal: both ratios > 1. Skips (exit 0, ``SKIP`` line) when EuroSAT is not under ``--data-root`` /
``$LOWRES_CLIP_DATA`` / ``../shared/data``.

    python benchmarks/cpu_lora_paths.py [--steps 20] [--eval-images 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="training steps per dropout kind")
    ap.add_argument("--eval-images", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3, help="alternated measurements of each kind (best kept)")
    args = ap.parse_args()

    from lowres_clip.datasets import DatasetError, default_data_root, load_dataset

    try:
        load_dataset("eurosat", default_data_root())
    except DatasetError as exc:
        print(f"SKIP: eurosat not available ({exc})")
        return 0

    import torch
    import torch.nn as nn

    from lowres_clip.methods.lora import lora_layers, merged_lora
    from lowres_clip.methods.lora_fused import MaskDropout
    from lowres_clip.train.loaders import _loader
    from lowres_clip.utils import autocast, resolve_precision
    from worker_threads import cpu_lora_run, time_steps  # this folder is on sys.path when run as a script

    run = cpu_lora_run(args.eval_images)
    cfg, adapted, test = run.cfg, run.adapted, run.test
    drops = [(layer.lora_dropout, name, d.p) for layer in lora_layers(adapted.model)
             for name, d in layer.lora_dropout.items() if isinstance(d, MaskDropout)]

    def steps(kind: type) -> float:
        for holder, name, p in drops:
            holder[name] = kind(p)
        return time_steps(run, args.steps) / args.steps

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{torch.get_num_threads()} threads, load average {load:.2f}; {len(drops)} adapters with dropout")
    # alternated, best of --repeats each (the machine's load moves); MaskDropout last: the model ends as built
    plain, mask = float("inf"), float("inf")
    for _ in range(args.repeats):
        plain, mask = min(plain, steps(nn.Dropout)), min(mask, steps(MaskDropout))
    print(f"training step, nn.Dropout (bernoulli_): {plain:.3f} s; MaskDropout: {mask:.3f} s -> {plain / mask:.2f}x")

    dtype = resolve_precision(cfg.train.precision, adapted.device)
    adapted.eval()

    @torch.no_grad()
    def encode() -> float:
        t0 = time.perf_counter()
        for images, _, _ in _loader(test, cfg.train.eval_batch_size, False, 0, 0):
            with autocast(adapted.device, dtype):
                adapted.encode_images(images)
        return time.perf_counter() - t0

    encode()  # warm-up
    unmerged = encode()
    with merged_lora(adapted.model):
        merged = encode()
    print(f"encoding {len(test)} test images, unmerged adapters: {unmerged:.2f} s; merged: {merged:.2f} s "
          f"-> {unmerged / merged:.2f}x")
    ok = plain / mask > 1 and unmerged / merged > 1
    print(f"SUMMARY cpu-lora-paths: MaskDropout step {plain / mask:.2f}x nn.Dropout, merged evaluation "
          f"{unmerged / merged:.2f}x unmerged (goal > 1 each): {'MET' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
