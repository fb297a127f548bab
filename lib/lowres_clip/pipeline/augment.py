"""The augmentation steps (notebooks ``05_augment_generate`` and, for training, ``06_augment_train``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..spec import RunSpec
from .data import prepare_data


def make_run_generator(spec: RunSpec):
    """The augmentation generator of ``cfg.augmentation`` (classic or diffusion)."""
    from ..augment import make_generator

    cfg = spec.config
    if cfg.augmentation.kind == "none":
        raise ConfigError("augmentation.kind is 'none'; set it to 'classic' or 'diffusion' to generate images.")
    options = cfg.augmentation.generator_options()  # the variant's strengths / samples, then the run's
    if cfg.augmentation.kind == "diffusion" and "device" not in options and cfg.device != "auto":
        options["device"] = cfg.device
    return make_generator(cfg.augmentation.kind, dataset=spec.dataset, **options)


def augmentation_dir(spec: RunSpec, generator=None) -> Path:
    """``augmentation.out_dir`` or one folder per generator setting under the cache root."""
    from ..augment import default_out_dir

    if spec.config.augmentation.out_dir:
        return Path(spec.config.augmentation.out_dir)
    return default_out_dir(spec.dataset, generator or make_run_generator(spec), spec.cache_root)


def augmentation_kinds(spec: RunSpec) -> list[str]:
    """Which generated kinds the run uses (``preserving``, ``breaking`` or both)."""
    use = spec.config.augmentation.use
    return ["preserving", "breaking"] if use == "both" else [use]

@dataclass
class Augmentations:
    """Generated images of a run's K-shot training set.

    Attributes:
        manifest: rows of every generated image used (both kinds joined).
        out_dir: their folder.
        generator: the generator's description (``classic (classic-v1)``, ``diffusion (<model id>)``).
        figure: the gallery (sources with their preserving / breaking variants).
        paths: the gallery files written.
    """

    manifest: Any
    out_dir: Path
    generator: str
    figure: Any = None
    paths: list[Path] = field(default_factory=list)


def generate_augmentations(spec: RunSpec, gallery: bool = True, progress: bool = True) -> Augmentations:
    """Generate (or reuse) the label-preserving / label-breaking images of the K-shot training images.

    Images already on disk are skipped (an interrupted generation resumes). With ``gallery`` the
    gallery figure is saved under :meth:`RunSpec.augmentation_figure_dir`.

    Raises:
        lowres_clip.augment.GeneratorUnavailableError: e.g. diffusion weights missing offline (use
            ``augmentation.kind = "classic"``).
    """
    from .. import plots
    from ..augment import augmentation_gallery, generate

    ds, split = prepare_data(spec)
    gen = make_run_generator(spec)
    out = augmentation_dir(spec, gen)
    manifest = None
    for kind in augmentation_kinds(spec):
        part = generate(split.train, ds.image_root, ds.classnames, out, kind, gen, progress=progress)
        manifest = part if manifest is None else manifest + part
    result = Augmentations(manifest, out, gen.describe())
    if gallery:
        result.figure = augmentation_gallery(manifest, ds.image_root)
        result.paths = plots.save_figure(result.figure, spec.augmentation_figure_dir(out.name), "gallery")
    return result


def augmentation_datasets(spec: RunSpec, transform) -> tuple[Any, Any, dict[str, Any]]:
    """``(preserving dataset | None, breaking pair dataset | None, info)`` for the training loop."""
    from ..augment import BreakingPairDataset, PreservingDataset

    aug = generate_augmentations(spec, gallery=False, progress=spec.config.train.progress)
    kinds = augmentation_kinds(spec)
    preserving = PreservingDataset(aug.manifest, transform) if "preserving" in kinds else None
    breaking = BreakingPairDataset(aug.manifest, transform) if "breaking" in kinds else None
    info = {"generator": aug.generator, "out_dir": str(aug.out_dir), "images": len(aug.manifest),
            "preserving": len(preserving) if preserving is not None else 0,
            "breaking_pairs": len(breaking) if breaking is not None else 0}
    return preserving, breaking, info




def generate_all(specs, progress: bool = True) -> list[Augmentations]:
    """:func:`generate_augmentations` for each (K, seed) cell of ``specs`` (gallery of the first)."""
    return [generate_augmentations(spec, gallery=i == 0, progress=progress) for i, spec in enumerate(specs)]
