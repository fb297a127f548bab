"""Where and how the study's notebooks run: the optional ``cluster:`` section of a profile.

A profile may carry defaults for the study executors (:mod:`lowres_clip.study.executors`); the command
line (``python -m lowres_clip.study --executor slurm --slurm-partition gpu ...``) overrides them::

    cluster:
      executor: slurm          # sequential (default) | local | slurm
      workers: 4               # local: notebooks run in parallel (one GPU each, round-robin)
      slurm:
        partition: gpu
        account: my-project
        time: "04:00:00"       # per notebook: minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]
        gpus: 1                # per notebook; 0 asks for none
        cpus: 8
        mem: 32G               # K/M/G/T suffix; null: the partition's default
        extra: {qos: normal, constraint: a100}   # any other sbatch option (long name, no dashes)
        setup: ["module load cuda/12.4"]         # shell lines run before each notebook
        log_dir: null          # default: {runs_root}/slurm
        poll_seconds: 5

Unknown keys are errors naming the key (as everywhere in a profile). This module imports nothing
heavy: no torch, no submitit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .settings import ConfigError
from .strict import from_dict

EXECUTORS = ("sequential", "local", "slurm")
# sbatch options the executor sets itself: ``extra`` must not set them (each has its own field/flag)
MANAGED_SBATCH = {
    "partition": "cluster.slurm.partition / --slurm-partition", "account": "cluster.slurm.account / --slurm-account",
    "time": "cluster.slurm.time / --slurm-time", "gpus-per-node": "cluster.slurm.gpus / --slurm-gpus",
    "cpus-per-task": "cluster.slurm.cpus / --slurm-cpus", "mem": "cluster.slurm.mem / --slurm-mem",
    "dependency": "the study's job graph", "job-name": "the study (the job's name)",
    "output": "cluster.slurm.log_dir", "error": "cluster.slurm.log_dir", "array": "nothing (one job per notebook)",
    "kill-on-invalid-dep": "the study (always yes)",
}
_TIME = re.compile(r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$")
_MEM = re.compile(r"^\d+(?:\.\d+)?[KMGT]?$", re.IGNORECASE)
_OPTION = re.compile(r"^[a-z][a-z0-9-]*$")


def time_minutes(value: str | int) -> int:
    """Minutes of a Slurm time limit (``90``, ``30:00``, ``04:00:00``, ``1-12``, ``1-00:30:00``); rounded up.

    Raises:
        ConfigError: an unreadable limit.
    """
    m = _TIME.match(str(value).strip())
    if not m:
        raise ConfigError(f"cluster.slurm.time (--slurm-time): {value!r} is not a Slurm time limit (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]).")
    g = {k: int(v) if v else 0 for k, v in m.groupdict().items()}
    if m.group("d") is not None:
        seconds = ((g["d"] * 24 + g["dh"]) * 60 + g["dm"]) * 60 + g["ds"]
    elif m.group("c") is not None:  # HH:MM:SS
        seconds = (g["a"] * 60 + g["b"]) * 60 + g["c"]
    elif m.group("b") is not None:  # MM:SS
        seconds = g["a"] * 60 + g["b"]
    else:  # minutes
        seconds = g["a"] * 60
    if seconds <= 0:
        raise ConfigError(f"cluster.slurm.time (--slurm-time): {value!r} must be positive.")
    return math.ceil(seconds / 60)


@dataclass
class SlurmSettings:
    """Resources of every Slurm job of the study (one job per notebook execution).

    Attributes:
        partition: ``--partition`` (``None``: the cluster's default partition).
        account: ``--account`` (``None``: the user's default).
        time: time limit per notebook (see :func:`time_minutes`).
        gpus: GPUs per notebook (``--gpus-per-node``); 0 asks for none.
        cpus: CPUs per notebook (``--cpus-per-task``).
        mem: memory per notebook (``--mem``, e.g. ``32G``); ``None``: the partition's default.
        extra: any other sbatch option, long name without dashes -> value (``True``: a bare flag).
        setup: shell lines run in the batch script before the notebook (``module load ...``).
        log_dir: folder of the submission scripts and logs (``None``: ``{runs_root}/slurm``).
        poll_seconds: how often the study asks Slurm (``sacct``) for the jobs' states.
    """

    partition: str | None = None
    account: str | None = None
    time: str | int = "04:00:00"
    gpus: int = 1
    cpus: int = 8
    mem: str | int | None = "32G"
    extra: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    log_dir: str | None = None
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        self.time = str(self.time)
        time_minutes(self.time)
        if self.gpus < 0:
            raise ConfigError(f"cluster.slurm.gpus (--slurm-gpus): must be 0 or more, got {self.gpus}.")
        if self.cpus < 1:
            raise ConfigError(f"cluster.slurm.cpus (--slurm-cpus): must be at least 1, got {self.cpus}.")
        if self.mem is not None:
            self.mem = str(self.mem).strip()
            if not _MEM.match(self.mem):
                raise ConfigError(f"cluster.slurm.mem (--slurm-mem): {self.mem!r} is not a Slurm memory size (e.g. 32G, 16000M).")
        for key in self.extra:
            if not isinstance(key, str) or not _OPTION.match(key):
                raise ConfigError(f"cluster.slurm.extra (--slurm-extra): {key!r} is not an sbatch long option name (e.g. qos, constraint).")
            if key in MANAGED_SBATCH:
                raise ConfigError(f"cluster.slurm.extra (--slurm-extra): '{key}' is set by the study; use {MANAGED_SBATCH[key]}.")
        if self.poll_seconds <= 0:
            raise ConfigError(f"cluster.slurm.poll_seconds: must be positive, got {self.poll_seconds}.")

    def describe(self) -> str:
        """One line for reports and ``--dry-run``."""
        parts = [f"partition={self.partition or '(default)'}", f"account={self.account or '(default)'}",
                 f"time={self.time}", f"gpus={self.gpus}", f"cpus={self.cpus}", f"mem={self.mem or '(default)'}"]
        parts += [f"{k}={v}" for k, v in sorted(self.extra.items())]
        return ", ".join(parts)


@dataclass
class ClusterConfig:
    """The ``cluster:`` section of a profile.

    Attributes:
        executor: ``sequential`` (one notebook after another, here), ``local`` (``workers``
            notebooks in parallel here) or ``slurm`` (one Slurm job per notebook).
        workers: parallel notebooks of the ``local`` executor.
        slurm: resources of the ``slurm`` executor's jobs.
    """

    executor: str = "sequential"
    workers: int = 1
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"cluster.executor (--executor): {self.executor!r} is not one of {list(EXECUTORS)}.")
        if self.workers < 1:
            raise ConfigError(f"cluster.workers (--workers): must be at least 1, got {self.workers}.")


def parse_cluster(raw: Mapping[str, Any] | None, path: str = "cluster") -> ClusterConfig:
    """A validated :class:`ClusterConfig` from a profile's ``cluster:`` mapping (strict keys)."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {raw!r}.")
    return from_dict(ClusterConfig, raw or {}, path)


def merge_cluster(base: Mapping[str, Any] | None, over: Mapping[str, Any] | None) -> ClusterConfig:
    """``base`` (a profile's ``cluster:``) with the values of ``over`` (command line) on top.

    ``over`` may nest (``{"slurm": {"gpus": 0}}``); ``None`` values mean "not given"; ``slurm.extra``
    merges key by key.
    """
    merged: dict[str, Any] = {k: v for k, v in dict(base or {}).items()}
    for key, value in dict(over or {}).items():
        if value is None:
            continue
        if key == "slurm":
            slurm = dict(merged.get("slurm") or {})
            for k, v in dict(value).items():
                if v is None:
                    continue
                slurm[k] = {**dict(slurm.get("extra") or {}), **v} if k == "extra" else v
            merged["slurm"] = slurm
        else:
            merged[key] = value
    return parse_cluster(merged)
