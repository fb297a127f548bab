"""What every executor shares: the interface (:class:`StudyExecutor`), which jobs start and what they
wait for (:func:`plan_submissions`), the jobs' environment (the package's sources first on
``PYTHONPATH``) and running one notebook inside a job.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ...jobs import Job, StudyResult, error_message, execute
from ...registry import NB_REPORT

SkipRule = Callable[[Job, "set[str]"], bool]
"""``(job, names of the jobs run or planned in this study) -> whether the job has nothing to do``."""
JobRunner = Callable[[Job], None]
"""Runs one job in this process; raises when its notebook fails."""
SlotRunner = Callable[[Job, Mapping[str, str]], None]
"""Runs one job with extra environment variables (``CUDA_VISIBLE_DEVICES``); raises on failure."""
LIB_DIR = Path(__file__).resolve().parents[3]  # the folder holding the lowres_clip package (repo/lib)


class JobFailed(RuntimeError):
    """A job's notebook failed (raised inside the job; the message is one line)."""


@dataclass
class Submission:
    """A job that the executor will start.

    Attributes:
        job: the study job.
        after_ok: names of started jobs that must succeed first.
        after_all: names of started jobs that must end first, however they end (the report waits
            for every other job).
    """

    job: Job
    after_ok: list[str] = field(default_factory=list)
    after_all: list[str] = field(default_factory=list)


def waits_for_all(job: Job) -> bool:
    """Whether ``job`` runs after every other job of the study (the report tables)."""
    return job.notebook == NB_REPORT


def plan_submissions(jobs: Sequence[Job], should_skip: SkipRule) -> tuple[list[Submission], list[str]]:
    """Which jobs start (with the jobs they wait for) and which are skipped, decided up front.

    Jobs are visited in plan order (dependencies come first); a job counts as run for the
    ``should_skip`` of later jobs once it is planned, as it would be after running sequentially.
    """
    planned: list[Submission] = []
    names: set[str] = set()
    skipped: list[str] = []
    for job in jobs:
        if should_skip(job, names):
            skipped.append(job.name)
            continue
        after_ok = [d for d in job.depends if d in names]
        after_all = [s.job.name for s in planned] if waits_for_all(job) else []
        planned.append(Submission(job, after_ok, after_all))
        names.add(job.name)
    return planned, skipped


def source_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with this package's folder first on ``PYTHONPATH``."""
    env = dict(os.environ if env is None else env)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != LIB_DIR]
    env["PYTHONPATH"] = os.pathsep.join([str(LIB_DIR), *rest])
    return env


def environment_line() -> str:
    """What a job runs on: host, interpreter, package folder, GPUs, Slurm job id (first log line)."""
    import lowres_clip

    keys = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")
    extra = " ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ)
    return (f"lowres_clip job on {socket.gethostname()}: python {sys.executable}; "
            f"lowres_clip {Path(lowres_clip.__file__).resolve().parent}; {extra}").rstrip("; ")


def _one_line(text: str, limit: int = 600) -> str:
    return " ".join(text.split())[:limit]


def _order(result: StudyResult, jobs: Sequence[Job]) -> StudyResult:
    """Lists and mappings of ``result`` in plan order (parallel executors finish in any order)."""
    rank = {job.name: i for i, job in enumerate(jobs)}
    result.ran.sort(key=rank.__getitem__)
    result.failed = dict(sorted(result.failed.items(), key=lambda kv: rank[kv[0]]))
    return result


def _note_outputs(result: StudyResult, jobs: Sequence[Job]) -> None:
    for job in jobs:
        if job.output.exists() and (job.name in result.ran or job.name in result.failed):
            result.executed[job.name] = job.output


class StudyExecutor(ABC):
    """Runs the study's jobs (see the module docstring)."""

    name: str = ""
    verb: str = "run"  # for --dry-run: "run" / "submit"
    checks_device_here: bool = True  # the notebooks use this machine's devices

    @abstractmethod
    def describe(self) -> str:
        """One line: the executor and its resources."""

    @abstractmethod
    def run(self, jobs: Sequence[Job], should_skip: SkipRule, progress: bool = True) -> StudyResult:
        """Run (or skip) every job; a failing job is reported and does not stop the others."""

    def plan_text(self, jobs: Sequence[Job], should_skip: SkipRule) -> str:
        """What :meth:`run` would start, one line per job (``--dry-run``)."""
        planned, _ = plan_submissions(jobs, should_skip)
        by_name = {s.job.name: s for s in planned}
        lines = [f"executor: {self.describe()}"]
        for job in jobs:
            sub = by_name.get(job.name)
            if sub is None:
                lines.append(f"  skip    {job.notebook:28s} {job.name}  (nothing to do)")
                continue
            after = ("  after every other job ends" if sub.after_all
                     else f"  after {', '.join(sub.after_ok)}" if sub.after_ok else "")
            lines.append(f"  {self.verb:7s} {job.notebook:28s} {job.name}{after}")
        lines.append(f"{len(planned)} to {self.verb}, {len(jobs) - len(planned)} skipped")
        return "\n".join(lines)


def _run_notebook(job: Job, kernel_name: str, notebooks_dir: str | Path) -> None:
    try:
        execute(job, kernel_name, notebooks_dir)
    except Exception as exc:
        traceback.print_exc()  # the full story goes to the job's log
        raise JobFailed(_one_line(error_message(exc)) + f" (see {job.output})") from None
