"""The ``slurm`` executor: one Slurm job per notebook through submitit, the plan's dependencies as
Slurm dependencies.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from ...cluster import SlurmSettings, time_minutes
from ...jobs import KERNEL_NAME, NOTEBOOKS_DIR, Job, StudyError, StudyResult
from .base import (
    JobFailed, LIB_DIR, SkipRule, StudyExecutor, Submission, _note_outputs, _one_line, _order, _run_notebook,
    environment_line, plan_submissions,
)

RESULT_GRACE_S = 60.0  # a Slurm job with a result counts as ended after this long, whatever sacct says


def run_slurm_job(job: Job, kernel_name: str, notebooks_dir: str) -> str:
    """What a Slurm job runs: the job's notebook. Raises :class:`JobFailed` (one line) on failure."""
    line = environment_line()
    print(line, flush=True)
    _run_notebook(job, kernel_name, notebooks_dir)
    return line


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
