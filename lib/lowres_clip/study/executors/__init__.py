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

from .base import (
    JobFailed, JobRunner, LIB_DIR, SkipRule, SlotRunner, StudyExecutor, Submission, environment_line,
    plan_submissions, source_env, waits_for_all,
)
from .sequential import SequentialExecutor
from .gpu import THREAD_VARIABLES, slot_env, visible_gpus, worker_threads
from .local import LocalExecutor
from .slurm import RESULT_GRACE_S, SlurmStudyExecutor, run_slurm_job, sbatch_parameters
from .choose import make_executor
from .child import main

__all__ = [
    "environment_line", "JobFailed", "JobRunner", "LIB_DIR", "LocalExecutor", "main", "make_executor",
    "plan_submissions", "RESULT_GRACE_S", "run_slurm_job", "sbatch_parameters", "SequentialExecutor",
    "SkipRule", "slot_env", "SlotRunner", "SlurmStudyExecutor", "source_env", "StudyExecutor", "Submission",
    "THREAD_VARIABLES", "visible_gpus", "waits_for_all", "worker_threads",
]
