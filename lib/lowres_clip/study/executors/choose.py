"""Choosing a study's executor by name, from the profile's ``cluster:`` section, or as given."""

from __future__ import annotations

from pathlib import Path

from ...cluster import ClusterConfig
from ...jobs import KERNEL_NAME, NOTEBOOKS_DIR, StudyError, execute
from .base import JobRunner, StudyExecutor
from .local import LocalExecutor
from .sequential import SequentialExecutor
from .slurm import SlurmStudyExecutor


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
