"""Running a planned study (:func:`run_study`): preflight, ``--force``, the executor, the study log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .. import interrupt, preflight
from ..cluster import merge_cluster
from ..config import Profile, load_profile
from ..jobs import KERNEL_NAME, NOTEBOOKS_DIR, Job, StudyResult, should_skip
from ..spec import RunSpec
from .kernel import ensure_kernel
from .log import made_runs, write_log
from .planner import _resolve, plan_study

if TYPE_CHECKING:
    from . import executors

DEFAULT_JOBS_PER = {"sequential": "method", "local": "method-seed", "slurm": "run"}


def run_study(
    profile: str | Path | Profile,
    dataset: str,
    data_root: str | Path | None = None,
    force: bool = False,
    runs_root: str | Path | None = None,
    figures_root: str | Path | None = None,
    cache_root: str | Path | None = None,
    notebooks_out: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    methods: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    kernel_name: str = KERNEL_NAME,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    executor: Callable[[Job], None] | str | executors.StudyExecutor | None = None,
    progress: bool = True,
    command: str | None = None,
    jobs_per: str | None = None,
    check: bool = True,
    cluster: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> StudyResult:
    """Run the study for ``dataset`` over the profile's grid (see the module docstring).

    Args:
        profile: profile name or YAML path.
        dataset: one of the profile's ``grid.datasets``.
        data_root: dataset folder (default: the profile's / :func:`lowres_clip.datasets.default_data_root`).
        force: rerun finished runs too.
        runs_root, figures_root, cache_root: output roots (default: the profile's / the repo's).
        notebooks_out: folder of the executed notebooks (default ``{runs_root}/notebooks``).
        overrides: extra :class:`~lowres_clip.config.RunConfig` values for every run (dotted keys ok).
        methods, shots, seeds: restrict the grid.
        kernel_name: Jupyter kernel the notebooks run on.
        notebooks_dir: folder of the numbered notebooks.
        executor: ``sequential`` | ``local`` | ``slurm`` (default: the profile's ``cluster.executor``,
            else ``sequential``; :mod:`lowres_clip.study.executors`), an executor, or a function running
            one job in this process (sequentially; tests).
        progress: show a progress bar.
        command: the command line, for the study log.
        jobs_per: how the grid is cut into notebook executions (:func:`plan_study`). ``None``:
            ``method`` for the sequential executor (fewest kernel starts), ``method-seed`` for local
            workers (even pieces), ``run`` for Slurm (one job per run).
        check: run the preflight (:func:`lowres_clip.preflight.require`) before the first notebook.
        cluster: executor settings on top of the profile's ``cluster:`` (e.g. ``{"workers": 2,
            "slurm": {"partition": "gpu"}}``; :class:`lowres_clip.cluster.ClusterConfig`).
        dry_run: print what would run or be submitted (executor, resources, skips), run nothing.
    """
    from . import executors

    t0 = time.time()
    prof = load_profile(profile)
    settings = merge_cluster(prof.cluster, cluster)
    if jobs_per is None:
        kind = (executor or settings.executor) if isinstance(executor, str) or executor is None \
            else getattr(executor, "name", "sequential")  # an executor object, or a function run here
        jobs_per = DEFAULT_JOBS_PER.get(kind, "method")
    jobs = plan_study(prof, dataset, data_root, runs_root, figures_root, cache_root, notebooks_out,
                      overrides, methods, shots, seeds, notebooks_dir, jobs_per)
    base = RunSpec(_resolve(prof, jobs[-1].parameters, {}))
    runner = executors.make_executor(executor, settings, base.runs_root, kernel_name, notebooks_dir)
    skip = lambda job, ran: should_skip(job, force, ran)  # noqa: E731
    if dry_run:
        print(runner.plan_text(jobs, skip))
        return StudyResult(seconds=time.time() - t0)
    if check:  # data, images, model, weights, device: one line per problem before any kernel starts
        configs = {spec.config_hash: spec.config for job in jobs for spec in job.specs}
        preflight.require([base.config, *configs.values()], progress=progress, check_device=runner.checks_device_here)
    if force:  # notebooks reuse runs finished with the same settings: forget the selected ones first
        for spec in (spec for job in jobs for spec in job.specs):
            spec.record_path.unlink(missing_ok=True)
    if executor is None or isinstance(executor, str):
        ensure_kernel(kernel_name)
    specs = [spec for job in jobs for spec in job.specs]
    try:
        result = runner.run(jobs, skip, progress)
    except interrupt.Interrupted as stop:  # the runs made before Ctrl-C are logged too (and publishable)
        partial = StudyResult(ran=stop.ran, skipped=stop.skipped, failed={n: "interrupted" for n in stop.remaining[:1]},
                              seconds=time.time() - t0)
        write_log(base, partial, command, runner.describe(), getattr(runner, "workers", 1), made_runs(specs, started=t0),
                  interrupted=True)
        raise
    result.tables = [p for p in base.table_paths() if p.exists()]
    result.seconds = time.time() - t0
    write_log(base, result, command, runner.describe(), getattr(runner, "workers", 1), made_runs(specs, started=t0))
    return result
