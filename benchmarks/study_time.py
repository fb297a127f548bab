"""Benchmark: wall time of the whole CPU study, end to end (every notebook, EuroSAT, 16 shots, one seed).

Runs the study runner exactly as ``make study`` does,

    python -m lowres_clip.study --profile cpu --dataset eurosat --force --shots 16 --seeds <seed>

but with every output in a temporary folder (``--runs-root``, ``--figures-root``, ``--notebooks-out``
and, unless ``--warm-cache``, a fresh ``--cache-root``), so the repository's ``runs/``, ``figures/``
and feature cache are untouched and the caches start cold, as on a first ``make study``. (The embedded
model's one-time build lives in the project cache and is not redone.) It then prints each notebook's
wall time from the papermill metadata of the executed notebooks, the train/eval timings of each run
record, and one ``SUMMARY`` line with the total minutes against the goal.

Goal: the whole CPU study finishes within 30 minutes on a 2-core CPU.

Skips (exit 0, ``SKIP`` line) when the dataset is not in ``--data-root`` / ``$LOWRES_CLIP_DATA`` /
``../shared/data``. Exit code otherwise: the runner's (0 all notebooks ran, 1 some failed, 2 bad
configuration).

    python benchmarks/study_time.py [--profile cpu] [--dataset eurosat] [--shots 16] [--seed N]
                                    [--keep DIR] [--warm-cache] [--methods M ...] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lowres_clip.config import ConfigError, load_profile
from lowres_clip.datasets import DatasetError, default_data_root, load_dataset
from lowres_clip.runs import load_records

GOAL_MINUTES = 30.0


@dataclass
class NotebookTime:
    """One executed notebook of the study.

    Attributes:
        job: the job's folder relative to the executed-notebooks root (``eurosat/.../lora/k16-s1``).
        notebook: notebook file stem (``02_lora``).
        seconds: papermill's wall time of the notebook (kernel start-up excluded).
        status: ``ok``, ``failed`` (papermill recorded an exception) or ``unfinished`` (no end time:
            the study was interrupted while it ran).
        start: papermill's ISO start time (orders the table as the study ran).
        cells: wall seconds of each code cell, in order (the rest of ``seconds`` is kernel start-up
            and shut-down).
    """

    job: str
    notebook: str
    seconds: float
    status: str
    start: str
    cells: list[float]

    def slowest_cell(self) -> str:
        """``"cell i: s"`` for the slowest code cell (1-based index among code cells)."""
        if not self.cells:
            return ""
        i = max(range(len(self.cells)), key=self.cells.__getitem__)
        return f"cell {i + 1}: {self.cells[i]:.0f}s"


def data_available(dataset: str, data_root: str | None) -> str | None:
    """``None`` when ``dataset`` loads from ``data_root`` (default root if ``None``), else the reason."""
    try:
        load_dataset(dataset, data_root or default_data_root())
    except DatasetError as exc:
        return str(exc)
    return None


def study_command(args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    """The study runner's command line, every output under ``out``."""
    cmd = [sys.executable, "-m", "lowres_clip.study", "--profile", args.profile, "--dataset", args.dataset,
           "--force", "--shots", str(args.shots), "--seeds", str(seed),
           "--runs-root", str(out / "runs"), "--figures-root", str(out / "figures"),
           "--notebooks-out", str(out / "notebooks")]
    if not args.warm_cache:
        cmd += ["--cache-root", str(out / "cache")]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    if args.methods:
        cmd += ["--methods", *args.methods]
    for item in args.set:
        cmd += ["--set", item]
    return cmd


def notebook_times(notebooks_out: Path) -> list[NotebookTime]:
    """Wall times of every executed notebook under ``notebooks_out`` (papermill metadata), in run order."""
    times = []
    for path in notebooks_out.rglob("*.ipynb"):
        try:
            nb = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        meta = nb.get("metadata", {}).get("papermill", {})
        cells = [float(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0)
                 for c in nb.get("cells", []) if c.get("cell_type") == "code"]
        job = str(path.parent.relative_to(notebooks_out))
        status = "failed" if meta.get("exception") else "ok" if meta.get("end_time") else "unfinished"
        times.append(NotebookTime(job, path.stem, float(meta.get("duration") or 0.0), status,
                                  str(meta.get("start_time") or ""), cells))
    return sorted(times, key=lambda t: t.start)


def record_timings(runs_root: Path, dataset: str) -> dict[str, dict[str, float]]:
    """``{run id: timings}`` of every run record the study wrote (train/eval seconds...)."""
    if not runs_root.is_dir():
        return {}
    return {r.run_id: dict(r.timings) for r in load_records(runs_root, dataset)}


SHARES = {"data": ("data",), "model load": ("model",), "training": ("build", "augment", "train", "checkpoint"),
          "evaluation": ("features", "eval"), "figures and saving": ("figures", "save")}


def shares(times: list["NotebookTime"], records: dict[str, dict[str, float]], total: float) -> dict[str, float]:
    """Seconds of the study by kind: kernel start-up and imports (notebook time outside the runs'
    own timings, plus the runner outside notebooks), data, training, evaluation, figures."""
    out = {k: sum(t.get(part, 0.0) for t in records.values() for part in parts) for k, parts in SHARES.items()}
    in_runs = sum(t.get("total", 0.0) for t in records.values())
    in_notebooks = sum(t.seconds for t in times)
    setup_cells = sum(sum(t.cells[:2]) for t in times)  # the parameters and import / configuration cells
    out["other notebook work (data, augmentation, failure analysis, report)"] = max(0.0, in_notebooks - in_runs - setup_cells)
    out["kernel start-up, imports, runner"] = total - in_notebooks + setup_cells
    return out


def print_report(times: list[NotebookTime], records: dict[str, dict[str, float]], total: float) -> None:
    """Per-notebook table, per-notebook-kind totals and the runner's overhead."""
    print(f"\n{'notebook':22s} {'job':55s} {'seconds':>8s} {'share':>6s} {'slowest':>14s}  run-record timings")
    for t in times:
        extra = ", ".join(f"{k} {v:.0f}s" for k, v in records.get(t.job, {}).items())  # run jobs' folder = run key
        flag = "" if t.status == "ok" else f"  {t.status.upper()}"
        print(f"{t.notebook:22s} {t.job[-55:]:55s} {t.seconds:8.1f} {100 * t.seconds / total:5.1f}% "
              f"{t.slowest_cell():>14s}  {extra}{flag}")
    kinds: dict[str, list[float]] = {}
    for t in times:
        kinds.setdefault(t.notebook, []).append(t.seconds)
    print("\nper notebook (all its executions):")
    for nb, secs in sorted(kinds.items()):
        print(f"  {nb:22s} x{len(secs):<2d} {sum(secs) / 60:6.2f} min")
    in_notebooks = sum(t.seconds for t in times)
    unfinished = " and the unfinished notebooks" if any(t.status == "unfinished" for t in times) else ""
    print(f"  {'outside notebooks':22s}     {(total - in_notebooks) / 60:6.2f} min "
          f"(runner start-up and planning{unfinished})")


def summary_line(args: argparse.Namespace, seed: int, times: list[NotebookTime], total: float, rc: int) -> str:
    """The one ``SUMMARY`` line: total minutes against the goal (a failed study is never MET)."""
    minutes = total / 60
    failed = [t.job for t in times if t.status != "ok"]
    what = f"profile {args.profile}, {args.dataset}, {args.shots} shots, seed {seed}"
    if args.methods:
        what += f", methods {' '.join(args.methods)} only"
    if rc != 0:
        verdict = (f"FAILED (runner exit code {rc}; {len(failed)} notebook(s) failed or unfinished"
                   f"{': ' + failed[0] if failed else ''})")
    else:
        verdict = "MET" if minutes <= args.goal_minutes else "MISSED"
    return (f"SUMMARY study-time: {what}: {minutes:.1f} min end to end for {len(times)} notebooks "
            f"(goal <= {args.goal_minutes:g} min): {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="study profile (name or YAML path)")
    ap.add_argument("--dataset", default="eurosat")
    ap.add_argument("--data-root", default=None, help="default: $LOWRES_CLIP_DATA, else ../shared/data, else data/")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--seed", type=int, default=None, help="default: the profile grid's first seed")
    ap.add_argument("--keep", default=None, help="write every output into this folder and keep it")
    ap.add_argument("--warm-cache", action="store_true", help="use the project's cache (features already encoded)")
    ap.add_argument("--methods", nargs="+", default=None, help="restrict the grid's methods (quick checks)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the runner")
    ap.add_argument("--goal-minutes", type=float, default=GOAL_MINUTES)
    args = ap.parse_args()

    reason = data_available(args.dataset, args.data_root)
    if reason is not None:
        print(f"SKIP: {args.dataset} not available ({reason})")
        return 0
    try:
        grid = load_profile(args.profile).grid
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else grid.seeds[0]
    if args.shots not in grid.shots or seed not in grid.seeds:
        print(f"error: profile {args.profile!r} has shots {grid.shots} and seeds {grid.seeds}; "
              f"pick --shots and --seed from them (asked: {args.shots}, {seed}).", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="study_time_") as tmp:
        out = Path(args.keep).resolve() if args.keep else Path(tmp)
        cmd = study_command(args, seed, out)
        print("running:", " ".join(cmd), flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, env=env).returncode
        except KeyboardInterrupt:  # report what ran so far
            rc = 130
        total = time.perf_counter() - t0
        times = notebook_times(out / "notebooks")
        records = record_timings(out / "runs", args.dataset)
    print_report(times, records, total)
    print("\nshare of the wall time:")
    for kind, seconds in shares(times, records, total).items():
        print(f"  {kind:60s} {seconds / 60:6.2f} min {100 * seconds / total:5.1f}%")
    print(summary_line(args, seed, times, total, rc))
    return rc


if __name__ == "__main__":
    sys.exit(main())
