"""Rerun the whole study headless: the numbered notebooks over a profile's grid, with papermill.

``python -m lowres_clip.study --profile cpu --dataset eurosat [--force] [--data-root DIR] [--executor slurm ...]``

For one dataset and every (K, seed) of the profile's grid it executes, in order:

1. ``00_data`` (sample and save the K-shot split, class counts, examples);
2. ``05_augment_generate`` for each augmentation kind the grid's methods use (``lora+aug-classic``);
3. one notebook per method label: ``01_zero_shot`` (``zero_shot`` and the ``linear_probe`` baseline),
   ``02_lora`` (``lora`` and every combination containing LoRA), ``03_bitfit`` (``bitfit`` and
   ``bitfit+meta_adapter``), ``04_meta_adapter``, ``06_augment_train`` (labels with ``+aug-...``);
4. ``07_failure_analysis`` for each of the grid's ``failure_pairs``;

then ``08_report_tables`` once, which aggregates every finished run of the dataset over seeds
(mean ± std) into ``figures/{dataset}/tables/`` as CSV, Markdown and LaTeX.

Executed notebooks go to ``runs/notebooks/...`` (git-ignored). A run whose record exists
(:func:`lowres_clip.runs.is_finished`) is skipped unless ``--force``; so are ``00_data`` and
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

Kernel: notebooks run on the Jupyter kernel ``python3`` (``--kernel``). Started from this
interpreter, jupyter_client maps the ``python3`` kernel spec to ``sys.executable``, i.e. the
project's virtualenv. If no such kernel spec exists, :func:`ensure_kernel` installs the
virtualenv's own (``python -m ipykernel install --sys-prefix``).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import yaml

from . import pipeline
from .config import PROFILES_DIR, ConfigError, Profile, RunConfig, load_profile, resolve_config, split_method_label
from .runs import is_finished

if TYPE_CHECKING:
    from . import executors

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NB_DATA = "00_data.ipynb"
NB_ZERO_SHOT = "01_zero_shot.ipynb"
NB_LORA = "02_lora.ipynb"
NB_BITFIT = "03_bitfit.ipynb"
NB_META = "04_meta_adapter.ipynb"
NB_AUG_GENERATE = "05_augment_generate.ipynb"
NB_AUG_TRAIN = "06_augment_train.ipynb"
NB_FAILURE = "07_failure_analysis.ipynb"
NB_REPORT = "08_report_tables.ipynb"
NOTEBOOKS = (NB_DATA, NB_ZERO_SHOT, NB_LORA, NB_BITFIT, NB_META, NB_AUG_GENERATE, NB_AUG_TRAIN, NB_FAILURE, NB_REPORT)
KERNEL_NAME = "python3"
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


class StudyError(ValueError):
    """The study cannot start (bad notebook folder, missing kernel); the message says what to do."""


def notebook_for(label: str) -> str:
    """The notebook that runs a method label (see the module docstring)."""
    method, aug = split_method_label(label)
    if aug:
        return NB_AUG_TRAIN
    first = method.split("+")[0]
    return {"zero_shot": NB_ZERO_SHOT, "linear_probe": NB_ZERO_SHOT, "lora": NB_LORA,
            "bitfit": NB_BITFIT, "meta_adapter": NB_META}[first]


@dataclass
class Job:
    """One notebook execution of the study.

    Attributes:
        name: short label for progress and the report (``eurosat/lora/k16-s1``).
        notebook: notebook file name in the notebooks folder.
        parameters: papermill parameters.
        output: where the executed notebook is written.
        run_key: key of the run the notebook makes (``None`` for helper notebooks).
        outputs: files whose presence means a helper notebook's work is done.
        depends: names of jobs that must succeed first.
        needed_by: run keys that need this helper (a helper is skipped when all are finished).
    """

    name: str
    notebook: str
    parameters: dict[str, Any]
    output: Path
    run_key: str | None = None
    outputs: list[Path] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)
    needed_by: list[str] = field(default_factory=list)


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
) -> list[Job]:
    """Every notebook execution of the study for ``dataset``, validated (nothing runs).

    ``methods`` / ``shots`` / ``seeds`` restrict the profile's grid (they must be part of it).

    Raises:
        ConfigError: unknown profile, profile key, method, override or notebook parameter (named).
        StudyError: a notebook is missing.
    """
    prof = load_profile(profile)
    grid = prof.grid
    if dataset not in grid.datasets:
        raise ConfigError(f"dataset {dataset!r} is not in profile {prof.name!r}'s grid.datasets {grid.datasets}.")
    labels = _subset("methods", [canonical_label(m) for m in methods] if methods else None, grid.methods)
    shot_list = _subset("shots", shots, grid.shots)
    seed_list = _subset("seeds", seeds, grid.seeds)
    roots = {"data_root": _str(data_root), "runs_root": _str(runs_root), "figures_root": _str(figures_root),
             "cache_root": _str(cache_root)}
    common = _common(prof, dataset, roots, overrides or {})
    nb_dir = Path(notebooks_dir)
    base_cfg = _resolve(prof, common, {})
    out_root = Path(notebooks_out) if notebooks_out else pipeline.runs_root(base_cfg) / "notebooks"
    ds_name = base_cfg.run_key.split("/")[0]
    jobs: list[Job] = []
    for k in shot_list:
        for s in seed_list:
            cell = {**common, "shots": k, "seed": s}
            cell_cfg = _resolve(prof, cell, {})
            tag = f"k{k}-s{s}"
            cfgs = {label: _resolve(prof, cell, {"method": label}) for label in labels}
            run_jobs: list[Job] = []
            data_job = Job(f"{ds_name}/data/{tag}", NB_DATA, cell, out_root / ds_name / "data" / tag / NB_DATA,
                           outputs=pipeline.data_outputs(cell_cfg), needed_by=[c.run_key for c in cfgs.values()])
            gen_jobs: dict[str, Job] = {}
            for label, cfg in cfgs.items():
                _, aug = split_method_label(label)
                depends = [data_job.name]
                if aug:  # one generation per generator and use, for the first run that needs it
                    gen = f"augment-{aug['kind']}" + ("" if aug["use"] == "both" else f"-{aug['use']}")
                    if gen not in gen_jobs:
                        gen_jobs[gen] = Job(f"{ds_name}/{gen}/{tag}", NB_AUG_GENERATE, {**cell, "method": label},
                                            out_root / ds_name / gen / tag / NB_AUG_GENERATE, depends=[data_job.name])
                    gen_jobs[gen].needed_by.append(cfg.run_key)
                    depends.append(gen_jobs[gen].name)
                nb = notebook_for(label)
                run_jobs.append(Job(cfg.run_key, nb, {**cell, "method": label}, out_root / cfg.run_key / nb,
                                    run_key=cfg.run_key, depends=depends))
            jobs.append(data_job)
            jobs.extend(gen_jobs.values())
            jobs.extend(run_jobs)
            for baseline, adapted in grid.failure_pairs:
                if baseline not in cfgs or adapted not in cfgs:
                    continue
                params = {**cell, "baseline": baseline, "adapted": adapted}
                name = f"{ds_name}/failure/{tag}/{baseline}-vs-{adapted}"
                jobs.append(Job(name, NB_FAILURE, params, out_root / ds_name / "failure" / tag / f"{baseline}-vs-{adapted}" / NB_FAILURE,
                                outputs=pipeline.failure_outputs(cfgs[baseline], cfgs[adapted]),
                                depends=[cfgs[baseline].run_key, cfgs[adapted].run_key]))
    jobs.append(Job(f"{ds_name}/report", NB_REPORT, dict(common), out_root / ds_name / NB_REPORT))
    _check_notebooks(jobs, nb_dir)
    return jobs


def canonical_label(label: str) -> str:
    """Canonical form of a method label (``bitfit+lora`` -> ``lora+bitfit``)."""
    from .config import AugmentConfig, method_label

    method, aug = split_method_label(label)
    return method_label(method, AugmentConfig(**aug) if aug else None)


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
                raise StudyError(f"notebook '{path}' is missing; notebooks/_build.py writes the numbered notebooks.")
            declared[job.notebook] = notebook_parameters(path)
        unknown = [p for p in job.parameters if p not in declared[job.notebook]]
        if unknown:
            raise ConfigError(f"unknown parameter {unknown[0]!r} for {job.notebook}; it declares {declared[job.notebook]}.")


# ----------------------------------------------------------------------------- running
def execute(job: Job, kernel_name: str = KERNEL_NAME, notebooks_dir: str | Path = NOTEBOOKS_DIR) -> None:
    """Execute one job's notebook with papermill (raises on a failing cell)."""
    import papermill

    job.output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(Path(notebooks_dir) / job.notebook), str(job.output), parameters=job.parameters,
        kernel_name=kernel_name, progress_bar=False, cwd=str(notebooks_dir),
    )


def _error_message(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    if ename:  # papermill.PapermillExecutionError
        return f"{ename}: {str(getattr(exc, 'evalue', '')).strip()[:500]}"
    return f"{type(exc).__name__}: {str(exc).strip()[:500]}"


def _should_skip(job: Job, force: bool, runs_root: Path, ran: set[str]) -> bool:
    """Whether a job has nothing to do (see the module docstring)."""
    if force or job.notebook == NB_REPORT:
        return False
    if job.run_key is not None:
        return is_finished(job.run_key, runs_root)
    if any(not is_finished(k, runs_root) for k in job.needed_by):
        return False  # a run still needs this helper's output
    if any(d in ran for d in job.depends):
        return False  # its inputs changed in this study run
    return all(p.exists() for p in job.outputs)


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
        cluster: executor settings on top of the profile's ``cluster:`` (e.g. ``{"workers": 2,
            "slurm": {"partition": "gpu"}}``; :class:`lowres_clip.cluster.ClusterConfig`).
        dry_run: print what would run or be submitted (executor, resources, skips), run nothing.
    """
    from . import executors
    from .cluster import merge_cluster

    t0 = time.time()
    jobs = plan_study(profile, dataset, data_root, runs_root, figures_root, cache_root, notebooks_out,
                      overrides, methods, shots, seeds, notebooks_dir)
    prof = load_profile(profile)
    base = _resolve(prof, jobs[-1].parameters, {})
    root = pipeline.runs_root(base)
    runner = executors.make_executor(executor, merge_cluster(prof.cluster, cluster), root, kernel_name, notebooks_dir)
    should_skip = lambda job, ran: _should_skip(job, force, root, ran)  # noqa: E731
    if dry_run:
        print(runner.plan_text(jobs, should_skip))
        return StudyResult(seconds=time.time() - t0)
    if runner.checks_device_here:  # e.g. a CUDA profile on a machine without a GPU fails here, not per run
        pipeline.resolve_device(base)
    if executor is None or isinstance(executor, str):
        ensure_kernel(kernel_name)
    result = runner.run(jobs, should_skip, progress)
    result.tables = [p for p in pipeline.table_paths(base) if p.exists()]
    result.seconds = time.time() - t0
    return result


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
    from .cluster import EXECUTORS

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
    parser.add_argument("--dataset", required=True, help="a dataset of the profile's grid (eurosat, circuits)")
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
    _add_executor_arguments(parser)
    args = parser.parse_args(argv)
    try:
        overrides = _parse_set(args.set)
        kwargs = dict(data_root=args.data_root, runs_root=args.runs_root, figures_root=args.figures_root,
                      cache_root=args.cache_root, notebooks_out=args.notebooks_out, overrides=overrides,
                      methods=args.methods, shots=args.shots, seeds=args.seeds)
        result = run_study(args.profile, args.dataset, force=args.force, kernel_name=args.kernel,
                           cluster=_cluster_arguments(args), dry_run=args.dry_run, **kwargs)
        if args.dry_run:
            return 0
    except (ConfigError, StudyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
