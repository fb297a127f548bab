"""Benchmark: one notebook on every CPU thread, or one single-threaded worker per CPU?

The ``cpu`` profile runs its grid on local workers with the CPU threads shared evenly
(:func:`lowres_clip.study.executors.worker_threads`: two workers of one thread on 2 cores). This script
measures why, in one run, on the study's own work: LoRA training steps of the embedded model
(profile ``cpu``, EuroSAT, K=16, seed 1, batch 32) followed by evaluating 1,024 test images.

1. one worker process with ``--threads`` = all CPUs does the work once (``T_one``);
2. one single-threaded worker process per CPU does the same work at the same time (``T_many``,
   wall time until the last one ends).

Throughput ratio = ``(workers * work / T_many) / (work / T_one)``. Goal: > 1 (parallel
single-threaded workers finish more of the grid per minute than one process on all threads).
Each worker's timings are printed too (model load excluded: it is timed separately).

Skips (exit 0, ``SKIP`` line) when EuroSAT is not under ``--data-root`` / ``$LOWRES_CLIP_DATA`` /
``../shared/data``.

    python benchmarks/worker_threads.py [--steps 20] [--eval-images 1024] [--cpus N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace


def cpu_lora_run(eval_images: int) -> SimpleNamespace:
    """The study's LoRA run (profile ``cpu``, EuroSAT, K=16, seed 1) ready to train: ``cfg``,
    ``adapted``, ``train_set`` (training transform) and the first ``eval_images`` test images
    (``test``). Shared by ``cpu_lora_paths.py``."""
    from lowres_clip.datasets import ImageDataset
    from lowres_clip.methods.adapted import build_adapted
    from lowres_clip.pipeline.common import load_model, test_samples
    from lowres_clip.pipeline.data import prepare_data
    from lowres_clip.spec import resolve_run
    from lowres_clip.train import train_transform

    spec = resolve_run("cpu", {"train.progress": False}, method="lora", shots=16, seed=1)
    cfg = spec.config
    ds, split = prepare_data(spec)
    bundle = load_model(spec)
    adapted = build_adapted(bundle, ds.classnames, cfg.templates(), cfg.method, cfg.lora, cfg.bitfit,
                            cfg.meta_adapter, seed=cfg.seed)
    return SimpleNamespace(
        cfg=cfg, adapted=adapted,
        train_set=ImageDataset(ds.image_root, split.train, train_transform(bundle, cfg.train.crop_scale)),
        test=ImageDataset(ds.image_root, test_samples(spec, ds)[:eval_images], bundle.preprocess_eval))


def time_steps(run: SimpleNamespace, steps: int) -> float:
    """Seconds of ``steps`` training steps of ``run`` (after 2 warm-up steps)."""
    import dataclasses

    from lowres_clip.train import train

    train(run.adapted, run.train_set, None, dataclasses.replace(run.cfg.train, iterations=2, eval_every=10**6))
    t0 = time.perf_counter()
    train(run.adapted, run.train_set, None, dataclasses.replace(run.cfg.train, iterations=steps, eval_every=10**6))
    return time.perf_counter() - t0


def worker(steps: int, eval_images: int, threads: int) -> dict[str, float]:
    """Train ``steps`` LoRA steps, then evaluate ``eval_images`` test images; seconds of each."""
    import torch

    torch.set_num_threads(threads)
    from lowres_clip.train import evaluate

    run = cpu_lora_run(eval_images)
    trained = time_steps(run, steps)
    t1 = time.perf_counter()
    evaluate(run.adapted, run.test, run.cfg.train.eval_batch_size, run.cfg.train.precision, progress=False)
    evaluated = time.perf_counter() - t1
    return {"train": trained, "eval": evaluated, "total": trained + evaluated}


def launch(n: int, threads: int, args: argparse.Namespace) -> tuple[float, list[dict[str, float]]]:
    """Start ``n`` workers of ``threads`` threads at once; wall seconds of the timed work (the
    latest end minus the earliest start, from each worker's report) and each worker's timings."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--steps", str(args.steps),
           "--eval-images", str(args.eval_images)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    reports = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed with exit code {p.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return wall, reports


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="LoRA training steps per worker")
    ap.add_argument("--eval-images", type=int, default=1024, help="test images each worker evaluates")
    ap.add_argument("--cpus", type=int, default=None, help="default: os.cpu_count()")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        # the timed work starts after the model load; wall clock so that workers can be compared
        times = worker(args.steps, args.eval_images, args.threads)
        end = time.time()
        print(json.dumps({**times, "start": end - times["total"], "end": end}))
        return 0

    from lowres_clip.datasets import DatasetError, default_data_root, load_dataset

    try:
        load_dataset("eurosat", default_data_root())
    except DatasetError as exc:
        print(f"SKIP: eurosat not available ({exc})")
        return 0
    cpus = args.cpus or os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpus} CPUs, load average {load:.2f}; work per worker: {args.steps} LoRA steps (batch 32) "
          f"+ evaluating {args.eval_images} images")
    one, (r1,) = launch(1, cpus, args)
    print(f"1 worker x {cpus} threads : {one:6.1f} s  (train {r1['train']:.1f} s, eval {r1['eval']:.1f} s)")
    many, reports = launch(cpus, 1, args)
    per = ", ".join(f"train {r['train']:.1f} s eval {r['eval']:.1f} s" for r in reports)
    print(f"{cpus} workers x 1 thread : {many:6.1f} s  ({per})")
    ratio = (cpus / many) / (1 / one)
    verdict = "MET" if ratio > 1.0 else "MISSED"
    print(f"SUMMARY worker-threads: {cpus} single-threaded workers do {ratio:.2f}x the work per second of one "
          f"{cpus}-thread worker (goal > 1): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
