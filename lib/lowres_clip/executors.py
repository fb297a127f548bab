"""Executors of the study's job graph (:func:`lowres_clip.study.plan_study`): where the notebooks run.

* ``sequential``: one notebook after another in this process (the historical behaviour).
* ``local``: up to ``workers`` notebooks at once on this machine, each in its own process, in an
  order that respects the graph; with GPUs present every worker slot is pinned to one GPU through
  ``CUDA_VISIBLE_DEVICES`` (slot ``i`` gets the ``i % n``-th visible GPU). Logs:
  ``{runs_root}/local/{job name with / -> __}.log``.
* ``slurm``: one Slurm job per notebook execution, submitted with submitit; the graph becomes Slurm
  dependencies (``afterok:<ids>``, with ``--kill-on-invalid-dep=yes`` so that dependants of a failed
  job are cancelled instead of pending forever); the report waits for every other job
  (``afterany``). Resources come from the profile's ``cluster.slurm`` and the command line
  (:class:`lowres_clip.cluster.SlurmSettings`). Logs: ``{log_dir}/<job id>_0_log.out`` and
  ``.err`` (``log_dir`` defaults to ``{runs_root}/slurm``), next to ``<job id>_submission.sh``.

All three have the study's resume semantics: a job is skipped by the same rule
(:func:`lowres_clip.jobs.should_skip`, decided before anything is submitted for ``local`` and
``slurm``), so finished runs are not submitted again, ``--force`` resubmits the selected ones, and
a rerun after a failure or a ``scancel`` submits only what is missing. Dependants of a failed job do
not run and are reported as ``not run: <job> failed``. Every notebook gets the same parameters
whatever the executor, so results do not depend on it.

The jobs import the same ``lowres_clip`` sources as the process that starts them: the folder above
this package is put first on their ``PYTHONPATH``, and they run on this interpreter
(``sys.executable``), whose ``python3`` kernel the notebooks use.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm.auto import tqdm

from . import interrupt
from .cluster import ClusterConfig, SlurmSettings, time_minutes
from .jobs import KERNEL_NAME, NOTEBOOKS_DIR, Job, StudyError, StudyResult, error_message, execute
from .registry import NB_REPORT

SkipRule = Callable[[Job, "set[str]"], bool]
"""``(job, names of the jobs run or planned in this study) -> whether the job has nothing to do``."""
JobRunner = Callable[[Job], None]
"""Runs one job in this process; raises when its notebook fails."""
SlotRunner = Callable[[Job, Mapping[str, str]], None]
"""Runs one job with extra environment variables (``CUDA_VISIBLE_DEVICES``); raises on failure."""

LIB_DIR = Path(__file__).resolve().parents[1]  # the folder holding this package (repo/lib)
RESULT_GRACE_S = 60.0  # a Slurm job with a result counts as ended after this long, whatever sacct says


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


# ----------------------------------------------------------------------------- executors
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


class SequentialExecutor(StudyExecutor):
    """One notebook after another in this process, skipping as it goes."""

    name = "sequential"

    def __init__(self, runner: JobRunner):
        self.runner = runner

    def describe(self) -> str:
        return "sequential (one notebook after another, on this machine)"

    def run(self, jobs: Sequence[Job], should_skip: SkipRule, progress: bool = True) -> StudyResult:
        result = StudyResult()
        status: dict[str, str] = {}
        ran: set[str] = set()
        bar = tqdm(jobs, desc="study", unit="notebook", disable=not progress)
        with interrupt.guard([j.name for j in jobs], result.ran, result.skipped, result.failed, bar.close) as guard:
            for job in bar:
                guard.current = job.name
                bar.set_postfix_str(job.name[-60:])
                broken = [d for d in job.depends if status.get(d) == "failed"]
                if broken:
                    status[job.name] = "failed"
                    result.failed[job.name] = f"not run: {broken[0]} failed"
                    continue
                if should_skip(job, ran):
                    status[job.name] = "skipped"
                    result.skipped.append(job.name)
                    continue
                try:
                    self.runner(job)
                except Exception as exc:  # a failing notebook must not stop the others
                    interrupt.raise_if_interrupt(exc)  # ... but Ctrl-C in its kernel stops the study
                    status[job.name] = "failed"
                    result.failed[job.name] = error_message(exc) + f" (see {job.output})"
                else:
                    status[job.name] = "ran"
                    ran.add(job.name)
                    result.ran.append(job.name)
        bar.close()
        _note_outputs(result, jobs)
        return result


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch / no driver: no GPUs
        return []


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """CPU threads per worker: the CPUs shared evenly (at least 1). On 2 cores, two single-threaded
    notebooks do 1.19x the work of one notebook on both cores (small CNN batches scale poorly
    over threads; ``benchmarks/worker_threads.py``, 2026-12-02)."""
    return max(1, (cpus or os.cpu_count() or 1) // workers)


def slot_env(slot: int, gpus: Sequence[str], threads: int | None = None) -> dict[str, str]:
    """Environment of worker ``slot``: its GPU, round-robin over ``gpus`` (none without GPUs), and
    ``threads`` CPU threads (``OMP_NUM_THREADS``, read by torch) unless the caller's environment
    already sets them."""
    env = {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if gpus else {}
    if threads is not None and not any(v in os.environ for v in THREAD_VARIABLES):
        env.update({v: str(threads) for v in THREAD_VARIABLES})
    return env


class LocalExecutor(StudyExecutor):
    """Up to ``workers`` notebooks at once on this machine, each in its own process.

    Args:
        workers: parallel notebooks.
        kernel_name, notebooks_dir: as for :func:`lowres_clip.execute`.
        log_dir: one log per job (``{name with / -> __}.log``).
        gpus: GPU ids to pin the worker slots to (default :func:`visible_gpus`).
        runner: runs a job in this process instead of a child process (tests).
    """

    name = "local"

    def __init__(self, workers: int, kernel_name: str = KERNEL_NAME,
                 notebooks_dir: str | Path = NOTEBOOKS_DIR, log_dir: str | Path = "runs/local",
                 gpus: Sequence[str] | None = None, runner: SlotRunner | None = None):
        if workers < 1:
            raise StudyError(f"--workers must be at least 1, got {workers}.")
        self.workers, self.kernel_name, self.notebooks_dir = workers, kernel_name, Path(notebooks_dir)
        self.log_dir = Path(log_dir)
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.runner = runner or self._run_in_child

    def describe(self) -> str:
        pin = (f"worker i on GPU {{{', '.join(self.gpus)}}}[i % {len(self.gpus)}]" if self.gpus
               else "no GPUs")
        threads = ("CPU threads from the environment" if any(v in os.environ for v in THREAD_VARIABLES)
                   else f"{worker_threads(self.workers)} CPU thread(s) each")
        return f"local ({self.workers} workers on this machine, {pin}, {threads}; logs {self.log_dir}/<job>.log)"

    def log_path(self, job: Job) -> Path:
        return self.log_dir / f"{job.name.replace('/', '__')}.log"

    def _run_in_child(self, job: Job, env: Mapping[str, str]) -> None:
        """``python -m lowres_clip.executors run-job ...`` with ``env`` added; raises on failure."""
        log = self.log_path(job)
        log.parent.mkdir(parents=True, exist_ok=True)
        job_file, error_file = log.with_suffix(".job.pkl"), log.with_suffix(".error")
        job_file.write_bytes(pickle.dumps(job))
        error_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "lowres_clip.executors", "run-job", str(job_file), "--kernel",
               self.kernel_name, "--notebooks-dir", str(self.notebooks_dir), "--error-file", str(error_file)]
        with log.open("w") as out:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env={**source_env(), **env})
        job_file.unlink(missing_ok=True)
        if done.returncode != 0:
            why = error_file.read_text().strip() if error_file.is_file() else f"exit code {done.returncode}"
            raise JobFailed(f"{why} (log {log})")

    def run(self, jobs: Sequence[Job], should_skip: SkipRule, progress: bool = True) -> StudyResult:
        planned, skipped = plan_submissions(jobs, should_skip)
        result = StudyResult(skipped=skipped)
        status: dict[str, str] = {}
        waiting = list(planned)
        free = list(range(self.workers))
        running: dict[Future, tuple[Submission, int]] = {}
        bar = tqdm(total=len(planned), desc=f"study ({self.workers} workers)", unit="notebook", disable=not progress)
        # Ctrl-C: the children (same process group) stop too; one line says what finished
        with interrupt.guard([s.job.name for s in planned], result.ran, result.skipped, result.failed,
                             bar.close) as guard:
            with ThreadPoolExecutor(self.workers) as pool:
                while waiting or running:
                    for sub in list(waiting):  # plan order: deterministic start order
                        name = sub.job.name
                        broken = [d for d in sub.after_ok if status.get(d) == "failed"]
                        if broken:
                            waiting.remove(sub)
                            status[name] = "failed"
                            result.failed[name] = f"not run: {broken[0]} failed"
                            bar.update()
                            continue
                        ready = all(status.get(d) == "ran" for d in sub.after_ok) and all(d in status for d in sub.after_all)
                        if ready and free:
                            slot = free.pop(0)
                            waiting.remove(sub)
                            env = slot_env(slot, self.gpus, worker_threads(self.workers))
                            running[pool.submit(self.runner, sub.job, env)] = (sub, slot)
                            guard.current = name
                    if not running:
                        if waiting:  # cannot happen with a plan in dependency order
                            raise StudyError(f"jobs wait for jobs that never start: {[s.job.name for s in waiting]}")
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        sub, slot = running.pop(fut)
                        free.append(slot)
                        free.sort()
                        name = sub.job.name
                        try:
                            fut.result()
                        except Exception as exc:
                            status[name] = "failed"
                            message = str(exc) if isinstance(exc, JobFailed) else error_message(exc) + f" (see {sub.job.output})"
                            result.failed[name] = message
                            bar.write(f"FAILED {name}: {message}")
                        else:
                            status[name] = "ran"
                            result.ran.append(name)
                        bar.update()
        bar.close()
        _note_outputs(result, jobs)
        return _order(result, jobs)


# ----------------------------------------------------------------------------- slurm
def run_slurm_job(job: Job, kernel_name: str, notebooks_dir: str) -> str:
    """What a Slurm job runs: the job's notebook. Raises :class:`JobFailed` (one line) on failure."""
    line = environment_line()
    print(line, flush=True)
    _run_notebook(job, kernel_name, notebooks_dir)
    return line


def _run_notebook(job: Job, kernel_name: str, notebooks_dir: str | Path) -> None:
    try:
        execute(job, kernel_name, notebooks_dir)
    except Exception as exc:
        traceback.print_exc()  # the full story goes to the job's log
        raise JobFailed(_one_line(error_message(exc)) + f" (see {job.output})") from None


def sbatch_parameters(settings: SlurmSettings, name: str, after_ok: Sequence[str] = (),
                      after_all: Sequence[str] = ()) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords of one job (``after_*``: Slurm job ids)."""
    params: dict[str, Any] = {"job_name": name, "time": time_minutes(settings.time), "cpus_per_task": settings.cpus}
    if settings.partition:
        params["partition"] = settings.partition
    if settings.account:
        params["account"] = settings.account
    if settings.gpus:
        params["gpus_per_node"] = settings.gpus
    dependency = []
    if after_ok:
        dependency.append("afterok:" + ":".join(after_ok))
    if after_all:
        dependency.append("afterany:" + ":".join(after_all))
    if dependency:
        params["dependency"] = ",".join(dependency)
    extra: dict[str, Any] = {**settings.extra, "kill-on-invalid-dep": "yes"}
    if settings.mem:
        extra["mem"] = settings.mem
    params["additional_parameters"] = extra
    # the same sources as the submitting process, then the user's own set-up lines
    params["setup"] = [f"export PYTHONPATH={shlex.quote(str(LIB_DIR))}${{PYTHONPATH:+:$PYTHONPATH}}", *settings.setup]
    return params


class SlurmStudyExecutor(StudyExecutor):
    """One Slurm job per notebook execution through submitit (see the module docstring).

    Args:
        settings: resources of every job.
        kernel_name, notebooks_dir: as for :func:`lowres_clip.execute`.
        log_dir: submitit's folder: ``<job id>_submission.sh``, ``<job id>_0_log.out`` / ``.err``.
    """

    name = "slurm"
    verb = "submit"
    checks_device_here = False  # the GPUs are on the compute nodes

    def __init__(self, settings: SlurmSettings, kernel_name: str = KERNEL_NAME,
                 notebooks_dir: str | Path = NOTEBOOKS_DIR, log_dir: str | Path = "runs/slurm"):
        self.settings, self.kernel_name = settings, kernel_name
        self.notebooks_dir = Path(notebooks_dir).resolve()
        self.log_dir = Path(log_dir).resolve()

    def describe(self) -> str:
        return (f"slurm (one job per notebook; {self.settings.describe()}; "
                f"logs {self.log_dir}/<job id>_0_log.out and .err)")

    def _submit(self, sub: Submission, ids: Mapping[str, str]):
        import submitit

        ex = submitit.SlurmExecutor(folder=self.log_dir)
        ex.update_parameters(**sbatch_parameters(self.settings, sub.job.name, [ids[d] for d in sub.after_ok],
                                                 [ids[d] for d in sub.after_all if d in ids]))
        return ex.submit(run_slurm_job, sub.job, self.kernel_name, str(self.notebooks_dir))

    def submit_all(self, planned: Sequence[Submission], result: StudyResult) -> dict[str, Any]:
        """Submit every planned job in order; returns job name -> submitit job.

        A job whose submission fails is reported (so are its dependants, not submitted);
        when the very first submission fails nothing was submitted and :class:`StudyError` says why.
        """
        handles: dict[str, Any] = {}
        ids: dict[str, str] = {}
        for sub in planned:
            name = sub.job.name
            missing = [d for d in sub.after_ok if d not in ids]
            if missing:
                result.failed[name] = f"not run: {missing[0]} failed"
                continue
            try:
                sjob = self._submit(sub, ids)
            except Exception as exc:
                if not handles:
                    raise StudyError(f"sbatch refused the first job ({name}); nothing was submitted. "
                                     f"{_one_line(str(exc))}") from exc
                result.failed[name] = f"submission failed: {_one_line(str(exc))}"
                continue
            handles[name] = sjob
            ids[name] = sjob.job_id
            result.job_ids[name] = sjob.job_id
            result.logs[name] = sjob.paths.stderr
        return handles

    def _outcome(self, sjob: Any) -> str | None:
        """``None`` when the job succeeded, else why it failed (one line, with its id and log)."""
        where = f"slurm job {sjob.job_id}, log {sjob.paths.stderr}"
        state = sjob.watcher.get_state(sjob.job_id, mode="cache")
        if sjob.paths.result_pickle.exists() or state.upper().startswith("COMPLETED"):
            exc = sjob.exception()  # reads the result (waits briefly for it after COMPLETED)
            if exc is None:
                return None
            text = str(exc)
            marker = f"{JobFailed.__module__}.{JobFailed.__name__}: "
            found = [ln.split(marker, 1)[1] for ln in text.splitlines() if marker in ln]
            why = found[-1] if found else _one_line(text.splitlines()[-1] if text.strip() else type(exc).__name__)
            return f"{why} ({where})"
        return f"{state} without a result ({where})"

    def wait_all(self, planned: Sequence[Submission], handles: Mapping[str, Any], result: StudyResult,
                 progress: bool = True) -> None:
        """Poll Slurm (one ``sacct`` for all jobs) until every submitted job has ended.

        A job has ended when Slurm accounting says so; a job whose result is written but whose
        state stays unfinished for ``RESULT_GRACE_S`` (accounting lagging or broken) counts as ended.
        """
        pending = dict(handles)
        bar = tqdm(total=len(handles), desc="study (slurm)", unit="job", disable=not progress)
        deps = {s.job.name: s.after_ok for s in planned}
        result_seen: dict[str, float] = {}
        try:
            while pending:
                next(iter(pending.values())).watcher.update()
                for name, sjob in list(pending.items()):
                    if sjob.paths.result_pickle.exists():
                        result_seen.setdefault(name, time.monotonic())
                    lagging = name in result_seen and time.monotonic() - result_seen[name] > RESULT_GRACE_S
                    if not (sjob.watcher.is_done(sjob.job_id, mode="cache") or lagging):
                        continue
                    del pending[name]
                    bar.update()
                    why = self._outcome(sjob)
                    if why is None:
                        result.ran.append(name)
                        continue
                    result.failed[name] = why
                    if not any(d in result.failed for d in deps[name]):
                        bar.write(f"FAILED {name}: {why}")
                if pending:
                    time.sleep(self.settings.poll_seconds)
            for sub in planned:  # dependants of a failed job were cancelled by Slurm: say why
                name = sub.job.name
                broken = [d for d in sub.after_ok if d in result.failed]
                if name in result.failed and broken and not result.failed[name].startswith("not run"):
                    result.failed[name] = f"not run: {broken[0]} failed ({result.failed[name]})"
        except KeyboardInterrupt:
            ids = " ".join(s.job_id for s in pending.values())
            print(f"\ninterrupted: {len(pending)} Slurm jobs are still queued or running and go on ({ids}); "
                  f"`scancel {ids}` stops them. Rerun the study once they have ended: it submits only what "
                  f"is missing.", file=sys.stderr)
            raise
        finally:
            bar.close()

    @staticmethod
    def check_available() -> None:
        """Raise :class:`StudyError` when this machine cannot submit Slurm jobs."""
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise StudyError("--executor slurm needs Slurm's sbatch and srun on PATH: run the study on a login "
                             "node of the cluster (or start a single-node Slurm here: sudo .ci/slurm.sh start).")
        if importlib.util.find_spec("submitit") is None:
            raise StudyError("--executor slurm needs submitit: pip install -r requirements.txt.")

    def run(self, jobs: Sequence[Job], should_skip: SkipRule, progress: bool = True) -> StudyResult:
        planned, skipped = plan_submissions(jobs, should_skip)
        result = StudyResult(skipped=skipped)
        if planned:
            self.check_available()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            handles = self.submit_all(planned, result)
            if progress:
                print(f"submitted {len(handles)} Slurm jobs ({self.describe()})", file=sys.stderr)
            self.wait_all(planned, handles, result, progress)
        _note_outputs(result, jobs)
        return _order(result, jobs)


# ----------------------------------------------------------------------------- choosing one
def make_executor(executor: str | StudyExecutor | JobRunner | None, cluster: ClusterConfig, runs_root: Path,
                  kernel_name: str = KERNEL_NAME,
                  notebooks_dir: str | Path = NOTEBOOKS_DIR) -> StudyExecutor:
    """The executor of a study: an instance as is; a job runner (tests) sequentially; a name
    (or ``cluster.executor`` when ``None``) with the resources of ``cluster``."""
    if isinstance(executor, StudyExecutor):
        return executor
    if callable(executor):
        return SequentialExecutor(executor)
    name = executor or cluster.executor
    if name == "sequential":
        return SequentialExecutor(lambda job: execute(job, kernel_name, notebooks_dir))
    if name == "local":
        return LocalExecutor(cluster.workers, kernel_name, notebooks_dir, runs_root / "local")
    if name == "slurm":
        log_dir = Path(cluster.slurm.log_dir) if cluster.slurm.log_dir else runs_root / "slurm"
        return SlurmStudyExecutor(cluster.slurm, kernel_name, notebooks_dir, log_dir)
    raise StudyError(f"unknown executor {name!r}; choose one of sequential, local, slurm.")


# ----------------------------------------------------------------------------- child process entry
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lowres_clip.executors run-job JOB.pkl ...``: one job of the local executor."""
    parser = argparse.ArgumentParser(prog="python -m lowres_clip.executors")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-job", help="execute one pickled study job (used by the local executor)")
    run.add_argument("job", type=Path)
    run.add_argument("--kernel", default=KERNEL_NAME)
    run.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR))
    run.add_argument("--error-file", type=Path, default=None, help="where the one-line failure goes")
    args = parser.parse_args(argv)
    job = pickle.loads(args.job.read_bytes())
    print(environment_line(), flush=True)
    try:
        _run_notebook(job, args.kernel, args.notebooks_dir)
    except JobFailed as exc:
        if args.error_file:
            args.error_file.write_text(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
