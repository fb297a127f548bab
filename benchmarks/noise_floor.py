"""The noise floor of the CPU study: how far a run moves when only the arithmetic changes.

A run is bit-identical in any process on one machine with one thread count (tests/test_numerics.py).
Another thread count or another machine changes how matrix products and convolutions split their
sums, and training amplifies the last-bit differences. This script measures that: each setting
(method x K, seed 1, the profile's precision) runs once as the reference (1 thread, the machine's
own kernels) and once under each perturbation, every run in its own process:

* ``threads2``: 2 intra-op threads instead of 1;
* ``avx2``: the kernels of an AVX2-only machine (``ATEN_CPU_CAPABILITY=avx2``,
  ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_CBWR=AVX2``), the largest ISA difference between hosts;
* ``avx512core``: oneDNN capped at AVX-512 without VNNI/BF16/AMX (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``).

It prints, per setting, the top-1 / balanced differences and the share of test predictions that
changed, beside the seed spread (std over the seeds of the published records, when present), and
writes the floor (largest |difference| seen, rounded up to 0.1 points) to
``lib/lowres_clip/resources/noise_floor.json`` with ``--write``: ``results reproduce`` uses it as the
tolerance when a rerun's machine or threads differ from the record's.

    python benchmarks/noise_floor.py --write                       # LoRA, BitFit, the combination at K=1, 16
    python benchmarks/noise_floor.py --methods lora --shots 1 --precision bf16

Ends with ``SUMMARY``: the floor against the smallest seed spread of the same settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PERTURBATIONS = {
    "reference": ({}, 1),
    "threads2": ({}, 2),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}, 1),
    "avx512core": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, 1),
}
FLOOR_FILE = Path(__file__).resolve().parents[1] / "lib" / "lowres_clip" / "resources" / "noise_floor.json"


def child(args) -> int:
    """Run the settings in this process (``--child``) and write predictions + metrics to ``--out``."""
    import torch

    torch.set_num_threads(args.threads)
    from lowres_clip.pipeline import run_method
    from lowres_clip.spec import resolve_run

    out = {}
    for method, k in settings_of(args):
        overrides = {"train.precision": args.precision, "train.progress": False}
        if args.test_subset:
            overrides["test_subset"] = args.test_subset
        spec = resolve_run(args.profile, overrides, method=method, shots=k, seed=args.seed,
                           runs_root=f"{args.work}/runs", figures_root=f"{args.work}/figures")
        t0 = time.perf_counter()
        record, preds = run_method(spec)
        np.save(Path(args.work) / f"{method}-k{k}.npy", preds.logits.argmax(1))
        out[f"{method}/k{k}"] = {"top1": record.metrics["top1"], "balanced": record.metrics["balanced"],
                                  "seconds": round(time.perf_counter() - t0, 1),
                                  "numerics": record.machine}
    Path(args.out).write_text(json.dumps(out))
    return 0


def settings_of(args) -> list[tuple[str, int]]:
    """``(method, K)`` pairs: ``--settings method/K ...``, else every method at every K."""
    if args.settings:
        return [(s.rsplit("/", 1)[0], int(s.rsplit("/", 1)[1])) for s in args.settings]
    return [(m, k) for m in args.methods for k in args.shots]


def seed_spread(profile: str, method: str, k: int, root: str | None = None) -> float | None:
    """Std over seeds of top-1 in the records under ``root`` (default: the published ones) of
    ``method`` at K made with ``profile`` and the profile's current settings (None without records)."""
    from lowres_clip.registry import canonical
    from lowres_clip.results import RECORDS_ROOT
    from lowres_clip.runs import load_records, stale_records

    records = load_records(root or RECORDS_ROOT, "eurosat")
    stale = {s.run_id for s in stale_records(records)}
    records = [r for r in records if r.run_id not in stale]
    records = [r for r in records
               if r.identity["method"] == canonical(method) and r.identity["shots"] == k
               and r.identity.get("origin", {}).get("profile") == profile]
    values = [r.metrics["top1"] for r in records]
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--methods", nargs="+", default=["lora", "bitfit", "lora+bitfit+meta_adapter"])
    ap.add_argument("--shots", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--settings", nargs="+", default=None, metavar="METHOD/K",
                    help="explicit settings instead of --methods x --shots, e.g. lora/1 bitfit/1 lora/16")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--test-subset", type=int, default=2000,
                    help="test images per run (0: the full split); the floor is a share of flipped predictions")
    ap.add_argument("--perturbations", nargs="+", default=[p for p in PERTURBATIONS if p != "reference"],
                    choices=[p for p in PERTURBATIONS if p != "reference"])
    ap.add_argument("--records-root", default=None, help="records for the seed spread (default: the published ones)")
    ap.add_argument("--write", action="store_true", help=f"write the floor to {FLOOR_FILE}")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    results = {}
    with tempfile.TemporaryDirectory(prefix="noise_floor_") as tmp:
        for name in ["reference", *args.perturbations]:
            env_extra, threads = PERTURBATIONS[name]
            work = Path(tmp) / name
            work.mkdir()
            cmd = [sys.executable, __file__, "--child", "--profile", args.profile,
                   "--settings", *[f"{m}/{k}" for m, k in settings_of(args)], "--seed", str(args.seed), "--precision", args.precision,
                   "--test-subset", str(args.test_subset), "--threads", str(threads), "--work", str(work),
                   "--out", str(work / "out.json")]
            env = {**os.environ, **env_extra, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            results[name] = json.loads((work / "out.json").read_text())
            for setting in results[name]:
                results[name][setting]["pred"] = np.load(work / f"{setting.replace('/', '-')}.npy")
            print(f"{name}: {len(results[name])} runs in {time.perf_counter() - t0:.0f} s "
                  f"(threads {threads}, {env_extra or 'own kernels'})", flush=True)

    ref = results["reference"]
    rows, worst = [], 0.0
    print(f"\n{'setting':32s} {'perturbation':12s} {'top1 ref':>8s} {'Δtop1':>7s} {'Δbal':>7s} {'flipped':>8s} {'seed std':>8s}")
    for setting, r in ref.items():
        method, k = setting.split("/k")
        spread = seed_spread(args.profile, method, int(k), args.records_root)
        for name in args.perturbations:
            p = results[name][setting]
            d_top1, d_bal = p["top1"] - r["top1"], p["balanced"] - r["balanced"]
            flipped = float(np.mean(p["pred"] != r["pred"]))
            worst = max(worst, abs(d_top1), abs(d_bal))
            rows.append({"setting": setting, "perturbation": name, "top1_ref": r["top1"], "d_top1": d_top1,
                         "d_balanced": d_bal, "flipped": flipped, "seed_std": spread})
            print(f"{setting:32s} {name:12s} {100 * r['top1']:8.2f} {100 * d_top1:+7.2f} {100 * d_bal:+7.2f} "
                  f"{100 * flipped:7.2f}% " + (f"{100 * spread:8.2f}" if spread is not None else "       -"))
    floor = math.ceil(worst * 1000 - 1e-9) / 1000  # rounded up to 0.1 points
    spreads = [r["seed_std"] for r in rows if r["seed_std"]]
    measured = (f"{100 * floor:.1f} points ({args.precision}, {len(rows)} perturbed runs: "
                f"{', '.join(args.perturbations)}; {', '.join(f'{m} K={k}' for m, k in settings_of(args))}, "
                f"seed {args.seed}, {args.test_subset or 'all'} test images; {time.strftime('%Y-%m-%d')})")
    if args.write:
        data = json.loads(FLOOR_FILE.read_text()) if FLOOR_FILE.is_file() else {}
        data[args.precision] = {"tolerance": max(floor, 0.001), "measured": measured, "rows": rows,
                                "command": "python benchmarks/noise_floor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                                "machine": ref[next(iter(ref))]["numerics"]}
        FLOOR_FILE.parent.mkdir(parents=True, exist_ok=True)
        FLOOR_FILE.write_text(json.dumps(data, indent=1))
        print(f"written {FLOOR_FILE}")
    least = min(spreads) if spreads else None
    verdict = ("no published seed spread to compare" if least is None else
               f"{'below' if floor < least else 'RIVALS'} the smallest seed spread of these settings ({100 * least:.2f} points)")
    print(f"SUMMARY noise floor {100 * floor:.1f} points ({args.precision}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
