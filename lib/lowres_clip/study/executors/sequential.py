"""The ``sequential`` executor: one notebook after another in this process."""

from __future__ import annotations

from typing import Sequence

from tqdm.auto import tqdm

from ... import interrupt
from ...jobs import Job, StudyResult, error_message
from .base import JobRunner, SkipRule, StudyExecutor, _note_outputs


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
