"""The study's plan: every notebook execution of a profile's grid for one dataset, validated, nothing
run (:func:`plan_study`; ``jobs_per`` cuts the grid, runs listed longest first).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import preflight, registry
from ..config import PROFILES_DIR, ConfigError, GridEntry, Profile, RunConfig, load_profile, parse_entry, resolve_config
from ..registry import NB_AUG_GENERATE, NB_DATA, NB_FAILURE, NB_REPORT
from ..jobs import NOTEBOOKS_DIR, Job, StudyError
from ..spec import RunSpec
from .kernel import notebook_parameters

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def notebook_for(label: str) -> str:
    """The notebook that runs a method label or grid entry (see the module docstring)."""
    return registry.parse_label(parse_entry(label).label).notebook


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
