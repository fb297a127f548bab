"""Label-preserving and label-breaking augmentation (Zhang, Doughty, Snoek, CVPR 2024).

* :func:`generate` with a generator (``classic`` or ``diffusion``) writes images + a manifest;
* :class:`PreservingDataset` (``(img, label, idx)``) joins the supervised loss, as LRV does
  (:class:`PreservingReplacement`: per-image replacement, weighted mean) or as the seed report does
  (:class:`PreservingExtension`: extra training items);
* :class:`BreakingPairDataset` (``(view1, view2, source_idx)``, pairing ``augmented_copy`` as LRV or
  ``two_breaking`` as the seed report) feeds :class:`BreakingLoss`;
* which protocol a run follows is ``augmentation.variant`` (``lrv`` | ``seed``,
  :data:`lowres_clip.settings.AUGMENT_PROTOCOLS`);
* :func:`augmentation_gallery` shows sources with their variants.

Typical use::

    gen = make_generator("classic")                      # or make_generator("diffusion", dataset="eurosat")
    out = default_out_dir("eurosat", gen)                 # one folder per generator configuration
    pres = generate(split.train, ds.image_root, ds.classnames, out, "preserving", gen)
    brk = generate(split.train, ds.image_root, ds.classnames, out, "breaking", gen)
    fig = augmentation_gallery(pres + brk)

Modules: :mod:`.interface` (the generator base class and the registry of generators by name),
:mod:`.manifest` (``manifest.jsonl``, ``generator.json``, the mixing guard, folder names),
:mod:`.generate` (the generation loop), :mod:`.datasets` (the torch datasets over generated images),
:mod:`.classic`, :mod:`.diffusion`, :mod:`.breaking_loss`, :mod:`.gallery`.
"""

from ..settings import KINDS, AugmentError, GeneratorConfig
from .datasets import BreakingPairDataset, PreservingDataset, PreservingExtension, PreservingReplacement
from .generate import generate
from .interface import GeneratorUnavailableError, ImageGenerator, SourceImage, derive_seed, make_generator
from .manifest import (
    Manifest,
    ManifestMismatchError,
    ManifestRow,
    default_out_dir,
    settings_folder_name,
)
from .breaking_loss import BreakingLoss, MemoryBank
from .classic import ClassicConfig, ClassicGenerator
from .diffusion import DIFFUSION_PROMPTS, DiffusionConfig, DiffusionGenerator
from .gallery import augmentation_gallery

__all__ = [
    "KINDS",
    "AugmentError",
    "BreakingLoss",
    "BreakingPairDataset",
    "ClassicConfig",
    "ClassicGenerator",
    "DIFFUSION_PROMPTS",
    "DiffusionConfig",
    "DiffusionGenerator",
    "GeneratorConfig",
    "GeneratorUnavailableError",
    "ImageGenerator",
    "Manifest",
    "ManifestMismatchError",
    "ManifestRow",
    "MemoryBank",
    "PreservingDataset",
    "PreservingExtension",
    "PreservingReplacement",
    "SourceImage",
    "augmentation_gallery",
    "default_out_dir",
    "derive_seed",
    "generate",
    "make_generator",
    "settings_folder_name",
]

