"""The ``local`` executor: up to ``workers`` notebooks at once on this machine, each in its own
process (``python -m lowres_clip.study.executors run-job``).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Mapping, Sequence

from tqdm.auto import tqdm

from ... import interrupt
from ...jobs import KERNEL_NAME, NOTEBOOKS_DIR, Job, StudyError, StudyResult, error_message
from .base import (
    JobFailed, SkipRule, SlotRunner, StudyExecutor, Submission, _note_outputs, _order, plan_submissions,
    source_env,
)
from .gpu import THREAD_VARIABLES, slot_env, visible_gpus, worker_threads


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
        """``python -m lowres_clip.study.executors run-job ...`` with ``env`` added; raises on failure."""
        log = self.log_path(job)
        log.parent.mkdir(parents=True, exist_ok=True)
        job_file, error_file = log.with_suffix(".job.pkl"), log.with_suffix(".error")
        job_file.write_bytes(pickle.dumps(job))
        error_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "lowres_clip.study.executors", "run-job", str(job_file), "--kernel",
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
