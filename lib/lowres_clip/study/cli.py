"""Rerun the whole study headless: the numbered notebooks over a profile's grid, with papermill.

The command line of :mod:`lowres_clip.study` (``python -m lowres_clip.study``; flags of
:func:`~lowres_clip.study.runner.run_study` and of the executors).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import yaml

from .. import interrupt, preflight
from ..cluster import EXECUTORS
from ..config import ConfigError
from ..jobs import KERNEL_NAME, StudyError
from .planner import JOBS_PER
from .runner import run_study


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.iterations=50), got {item!r}.")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers`` and the ``--slurm-*`` flags (defaults: the profile's ``cluster:``)."""
    g = parser.add_argument_group("executor (defaults: the profile's cluster: section; see lowres_clip.study.executors)")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="sequential (default), local (--workers in parallel here) or slurm (one job per notebook)")
    g.add_argument("--workers", type=int, default=None, help="local: notebooks in parallel, one GPU each (implies --executor local)")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-account", default=None)
    g.add_argument("--slurm-time", default=None, help="time limit per notebook, e.g. 04:00:00 (default)")
    g.add_argument("--slurm-gpus", type=int, default=None, help="GPUs per notebook (default 1; 0: none)")
    g.add_argument("--slurm-cpus", type=int, default=None, help="CPUs per notebook (default 8)")
    g.add_argument("--slurm-mem", default=None, help="memory per notebook, e.g. 32G (default)")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-extra qos=high --slurm-extra constraint=a100 (KEY= for a bare flag)")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="shell line run before each notebook, e.g. 'module load cuda'")
    g.add_argument("--slurm-log-dir", default=None, help="submission scripts and logs (default {runs_root}/slurm)")


def _cluster_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The executor flags given on the command line, as a ``cluster:`` mapping."""
    extra: dict[str, Any] = {}
    for item in args.slurm_extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-extra expects KEY=VALUE (e.g. qos=high), got {item!r}.")
        extra[key.strip().lstrip("-")] = value if value else True  # Slurm reads strings; KEY= is a bare flag
    slurm = {"partition": args.slurm_partition, "account": args.slurm_account, "time": args.slurm_time,
             "gpus": args.slurm_gpus, "cpus": args.slurm_cpus, "mem": args.slurm_mem, "log_dir": args.slurm_log_dir,
             "extra": extra or None, "setup": args.slurm_setup or None}
    executor = args.executor or ("local" if args.workers is not None else None)
    return {"executor": executor, "workers": args.workers, "slurm": slurm}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m lowres_clip.study``); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lowres_clip.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="profile name (paper, cpu, cpu-longtail, smoke) or YAML path")
    parser.add_argument("--dataset", required=True, help="eurosat, circuits or imagefolder:<path> (any profile)")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: $LOWRES_CLIP_DATA or ../shared/data)")
    parser.add_argument("--force", action="store_true", help="rerun finished runs too")
    parser.add_argument("--runs-root", default=None)
    parser.add_argument("--figures-root", default=None)
    parser.add_argument("--cache-root", default=None)
    parser.add_argument("--notebooks-out", default=None, help="executed notebooks (default: {runs_root}/notebooks)")
    parser.add_argument("--methods", nargs="+", default=None, help="restrict the grid's methods")
    parser.add_argument("--shots", nargs="+", type=int, default=None, help="restrict the grid's shots")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="restrict the grid's seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run setting for every run, e.g. --set train.iterations=50")
    parser.add_argument("--kernel", default=KERNEL_NAME, help="Jupyter kernel name")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and list what would run or be submitted (executor, resources), run nothing")
    parser.add_argument("--jobs-per", choices=JOBS_PER, default=None,
                        help="one notebook execution per method over its K x seed grid (default of the "
                             "sequential executor), per method and seed (default of local workers), or per run "
                             "(default on Slurm)")
    parser.add_argument("--per-run", action="store_true", help="same as --jobs-per run")
    _add_executor_arguments(parser)
    args = parser.parse_args(argv)
    try:
        overrides = _parse_set(args.set)
        kwargs = dict(data_root=args.data_root, runs_root=args.runs_root, figures_root=args.figures_root,
                      cache_root=args.cache_root, notebooks_out=args.notebooks_out, overrides=overrides,
                      methods=args.methods, shots=args.shots, seeds=args.seeds,
                      jobs_per="run" if args.per_run else args.jobs_per)
        command = interrupt.rerun_command(argv)
        result = run_study(args.profile, args.dataset, force=args.force, kernel_name=args.kernel, command=command,
                           cluster=_cluster_arguments(args), dry_run=args.dry_run, **kwargs)
        if args.dry_run:
            return 0
    except interrupt.Interrupted as exc:
        print(exc.summary(interrupt.rerun_command(argv)), file=sys.stderr)
        return interrupt.EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted before the first notebook: nothing ran.", file=sys.stderr)
        return interrupt.EXIT_CODE
    except (ConfigError, StudyError, preflight.PreflightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0 if result.ok else 1
