"""The study's unit of work: :class:`Job` (one notebook execution), its result, and how one job runs
(papermill) or is skipped. Shared by the planner (:mod:`lowres_clip.study`) and the executors
(:mod:`lowres_clip.study.executors`), which do not import each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import NB_REPORT
from .spec import RunSpec

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL_NAME = "python3"

class StudyError(ValueError):
    """The study cannot start (bad notebook folder, missing kernel); the message says what to do."""


@dataclass
class Job:
    """One notebook execution of the study.

    Attributes:
        name: short label for progress and the report (``eurosat/lora/k16-s1``).
        notebook: notebook file name in the notebooks folder.
        parameters: papermill parameters.
        output: where the executed notebook is written.
        specs: the runs the notebook makes (empty for helper notebooks): one, or the method's
            slice of the grid (every K and seed) when notebooks run per method.
        outputs: files whose presence means a helper notebook's work is done.
        depends: names of jobs that must succeed first.
        needed_by: runs that need this helper (a helper is skipped when all are finished).
    """

    name: str
    notebook: str
    parameters: dict[str, Any]
    output: Path
    specs: list[RunSpec] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)
    needed_by: list[RunSpec] = field(default_factory=list)


@dataclass
class StudyResult:
    """What a study run did.

    Attributes:
        ran: names of the jobs executed successfully.
        skipped: names of the jobs skipped (finished runs, helpers with nothing to do).
        failed: job name -> error message (failing notebooks and jobs whose dependency failed).
        executed: job name -> executed notebook path.
        tables: the aggregated table files.
        seconds: wall time.
        job_ids: job name -> Slurm job id (``slurm`` executor).
        logs: job name -> log file (``slurm`` executor: the job's stderr; ``.out`` beside it).
    """

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    executed: dict[str, Path] = field(default_factory=dict)
    tables: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    job_ids: dict[str, str] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """A human-readable report (ends with the failures, one per line)."""
        lines = [f"study: {len(self.ran)} ran, {len(self.skipped)} skipped, {len(self.failed)} failed "
                 f"in {self.seconds:.0f} s"]
        lines += [f"  tables: {p}" for p in self.tables if p.suffix == ".md"]
        lines += [f"  FAILED {name}: {msg}" for name, msg in self.failed.items()]
        return "\n".join(lines)



# ----------------------------------------------------------------------------- running
def execute(job: Job, kernel_name: str = KERNEL_NAME, notebooks_dir: str | Path = NOTEBOOKS_DIR) -> None:
    """Execute one job's notebook with papermill (raises on a failing cell).

    The kernel talks to this process over IPC sockets (files in a short temporary folder, removed
    afterwards) rather than local TCP, over which every ipykernel warns on its stderr, i.e. the
    study's, that its traffic is unencrypted. After Ctrl-C in a study (:func:`lowres_clip.interrupt.pressed`)
    the kernel is killed at once: asked to shut down while busy with a cell, ipykernel closes its
    sockets under the cell's reply and prints a zmq traceback; a kernel still starting is killed too.
    After a Ctrl-C a notebook that fails (its cell was stopped by it) ends the job as interrupted, not
    as a failed notebook; so does one that returns although the ``KeyboardInterrupt`` did not reach
    this frame (defensive: should a library swallow it).
    """
    import os
    import shutil
    import tempfile

    import papermill
    from jupyter_client import AsyncKernelManager
    from jupyter_core.utils import run_sync

    from . import interrupt

    started: list[AsyncKernelManager] = []
    ipc_dir = None
    if os.name == "posix":  # a socket path has at most ~100 bytes: short folder, short names
        base = tempfile.gettempdir()
        ipc_dir = tempfile.mkdtemp(prefix="lrc-", dir=base if len(base) <= 60 else "/tmp")

    class StudyKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            if ipc_dir is not None:
                kwargs.update(transport="ipc", ip=os.path.join(ipc_dir, "k"))
            super().__init__(**kwargs)
            started.append(self)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            await super().shutdown_kernel(now=now or interrupt.pressed(), restart=restart)

    job.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(Path(notebooks_dir) / job.notebook), str(job.output), parameters=job.parameters,
            kernel_name=kernel_name, progress_bar=False, cwd=str(notebooks_dir),
            kernel_manager_class=StudyKernelManager,
        )
    except KeyboardInterrupt:  # e.g. during the kernel's start, which nbclient does not clean up
        _kill(started, run_sync)
        raise
    except Exception:
        if interrupt.pressed():  # the notebook failed because Ctrl-C stopped it: an interrupt, not a failure
            _kill(started, run_sync)
            raise KeyboardInterrupt from None
        raise
    else:
        if interrupt.pressed():  # a Ctrl-C whose KeyboardInterrupt did not reach this frame
            raise KeyboardInterrupt
    finally:
        if ipc_dir is not None:
            shutil.rmtree(ipc_dir, ignore_errors=True)


def _kill(started: list, run_sync) -> None:
    """Kill the kernels a notebook execution started that are still alive."""
    for km in started:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)


def error_message(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    if ename:  # papermill.PapermillExecutionError
        return f"{ename}: {str(getattr(exc, 'evalue', '')).strip()[:500]}"
    return f"{type(exc).__name__}: {str(exc).strip()[:500]}"


def should_skip(job: Job, force: bool, ran: set[str]) -> bool:
    """Whether a job has nothing to do (see the module docstring)."""
    if force:
        return False
    if job.notebook == NB_REPORT:  # the report reads every record: redo it when anything ran
        return not ran and all(p.exists() for p in job.outputs)
    if job.specs:
        return all(spec.is_finished() for spec in job.specs)
    if any(not spec.is_finished() for spec in job.needed_by):
        return False  # a run still needs this helper's output
    if any(d in ran for d in job.depends):
        return False  # its inputs changed in this study run
    return all(p.exists() for p in job.outputs)
