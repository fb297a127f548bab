"""Rerun the whole study headless: the numbered notebooks over a profile's grid, with papermill.

``python -m lowres_clip.study --profile cpu --dataset eurosat [--force] [--data-root DIR]``

For one dataset and every (K, seed) of the profile's grid it executes, in order:

1. ``00_data`` (sample and save the K-shot split, class counts, examples);
2. ``05_augment_generate`` for each augmentation kind the grid's methods use (``lora+aug-classic``);
3. one notebook per method label: ``01_zero_shot`` (``zero_shot`` and the ``linear_probe`` baseline),
   ``02_lora`` (``lora`` and every combination containing LoRA), ``03_bitfit`` (``bitfit`` and
   ``bitfit+meta_adapter``), ``04_meta_adapter``, ``06_augment_train`` (labels with ``+aug-...``);
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
from typing import Any, Callable, Mapping, Sequence

import yaml
from tqdm.auto import tqdm

from . import interrupt, preflight
from . import registry
from .config import PROFILES_DIR, ConfigError, Profile, RunConfig, load_profile, resolve_config
from .spec import RunSpec

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
    return registry.parse_label(label).notebook


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
    """

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    executed: dict[str, Path] = field(default_factory=dict)
    tables: list[Path] = field(default_factory=list)
    seconds: float = 0.0

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
    per_method: bool = True,
) -> list[Job]:
    """Every notebook execution of the study for ``dataset``, validated (nothing runs).

    ``methods`` / ``shots`` / ``seeds`` restrict the profile's grid (they must be part of it).
    ``per_method``: one notebook execution per method over its slice of the grid (every K and
    seed; one kernel start instead of one per run), and one data / augmentation notebook for the
    whole grid; else one notebook execution per run (each (K, seed) cell on its own).

    Raises:
        ConfigError: unknown profile, profile key, method, override or notebook parameter (named).
        StudyError: a notebook is missing.
    """
    overrides, shots, seeds, methods = preflight.grid_overrides(overrides, shots, seeds, methods)
    prof = load_profile(profile)
    grid = prof.grid
    preflight.check_dataset_name(dataset)  # grid.datasets are defaults: any dataset runs with the profile
    labels = _subset("methods", [canonical_label(m) for m in methods] if methods else None, grid.methods)
    shot_list = _subset("shots", shots, grid.shots)
    seed_list = _subset("seeds", seeds, grid.seeds)
    roots = {"data_root": _str(data_root), "runs_root": _str(runs_root), "figures_root": _str(figures_root),
             "cache_root": _str(cache_root)}
    common = _common(prof, dataset, roots, overrides or {})
    nb_dir = Path(notebooks_dir)
    base = RunSpec(_resolve(prof, common, {}))
    out_root = Path(notebooks_out) if notebooks_out else base.runs_root / "notebooks"
    cells = [(k, s) for k in shot_list for s in seed_list]
    specs = {(label, k, s): RunSpec(_resolve(prof, {**common, "shots": k, "seed": s}, {"method": label}))
             for label in labels for k, s in cells}
    groups = [cells] if per_method else [[c] for c in cells]
    jobs: list[Job] = []
    for group in groups:
        jobs += _cell_jobs(base, common, labels, group, specs, out_root, per_method)
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
                            depends=[_run_job_name(a, per_method), _run_job_name(b, per_method)]))
    jobs.append(Job(f"{base.dataset}/report", NB_REPORT, dict(common), out_root / base.dataset / NB_REPORT,
                    outputs=base.table_paths()))
    _check_notebooks(jobs, nb_dir)
    return jobs


def _run_job_name(spec: RunSpec, per_method: bool) -> str:
    """The job that makes a run: ``{dataset}/{model}-{weights}/{label}`` per method, else the run id."""
    return f"{spec.dataset}/{spec.model_weights}/{spec.label}" if per_method else spec.id


def _cell_jobs(base: RunSpec, common: dict[str, Any], labels: Sequence[str], cells: Sequence[tuple[int, int]],
               specs: Mapping[tuple[str, int, int], RunSpec], out_root: Path, per_method: bool) -> list[Job]:
    """The data, augmentation and method jobs of a group of (K, seed) cells: the whole K x seed grid
    (``per_method``: the notebooks get lists of K and seeds) or one cell."""
    ks, ss = sorted({k for k, _ in cells}), sorted({s for _, s in cells})
    params = {**common, "shots": ks if per_method else ks[0], "seed": ss if per_method else ss[0]}
    tag = "grid" if per_method else specs[(labels[0], *cells[0])].cell
    ds = base.dataset
    data_job = Job(f"{ds}/data/{tag}", NB_DATA, params, out_root / ds / "data" / tag / NB_DATA,
                   outputs=[p for c in cells for p in specs[(labels[0], *c)].data_outputs()],
                   needed_by=[specs[(label, *c)] for label in labels for c in cells])
    gen_jobs: dict[str, Job] = {}
    run_jobs: list[Job] = []
    for label in labels:
        mine = [specs[(label, *c)] for c in cells]
        first = mine[0]
        depends = [data_job.name]
        if first.label.augmented:  # one generation per generator and use, for the first label that needs it
            gen = first.label.aug_suffix.replace("aug-", "augment-", 1)
            if gen not in gen_jobs:
                gen_jobs[gen] = Job(f"{ds}/{gen}/{tag}", NB_AUG_GENERATE, {**params, "method": label},
                                    out_root / ds / gen / tag / NB_AUG_GENERATE, depends=[data_job.name])
            gen_jobs[gen].needed_by.extend(mine)
            depends.append(gen_jobs[gen].name)
        nb = first.label.notebook
        name = _run_job_name(first, per_method)
        output = (out_root / name / nb) if per_method else first.notebook_path(out_root, nb)
        run_jobs.append(Job(name, nb, {**params, "method": label}, output, specs=mine, depends=depends))
    return [data_job, *gen_jobs.values(), *run_jobs]


def canonical_label(label: str) -> str:
    """Canonical form of a method label (``bitfit+lora`` -> ``lora+bitfit``)."""
    return registry.canonical(label)


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


def _should_skip(job: Job, force: bool, ran: set[str]) -> bool:
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
    executor: Callable[[Job], None] | None = None,
    progress: bool = True,
    command: str | None = None,
    per_method: bool = True,
    check: bool = True,
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
        executor: runs one job (default: papermill via :func:`execute`).
        progress: show a progress bar.
        command: the command line, for the study log.
        per_method: one notebook execution per method over the grid (see :func:`plan_study`).
        check: run the preflight (:func:`lowres_clip.preflight.require`) before the first notebook.
    """
    t0 = time.time()
    jobs = plan_study(profile, dataset, data_root, runs_root, figures_root, cache_root, notebooks_out,
                      overrides, methods, shots, seeds, notebooks_dir, per_method)
    base = RunSpec(_resolve(load_profile(profile), jobs[-1].parameters, {}))
    if check:  # data, images, model, weights, device: one line per problem before any kernel starts
        configs = {spec.config_hash: spec.config for job in jobs for spec in job.specs}
        preflight.require([base.config, *configs.values()], progress=progress)
    if executor is None:
        ensure_kernel(kernel_name)
        executor = lambda job: execute(job, kernel_name, notebooks_dir)  # noqa: E731
    result = StudyResult()
    status: dict[str, str] = {}
    ran: set[str] = set()
    bar = tqdm(jobs, desc=f"study {dataset}", unit="notebook", disable=not progress)
    with interrupt.guard([j.name for j in jobs], result.ran, result.skipped, result.failed, bar.close) as guard:
        for job in bar:
            guard.current = job.name
            bar.set_postfix_str(job.name[-60:])
            broken = [d for d in job.depends if status.get(d) == "failed"]
            if broken:
                status[job.name] = "failed"
                result.failed[job.name] = f"not run: {broken[0]} failed"
                continue
            if _should_skip(job, force, ran):
                status[job.name] = "skipped"
                result.skipped.append(job.name)
                continue
            if force:  # notebooks reuse runs finished with the same settings: forget the selected ones first
                for spec in job.specs:
                    spec.record_path.unlink(missing_ok=True)
            try:
                executor(job)
            except Exception as exc:  # a failing notebook must not stop the others
                interrupt.raise_if_interrupt(exc)  # ... but Ctrl-C in its kernel stops the study
                status[job.name] = "failed"
                result.failed[job.name] = _error_message(exc) + f" (see {job.output})"
            else:
                status[job.name] = "ran"
                ran.add(job.name)
                result.ran.append(job.name)
            if job.output.exists():
                result.executed[job.name] = job.output
    bar.close()
    result.tables = [p for p in base.table_paths() if p.exists()]
    result.seconds = time.time() - t0
    write_log(base, result, command)
    return result


def write_log(base: RunSpec, result: StudyResult, command: str | None) -> Path:
    """Write ``runs/{dataset}/study-log.json``: what the last study run did, how long it took, where."""
    import datetime as dt
    import json

    from .atomic import atomic_write_text
    from .runs import machine

    path = base.runs_root / base.dataset / "study-log.json"
    log = {"command": command or "run_study(...)", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "seconds": round(result.seconds, 1), "ran": len(result.ran), "skipped": len(result.skipped),
           "failed": len(result.failed), "machine": machine()}
    atomic_write_text(path, json.dumps(log, indent=1))
    return path


# ----------------------------------------------------------------------------- command line
def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.iterations=50), got {item!r}.")
        out[key.strip()] = yaml.safe_load(value)
    return out


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
    parser.add_argument("--dry-run", action="store_true", help="validate and list the notebooks, run nothing")
    parser.add_argument("--per-run", action="store_true",
                        help="one notebook execution per run (default: one per method over its K x seed grid)")
    args = parser.parse_args(argv)
    try:
        overrides = _parse_set(args.set)
        kwargs = dict(data_root=args.data_root, runs_root=args.runs_root, figures_root=args.figures_root,
                      cache_root=args.cache_root, notebooks_out=args.notebooks_out, overrides=overrides,
                      methods=args.methods, shots=args.shots, seeds=args.seeds, per_method=not args.per_run)
        if args.dry_run:
            jobs = plan_study(args.profile, args.dataset, **kwargs)
            for job in jobs:
                done = bool(job.specs) and all(spec.is_finished() for spec in job.specs) and not args.force
                state = f"{len(job.specs)} runs, finished (skip)" if done else (f"{len(job.specs)} runs" if job.specs else "")
                print(f"{job.notebook:28s} {job.name}  {state}".rstrip())
            print(f"{len(jobs)} notebook executions planned; finished runs are skipped unless --force")
            return 0
        command = "python -m lowres_clip.study " + " ".join(sys.argv[1:] if argv is None else argv)
        result = run_study(args.profile, args.dataset, force=args.force, kernel_name=args.kernel, command=command,
                           **kwargs)
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
