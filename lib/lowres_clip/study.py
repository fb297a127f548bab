"""Rerun the whole study headless: the numbered notebooks over a profile's grid, with papermill.

``python -m lowres_clip.study --profile cpu --dataset eurosat [--force] [--data-root DIR] [--executor slurm ...]``

For one dataset and every (K, seed) of the profile's grid it executes, in order:

1. ``00_data`` (sample and save the K-shot split, class counts, examples);
2. ``05_augment_generate`` for each augmentation kind the grid's methods use (``lora+aug-classic``);
3. one notebook per method label: ``01_zero_shot`` (``zero_shot`` and the ``linear_probe`` baseline),
   ``02_lora`` (``lora`` and every combination containing LoRA), ``03_bitfit`` (``bitfit`` and
   ``bitfit+meta_adapter``), ``04_meta_adapter``, ``06_augment_train`` (labels with ``+aug-...``);
   a grid entry with settings of its own (``meta_adapter[meta_adapter.budget=run]``,
   :class:`~lowres_clip.config.GridEntry`) runs its label's notebook with them, beside the plain label;
4. ``07_failure_analysis`` for each of the grid's ``failure_pairs``;

then ``08_report_tables`` once, which aggregates every finished run of the dataset over seeds
(mean ± std) into ``figures/{dataset}/tables/`` as CSV, Markdown and LaTeX.

Executed notebooks go to ``runs/notebooks/{run id}/`` (git-ignored). A run finished with the same
settings (:meth:`lowres_clip.spec.RunSpec.is_finished`: a record with the same settings hash) is
skipped unless ``--force``; a run whose settings changed is a new run in its own folder. So are ``00_data`` and
``05_augment_generate`` once every run needing them is finished (and the data figures exist), and
``07_failure_analysis`` when its summary exists and neither of its two runs ran again. A failing notebook is
reported at the end and the others go on (notebooks depending on it are reported as failed without
running); the exit code is 1 if anything failed. Every run's configuration and every notebook
parameter is validated before the first notebook starts, so a typo fails at once, naming the key.

Executors (:mod:`lowres_clip.executors`, ``--executor``): ``sequential`` (default), ``local``
(``--workers N`` notebooks in parallel on this machine, one GPU each) or ``slurm`` (one Slurm job per
notebook, the dependencies as Slurm dependencies; resources from ``--slurm-*`` or the profile's
``cluster:`` section). Skipping, ``--force`` and the failure report are the same for all three;
``--dry-run`` prints what would run or be submitted, with the executor and its resources.
``--jobs-per method | method-seed | run`` cuts the grid into notebook executions (defaults: ``method``
sequentially, ``method-seed`` on local workers, ``run`` on Slurm; :func:`plan_study`). The ``cpu``
profile runs on two local workers of one CPU thread each (its ``cluster:`` section).

Kernel: notebooks run on the Jupyter kernel ``python3`` (``--kernel``). Started from this
interpreter, jupyter_client maps the ``python3`` kernel spec to ``sys.executable``, i.e. the
project's virtualenv. If no such kernel spec exists, :func:`ensure_kernel` installs the
virtualenv's own (``python -m ipykernel install --sys-prefix``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import yaml

from . import interrupt, preflight
from . import registry
from .atomic import atomic_write_text
from .cluster import EXECUTORS, merge_cluster
from .config import PROFILES_DIR, ConfigError, GridEntry, Profile, RunConfig, load_profile, parse_entry, resolve_config
from .registry import (  # noqa: F401 (the notebook names are the registry's; re-exported: the study's names)
    NB_AUG_GENERATE, NB_AUG_TRAIN, NB_BITFIT, NB_DATA, NB_FAILURE, NB_LORA, NB_META, NB_REPORT, NB_ZERO_SHOT, NOTEBOOKS,
)
from .jobs import (  # noqa: F401 (re-exported: the study's names)
    KERNEL_NAME,
    NOTEBOOKS_DIR,
    Job,
    StudyError,
    StudyResult,
    error_message,
    execute,
    should_skip,
)
from .spec import STUDY_LOG, STUDY_LOGS, RunSpec

if TYPE_CHECKING:
    from . import executors

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def notebook_for(label: str) -> str:
    """The notebook that runs a method label or grid entry (see the module docstring)."""
    return registry.parse_label(parse_entry(label).label).notebook


# ----------------------------------------------------------------------------- kernel
def ensure_kernel(kernel_name: str = KERNEL_NAME) -> str:
    """Make sure the Jupyter kernel ``kernel_name`` exists; install the venv's ``python3`` if absent."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        ksm.get_kernel_spec(kernel_name)
        return kernel_name
    except NoSuchKernel:
        if kernel_name != KERNEL_NAME:
            raise StudyError(f"Jupyter kernel {kernel_name!r} is not installed; available: {sorted(ksm.find_kernel_specs())}.")
    cmd = [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise StudyError(f"Could not install the python3 kernel ({' '.join(cmd)}): {done.stderr.strip()}")
    return kernel_name


# ----------------------------------------------------------------------------- planning
def notebook_parameters(notebook: Path) -> list[str]:
    """Names of the parameters a notebook declares in its ``parameters`` cell."""
    import papermill

    return list(papermill.inspect_notebook(str(notebook)))


def _common(profile: Profile, dataset: str, roots: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    shipped = profile.path is None or profile.path.resolve().parent == PROFILES_DIR
    params = {"profile": profile.name if shipped else str(profile.path.resolve()), "dataset": dataset, **roots}
    if overrides:
        params["overrides"] = dict(overrides)
    return {k: v for k, v in params.items() if v is not None}


def plan_study(
    profile: str | Path | Profile,
    dataset: str,
    data_root: str | Path | None = None,
    runs_root: str | Path | None = None,
    figures_root: str | Path | None = None,
    cache_root: str | Path | None = None,
    notebooks_out: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    methods: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    jobs_per: str = "method",
) -> list[Job]:
    """Every notebook execution of the study for ``dataset``, validated (nothing runs).

    ``methods`` / ``shots`` / ``seeds`` restrict the profile's grid (they must be part of it; a
    method is a grid entry, e.g. ``meta_adapter[meta_adapter.budget=run]``: :class:`~lowres_clip.config.GridEntry`).
    An entry with settings of its own runs with them on top of ``overrides`` (its notebooks get
    both in their ``overrides`` parameter) and its jobs are named with its ``[...]`` suffix.
    ``jobs_per`` (:data:`JOBS_PER`) sets how the grid is cut into notebook executions:
    ``method``: one per method over its slice of the grid (every K and seed; one kernel start
    instead of one per run), with one data / augmentation notebook for the whole grid;
    ``method-seed``: one per method and seed over every K (even pieces for parallel workers), with
    one data / augmentation notebook per seed; ``run``: one per run (each (K, seed) cell on its own).
    The plan lists data jobs, then generation, then run jobs longest first (augmented training,
    image-tower training, other training, none), so parallel workers do not end on one long job.

    Raises:
        ConfigError: unknown profile, profile key, method, override or notebook parameter (named).
        StudyError: a notebook is missing.
    """
    overrides, shots, seeds, methods = preflight.grid_overrides(overrides, shots, seeds, methods)
    prof = load_profile(profile)
    grid = prof.grid
    preflight.check_dataset_name(dataset)  # grid.datasets are defaults: any dataset runs with the profile
    labels = _subset("methods", [str(parse_entry(m)) for m in methods] if methods else None, grid.methods)
    entries = {text: parse_entry(text) for text in labels}
    shot_list = _subset("shots", shots, grid.shots)
    seed_list = _subset("seeds", seeds, grid.seeds)
    roots = {"data_root": _str(data_root), "runs_root": _str(runs_root), "figures_root": _str(figures_root),
             "cache_root": _str(cache_root)}
    common = _common(prof, dataset, roots, overrides or {})
    nb_dir = Path(notebooks_dir)
    base = RunSpec(_resolve(prof, common, {}))
    out_root = Path(notebooks_out) if notebooks_out else base.runs_root / "notebooks"
    if jobs_per not in JOBS_PER:
        raise ConfigError(f"jobs_per (--jobs-per) must be one of {list(JOBS_PER)}, got {jobs_per!r}.")
    cells = [(k, s) for k in shot_list for s in seed_list]
    specs = {(label, k, s): RunSpec(_resolve(prof, {**_entry_params(common, entries[label]), "shots": k, "seed": s},
                                             {"method": entries[label].label}))
             for label in labels for k, s in cells}
    _check_distinct(labels, specs, cells[0])
    groups = {"method": [cells], "method-seed": [[(k, s) for k in shot_list] for s in seed_list],
              "run": [[c] for c in cells]}[jobs_per]
    jobs: list[Job] = []
    for group in groups:
        jobs += _cell_jobs(base, common, entries, group, specs, out_root, jobs_per)
    jobs.sort(key=_plan_rank)  # stable: data, then generation, then runs longest first, each in grid order
    for baseline, adapted in grid.failure_pairs:
        if baseline not in labels or adapted not in labels:
            continue
        for k, s in cells:
            if grid.failure_cells is not None and [k, s] not in grid.failure_cells:
                continue
            a, b = specs[(baseline, k, s)], specs[(adapted, k, s)]
            params = {**common, "shots": k, "seed": s, "baseline": baseline, "adapted": adapted}
            name = f"{base.dataset}/failure/{b.cell}/{baseline}-vs-{adapted}"
            jobs.append(Job(name, NB_FAILURE, params, out_root / base.dataset / "failure" / b.cell / f"{baseline}-vs-{adapted}" / NB_FAILURE,
                            outputs=[b.failure_summary_path(a)],
                            depends=[_run_job_name(a, jobs_per), _run_job_name(b, jobs_per)]))
    jobs.append(Job(f"{base.dataset}/report", NB_REPORT, dict(common), out_root / base.dataset / NB_REPORT,
                    outputs=base.table_paths()))
    _check_notebooks(jobs, nb_dir)
    return jobs


JOBS_PER = ("method", "method-seed", "run")


def _cost_class(cfg: RunConfig) -> int:
    """Rough cost order of a method's runs (0 = longest): augmented training, image-tower training,
    other training, none. Jobs are listed longest first."""
    if cfg.trains and cfg.augmentation.kind != "none":
        return 0
    return 1 if cfg.trains_vision else 2 if cfg.trains else 3


def _plan_rank(job: Job) -> int:
    """Where a data, generation or run job goes in the plan (dependencies always rank lower)."""
    if job.specs:
        return 2 + _cost_class(job.specs[0].config)
    return 0 if job.notebook == NB_DATA else 1


def _run_job_name(spec: RunSpec, jobs_per: str, suffix: str = "") -> str:
    """The job that makes a run: ``{dataset}/{model}-{weights}/{label}`` per method (``/s{seed}``
    per method and seed), else the run id; ``suffix``: the grid entry's ``[...]`` settings."""
    key = spec.method_key + suffix
    return {"method": key, "method-seed": f"{key}/s{spec.config.seed}"}.get(jobs_per, spec.id)


def _entry_params(common: dict[str, Any], entry: GridEntry) -> dict[str, Any]:
    """The notebook parameters of a grid entry: ``common`` with the entry's settings added to (and
    winning over) the study's overrides."""
    if not entry.settings:
        return common
    return {**common, "overrides": {**(common.get("overrides") or {}), **entry.overrides}}


def _check_distinct(labels: Sequence[str], specs: Mapping[tuple[str, int, int], RunSpec], cell: tuple[int, int]) -> None:
    """Raise :class:`ConfigError` when two grid entries make the same runs (equal settings)."""
    seen: dict[str, str] = {}
    for label in labels:
        spec = specs[(label, *cell)]
        if spec.config_hash in seen:
            raise ConfigError(f"grid.methods: {label!r} and {seen[spec.config_hash]!r} make the same runs (their "
                              "settings are equal: an entry's own settings must change its method's settings).")
        seen[spec.config_hash] = label


def _cell_jobs(base: RunSpec, common: dict[str, Any], entries: Mapping[str, GridEntry], cells: Sequence[tuple[int, int]],
               specs: Mapping[tuple[str, int, int], RunSpec], out_root: Path, jobs_per: str) -> list[Job]:
    """The data, augmentation and method jobs of a group of (K, seed) cells: the whole K x seed grid,
    one seed's K, or one cell (``jobs_per``; the notebooks get lists of K and seeds unless ``run``)."""
    labels = list(entries)
    ks, ss = sorted({k for k, _ in cells}), sorted({s for _, s in cells})
    one = jobs_per == "run"
    params = {**common, "shots": ks[0] if one else ks, "seed": ss[0] if one else ss}
    tag = {"method": "grid", "method-seed": f"s{ss[0]}"}.get(jobs_per) or specs[(labels[0], *cells[0])].cell
    ds = base.dataset
    data_job = Job(f"{ds}/data/{tag}", NB_DATA, params, out_root / ds / "data" / tag / NB_DATA,
                   outputs=[p for c in cells for p in specs[(labels[0], *c)].data_outputs()],
                   needed_by=[specs[(label, *c)] for label in labels for c in cells])
    gen_jobs: dict[str, Job] = {}
    run_jobs: list[Job] = []
    for label, entry in entries.items():
        mine = [specs[(label, *c)] for c in cells]
        first = mine[0]
        depends = [data_job.name]
        mine_params = {**_entry_params(params, entry), "method": entry.label}
        if first.label.augmented:  # one generation per generator, use and entry settings, for the first label that needs it
            gen = first.label.aug_suffix.replace("aug-", "augment-", 1) + entry.suffix
            if gen not in gen_jobs:
                gen_jobs[gen] = Job(f"{ds}/{gen}/{tag}", NB_AUG_GENERATE, mine_params,
                                    out_root / ds / gen / tag / NB_AUG_GENERATE, depends=[data_job.name])
            gen_jobs[gen].needed_by.extend(mine)
            depends.append(gen_jobs[gen].name)
        nb = first.label.notebook
        name = _run_job_name(first, jobs_per, entry.suffix)
        output = first.notebook_path(out_root, nb) if one else out_root / name / nb
        run_jobs.append(Job(name, nb, mine_params, output, specs=mine, depends=depends))
    return [data_job, *gen_jobs.values(), *run_jobs]


def _subset(name: str, chosen: Sequence[Any] | None, grid: Sequence[Any]) -> list[Any]:
    if chosen is None:
        return list(grid)
    bad = [c for c in chosen if c not in grid]
    if bad:
        raise ConfigError(f"{name} {bad} are not in the profile's grid.{name} {list(grid)}.")
    return list(chosen)


def _str(p: str | Path | None) -> str | None:
    return None if p is None else str(Path(p).expanduser().resolve())


def _resolve(prof: Profile, params: Mapping[str, Any], extra: Mapping[str, Any]) -> RunConfig:
    """Resolve a job's parameters as its notebook does (plus ``extra`` values)."""
    values = {k: v for k, v in {**params, **extra}.items() if k in RUN_FIELDS and k != "profile"}
    return resolve_config(prof, params.get("overrides"), **values)


def _check_notebooks(jobs: Sequence[Job], nb_dir: Path) -> None:
    declared: dict[str, list[str]] = {}
    for job in jobs:
        path = nb_dir / job.notebook
        if job.notebook not in declared:
            if not path.is_file():
                raise StudyError(f"notebook '{path}' is missing; make notebooks writes it from notebooks/NN_name.py.")
            declared[job.notebook] = notebook_parameters(path)
        unknown = [p for p in job.parameters if p not in declared[job.notebook]]
        if unknown:
            raise ConfigError(f"unknown parameter {unknown[0]!r} for {job.notebook}; it declares {declared[job.notebook]}.")


# ----------------------------------------------------------------------------- running
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
            else ``sequential``; :mod:`lowres_clip.executors`), an executor, or a function running
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


def made_runs(specs: Sequence[RunSpec], started: float) -> list[str]:
    """Ids of the runs among ``specs`` whose record was written at or after ``started`` (UNIX time):
    the runs this invocation made, not the ones it found finished."""
    made = set()
    for spec in specs:
        try:
            created = json.loads(spec.record_path.read_text()).get("created", 0)
        except (OSError, ValueError):
            continue
        if created >= started:
            made.add(spec.id)
    return sorted(made)


def write_log(base: RunSpec, result: StudyResult, command: str | None, executor: str | None = None,
              workers: int = 1, made: Sequence[str] = (), interrupted: bool = False) -> Path:
    """Log what one study invocation did, how long it took and where, naming the runs it made.

    Every invocation is kept as ``runs/{dataset}/study-logs/{date}.json``. ``runs/{dataset}/
    study-log.json`` is the log of the last invocation that ran or failed something: a rerun that
    only skipped finished work never replaces it (its timing would describe a study that did nothing).
    An invocation stopped by Ctrl-C is logged with ``interrupted: true`` and the runs it finished.
    """
    from .runs import machine

    now = dt.datetime.now(dt.timezone.utc)
    log = {"command": command or "run_study(...)", "date": now.isoformat(timespec="seconds"),
           "seconds": round(result.seconds, 1), "ran": len(result.ran), "skipped": len(result.skipped),
           "failed": len(result.failed), "executor": executor, "workers": workers, "machine": machine(),
           "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
           "runs": list(made), "interrupted": interrupted}
    folder = base.runs_root / base.dataset
    history = folder / STUDY_LOGS / f"{now.strftime('%Y%m%dT%H%M%S.%f')}.json"
    atomic_write_text(history, json.dumps(log, indent=1))
    latest = folder / STUDY_LOG
    if result.ran or result.failed or not latest.exists():
        atomic_write_text(latest, json.dumps(log, indent=1))
    return history


# ----------------------------------------------------------------------------- command line
def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.iterations=50), got {item!r}.")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers`` and the ``--slurm-*`` flags (defaults: the profile's ``cluster:``)."""
    g = parser.add_argument_group("executor (defaults: the profile's cluster: section; see lowres_clip.executors)")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="sequential (default), local (--workers in parallel here) or slurm (one job per notebook)")
    g.add_argument("--workers", type=int, default=None, help="local: notebooks in parallel, one GPU each (implies --executor local)")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-account", default=None)
    g.add_argument("--slurm-time", default=None, help="time limit per notebook, e.g. 04:00:00 (default)")
    g.add_argument("--slurm-gpus", type=int, default=None, help="GPUs per notebook (default 1; 0: none)")
    g.add_argument("--slurm-cpus", type=int, default=None, help="CPUs per notebook (default 8)")
    g.add_argument("--slurm-mem", default=None, help="memory per notebook, e.g. 32G (default)")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-extra qos=high --slurm-extra constraint=a100 (KEY= for a bare flag)")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="shell line run before each notebook, e.g. 'module load cuda'")
    g.add_argument("--slurm-log-dir", default=None, help="submission scripts and logs (default {runs_root}/slurm)")


def _cluster_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The executor flags given on the command line, as a ``cluster:`` mapping."""
    extra: dict[str, Any] = {}
    for item in args.slurm_extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-extra expects KEY=VALUE (e.g. qos=high), got {item!r}.")
        extra[key.strip().lstrip("-")] = value if value else True  # Slurm reads strings; KEY= is a bare flag
    slurm = {"partition": args.slurm_partition, "account": args.slurm_account, "time": args.slurm_time,
             "gpus": args.slurm_gpus, "cpus": args.slurm_cpus, "mem": args.slurm_mem, "log_dir": args.slurm_log_dir,
             "extra": extra or None, "setup": args.slurm_setup or None}
    executor = args.executor or ("local" if args.workers is not None else None)
    return {"executor": executor, "workers": args.workers, "slurm": slurm}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m lowres_clip.study``); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lowres_clip.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="profile name (paper, cpu, smoke) or YAML path")
    parser.add_argument("--dataset", required=True, help="eurosat, circuits or imagefolder:<path> (any profile)")
    parser.add_argument("--data-root", default=None, help="dataset folder (default: $LOWRES_CLIP_DATA or ../shared/data)")
    parser.add_argument("--force", action="store_true", help="rerun finished runs too")
    parser.add_argument("--runs-root", default=None)
    parser.add_argument("--figures-root", default=None)
    parser.add_argument("--cache-root", default=None)
    parser.add_argument("--notebooks-out", default=None, help="executed notebooks (default: {runs_root}/notebooks)")
    parser.add_argument("--methods", nargs="+", default=None, help="restrict the grid's methods")
    parser.add_argument("--shots", nargs="+", type=int, default=None, help="restrict the grid's shots")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="restrict the grid's seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run setting for every run, e.g. --set train.iterations=50")
    parser.add_argument("--kernel", default=KERNEL_NAME, help="Jupyter kernel name")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and list what would run or be submitted (executor, resources), run nothing")
    parser.add_argument("--jobs-per", choices=JOBS_PER, default=None,
                        help="one notebook execution per method over its K x seed grid (default of the "
                             "sequential executor), per method and seed (default of local workers), or per run "
                             "(default on Slurm)")
    parser.add_argument("--per-run", action="store_true", help="same as --jobs-per run")
    _add_executor_arguments(parser)
    args = parser.parse_args(argv)
    try:
        overrides = _parse_set(args.set)
        kwargs = dict(data_root=args.data_root, runs_root=args.runs_root, figures_root=args.figures_root,
                      cache_root=args.cache_root, notebooks_out=args.notebooks_out, overrides=overrides,
                      methods=args.methods, shots=args.shots, seeds=args.seeds,
                      jobs_per="run" if args.per_run else args.jobs_per)
        command = interrupt.rerun_command(argv)
        result = run_study(args.profile, args.dataset, force=args.force, kernel_name=args.kernel, command=command,
                           cluster=_cluster_arguments(args), dry_run=args.dry_run, **kwargs)
        if args.dry_run:
            return 0
    except interrupt.Interrupted as exc:
        print(exc.summary(interrupt.rerun_command(argv)), file=sys.stderr)
        return interrupt.EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted before the first notebook: nothing ran.", file=sys.stderr)
        return interrupt.EXIT_CODE
    except (ConfigError, StudyError, preflight.PreflightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
