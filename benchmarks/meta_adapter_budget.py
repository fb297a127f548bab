"""Is the Meta-Adapter alone trained? Its two budgets (``meta_adapter.budget``), measured on EuroSAT.

For each K and seed, the Meta-Adapter alone runs end to end (:func:`lowres_clip.pipeline.run_method`,
the profile's settings, ``--test-subset`` test images) under ``reference`` (its ``meta_adapter.train``
overrides: the reference repository's protocol) and ``run`` (the run's ``train`` settings, the
budget it has inside ``lora+bitfit+meta_adapter``). Printed per run: steps, batch, peak lr, the sum
of the learning rate over the steps (the schedule the loop used), validation accuracy before
training and at the kept step, test accuracy, and how far each parameter group moved
(``extra["train"]["movement"]`` of the record: norm of the change relative to the initial norm).

    python benchmarks/meta_adapter_budget.py --shots 16 1 --seeds 1

Ends with ``SUMMARY``: whether under ``run`` every Meta-Adapter parameter group moves at least 10x
as far as under ``reference`` in every cell.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time


def lr_sum(cfg, iterations: int) -> float:
    """Sum of the learning rate over ``iterations`` steps of the loop's schedule for ``cfg``."""
    import torch

    from lowres_clip.train.loop import _scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = _scheduler(opt, cfg, iterations)
    total = 0.0
    for _ in range(iterations):
        total += opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return total


def measure(budget: str, shots: int, seed: int, args) -> dict:
    from lowres_clip.pipeline import run_method
    from lowres_clip.spec import resolve_run

    overrides = {"test_subset": args.test_subset, "meta_adapter.budget": budget, "train.progress": False}
    roots = {"runs_root": f"{args.work}/runs", "figures_root": f"{args.work}/figures"}
    if args.data_root:
        roots["data_root"] = args.data_root
    spec = resolve_run(args.profile, overrides, method="meta_adapter", shots=shots, seed=seed, dataset="eurosat", **roots)
    t0 = time.time()
    record, _ = run_method(spec)
    train = record.extra["train"]
    cfg = spec.config.effective_train()
    return {"budget": budget, "shots": shots, "seed": seed, "steps": train["steps"], "batch": cfg.batch_size,
            "lr": cfg.lr, "lr_sum": lr_sum(cfg, train["iterations"]), "val0": train["history"][0]["val"],
            "val": record.metrics["val_top1"], "test": record.metrics["top1"], "movement": train["movement"],
            "seconds": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--shots", nargs="+", type=int, default=[16, 1])
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--data-root", default=None)
    p.add_argument("--work", default=None, help="folder for splits and runs (default: a temporary one)")
    args = p.parse_args(argv)
    from lowres_clip.datasets import DatasetError, default_data_root, load_dataset

    try:
        load_dataset("eurosat", args.data_root or default_data_root())
    except DatasetError as exc:
        print(f"SKIP: EuroSAT not available ({exc})")
        return 0
    args.work = args.work or tempfile.mkdtemp(prefix="meta-adapter-budget-")
    met = True
    for shots in args.shots:
        for seed in args.seeds:
            rows = {b: measure(b, shots, seed, args) for b in ("reference", "run")}
            for r in rows.values():
                moved = ", ".join(f"{g.removeprefix('meta_adapter.')} {100 * m['relative']:.3g}%"
                                  for g, m in r["movement"].items())
                print(f"K={shots} seed {seed} {r['budget']:9s}: {r['steps']} steps of batch {r['batch']} at lr {r['lr']:g} "
                      f"(sum of lr {r['lr_sum']:.3g}); val {100 * r['val0']:.1f}% -> {100 * r['val']:.1f}%, "
                      f"test {100 * r['test']:.1f}%; moved: {moved} ({r['seconds']:.0f} s)", flush=True)
            ratios = {g: rows["run"]["movement"][g]["relative"] / max(m["relative"], 1e-30)
                      for g, m in rows["reference"]["movement"].items()}
            met &= min(ratios.values()) >= 10
    print(f"SUMMARY goal: under budget 'run' every Meta-Adapter parameter group moves >= 10x as far as under "
          f"'reference' ({args.profile} profile, K {args.shots}, seeds {args.seeds}): {'MET' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
