"""Benchmark: wall time of the whole CPU study, end to end (every notebook of the grid, EuroSAT).

Runs the study runner exactly as ``make study`` does,

    python -m lowres_clip.study --profile cpu --dataset eurosat --force [--shots K ...] [--seeds S ...]

(by default the profile's whole grid: K in {1, 2, 4, 8, 16} x seeds {1, 2, 3} x 7 methods, the failure
analysis and the report, with the profile's executor: two local workers of one CPU thread each) but
with every output in a temporary folder (``--runs-root``, ``--figures-root``, ``--notebooks-out``
and, unless ``--warm-cache``, a fresh ``--cache-root``), so the repository's ``runs/``, ``figures/``
and feature cache are untouched and the caches start cold, as on a first ``make study``. (The
embedded model's one-time build lives in the project cache and is not redone.)

``--from DIR`` measures nothing new: it reports on a study that already ran in the checkout ``DIR``
(e.g. a fresh clone where ``make study`` ran), from its executed notebooks, run records and study log.

It prints each notebook's wall time (papermill metadata), the train/eval timings of each run record,
the share of the work by kind (kernel start-up and imports, data, training, evaluation, figures;
shares of the workers' time, i.e. wall time x workers), the cost per (K, seed) cell against the
single-cell study before the grid (:data:`CELL_SECONDS_BEFORE`), and one ``SUMMARY`` line with the
total minutes against the goal.

Goal: the whole CPU study (the grid) finishes within 60 minutes on a 2-core CPU.

Skips (exit 0, ``SKIP`` line) when the dataset is not in ``--data-root`` / ``$LOWRES_CLIP_DATA`` /
``../shared/data``. Exit code otherwise: the runner's (0 all notebooks ran, 1 some failed, 2 bad
configuration).

    python benchmarks/study_time.py [--profile cpu] [--dataset eurosat] [--shots K ...] [--seeds S ...]
                                    [--keep DIR] [--warm-cache] [--methods M ...] [--set KEY=VALUE ...]
    python benchmarks/study_time.py --from /tmp/clone     # report on a finished `make study`
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lowres_clip.cluster import parse_cluster
from lowres_clip.config import ConfigError, load_profile
from lowres_clip.datasets import DatasetError, default_data_root, load_dataset
from lowres_clip.runs import load_records
from lowres_clip.spec import STUDY_LOG

GOAL_MINUTES = 60.0
# One (K=16, seed 1) cell of the study before the grid: 11 notebooks in 19 min 50 s wall on these 2
# cores, quiet machine, cold feature cache (2026-11-25, benchmarks/README.md, `study_time.py`).
CELL_SECONDS_BEFORE = 1190.0


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


def study_command(args: argparse.Namespace, out: Path) -> list[str]:
    """The study runner's command line, every output under ``out``."""
    cmd = [sys.executable, "-m", "lowres_clip.study", "--profile", args.profile, "--dataset", args.dataset,
           "--force", "--runs-root", str(out / "runs"), "--figures-root", str(out / "figures"),
           "--notebooks-out", str(out / "notebooks")]
    if args.shots:
        cmd += ["--shots", *map(str, args.shots)]
    if args.seeds:
        cmd += ["--seeds", *map(str, args.seeds)]
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


def shares(times: list["NotebookTime"], records: dict[str, dict[str, float]], worker_seconds: float) -> dict[str, float]:
    """Seconds of the workers' time (wall x workers) by kind: the runs' own timings (data, model,
    training, evaluation, figures), other notebook work, and kernel start-up, imports, the runner
    and idle workers (the rest)."""
    out = {k: sum(t.get(part, 0.0) for t in records.values() for part in parts) for k, parts in SHARES.items()}
    in_runs = sum(t.get("total", 0.0) for t in records.values())
    in_notebooks = sum(t.seconds for t in times)
    setup_cells = sum(sum(t.cells[:2]) for t in times)  # the parameters and import / configuration cells
    out["other notebook work (data, augmentation, failure analysis, report)"] = max(0.0, in_notebooks - in_runs - setup_cells)
    out["kernel start-up, imports, runner, idle workers"] = worker_seconds - in_notebooks + setup_cells
    return out


def print_report(times: list[NotebookTime], records: dict[str, dict[str, float]], total: float) -> None:
    """Per-notebook table and per-notebook-kind totals."""
    print(f"\n{'notebook':22s} {'job':55s} {'seconds':>8s} {'slowest':>14s}  runs")
    for t in times:
        mine = [records[run_id] for run_id in runs_of(t.job, records)] if t.job.count("/") >= 2 else []
        extra = f"{len(mine)} run(s), train {sum(r.get('train', 0) for r in mine):.0f}s, eval " \
                f"{sum(r.get('eval', 0) for r in mine):.0f}s" if mine else ""
        flag = "" if t.status == "ok" else f"  {t.status.upper()}"
        print(f"{t.notebook:22s} {t.job[-55:]:55s} {t.seconds:8.1f} {t.slowest_cell():>14s}  {extra}{flag}")
    kinds: dict[str, list[float]] = {}
    for t in times:
        kinds.setdefault(t.notebook, []).append(t.seconds)
    print("\nper notebook (all its executions):")
    for nb, secs in sorted(kinds.items()):
        print(f"  {nb:22s} x{len(secs):<2d} {sum(secs) / 60:6.2f} min")


def runs_of(job: str, run_ids) -> list[str]:
    """The run ids a notebook job made: its method's runs of its seed (``.../lora/s1``), of every
    cell (``.../lora``), or the one run (``.../lora/k16-s1/variant``)."""
    head, _, last = job.rpartition("/")
    if re.fullmatch(r"s\d+", last):
        return [r for r in run_ids if r.startswith(head + "/") and r.split("/")[-2].endswith("-" + last)]
    return [r for r in run_ids if r == job or r.startswith(job + "/")]


def cells_of(records: dict[str, dict[str, float]]) -> int:
    """Number of (K, seed) cells among the run ids (``.../k16-s1/variant``)."""
    return len({run_id.split("/")[-2] for run_id in records})


def summary_line(args: argparse.Namespace, times: list[NotebookTime], total: float, rc: int, cells: int) -> str:
    """The one ``SUMMARY`` line: total minutes against the goal (a failed study is never MET)."""
    minutes = total / 60
    failed = [t.job for t in times if t.status != "ok"]
    what = f"profile {args.profile}, {args.dataset}, {cells} (K, seed) cells"
    if args.methods:
        what += f", methods {' '.join(args.methods)} only"
    if rc != 0:
        verdict = (f"FAILED (runner exit code {rc}; {len(failed)} notebook(s) failed or unfinished"
                   f"{': ' + failed[0] if failed else ''})")
    else:
        verdict = "MET" if minutes <= args.goal_minutes else "MISSED"
    per_cell = total / max(cells, 1)
    return (f"SUMMARY study-time: {what}: {minutes:.1f} min end to end for {len(times)} notebooks "
            f"(goal <= {args.goal_minutes:g} min): {verdict}; {per_cell / 60:.1f} min per cell, "
            f"{CELL_SECONDS_BEFORE / per_cell:.1f}x less than the single-cell study before the grid "
            f"({CELL_SECONDS_BEFORE / 60:.1f} min)")


def profile_workers(profile: str) -> int:
    """Parallel notebooks of the profile's executor (its ``cluster:`` section; 1 unless ``local``)."""
    cluster = parse_cluster(load_profile(profile).cluster)
    return cluster.workers if cluster.executor == "local" else 1


def finished_study(folder: Path, dataset: str, profile: str) -> tuple[float, int, int, Path, Path]:
    """``(seconds, exit code, workers, notebooks folder, runs folder)`` of the study that ran in the
    checkout ``folder`` (its ``runs/{dataset}/study-log.json``; workers: the log's, else the profile's)."""
    runs = folder / "runs"
    log = json.loads((runs / dataset / STUDY_LOG).read_text())
    if not log.get("ran") or log.get("skipped"):
        raise ValueError(f"the logged study ({log.get('date')}, `{log.get('command')}`) ran {log.get('ran')} notebooks "
                         f"and skipped {log.get('skipped')}: its time is not the time of the study; rerun it from a "
                         "fresh clone (or with --force)")
    rc = 0 if not log.get("failed") else 1
    workers = int(log.get("workers") or profile_workers(profile))
    return float(log["seconds"]), rc, workers, runs / "notebooks", runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="study profile (name or YAML path)")
    ap.add_argument("--dataset", default="eurosat")
    ap.add_argument("--data-root", default=None, help="default: $LOWRES_CLIP_DATA, else ../shared/data, else data/")
    ap.add_argument("--shots", type=int, nargs="+", default=None, help="restrict the grid's K (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="restrict the grid's seeds (default: all)")
    ap.add_argument("--keep", default=None, help="write every output into this folder and keep it")
    ap.add_argument("--from", dest="from_dir", default=None,
                    help="report on the study that already ran in this checkout (runs/ and its study log)")
    ap.add_argument("--warm-cache", action="store_true", help="use the project's cache (features already encoded)")
    ap.add_argument("--methods", nargs="+", default=None, help="restrict the grid's methods (quick checks)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the runner")
    ap.add_argument("--goal-minutes", type=float, default=GOAL_MINUTES)
    args = ap.parse_args()

    if args.from_dir:
        try:
            total, rc, workers, notebooks, runs = finished_study(Path(args.from_dir), args.dataset, args.profile)
        except (OSError, KeyError, ValueError) as exc:
            print(f"error: no finished study in {args.from_dir}: {exc}", file=sys.stderr)
            return 2
        print(f"report on the study in {args.from_dir} ({workers} worker(s)); nothing is rerun")
        times, records = notebook_times(notebooks), record_timings(runs, args.dataset)
        return report(args, times, records, total, rc, workers)

    reason = data_available(args.dataset, args.data_root)
    if reason is not None:
        print(f"SKIP: {args.dataset} not available ({reason})")
        return 0
    try:
        workers = profile_workers(args.profile)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="study_time_") as tmp:
        out = Path(args.keep).resolve() if args.keep else Path(tmp)
        cmd = study_command(args, out)
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
    return report(args, times, records, total, rc, workers)


def report(args: argparse.Namespace, times: list[NotebookTime], records: dict[str, dict[str, float]],
           total: float, rc: int, workers: int) -> int:
    """Print the tables, the shares and the ``SUMMARY`` line; returns ``rc``."""
    print_report(times, records, total)
    worker_seconds = total * workers
    print(f"\nshare of the workers' time ({workers} worker(s) x {total / 60:.1f} min wall):")
    for kind, seconds in shares(times, records, worker_seconds).items():
        print(f"  {kind:60s} {seconds / 60:6.2f} min {100 * seconds / worker_seconds:5.1f}%")
    print(summary_line(args, times, total, rc, cells_of(records)))
    return rc


if __name__ == "__main__":
    sys.exit(main())
