"""One interface for augmentation generators and their registry by name.

A *generator* (:class:`ImageGenerator`: ``classic`` or ``diffusion``) turns a source image into
``num_samples`` new images at a given *strength*. Low strength gives **label-preserving** images, high
strength **label-breaking** ones (see :mod:`.datasets`). :func:`make_generator` builds one by name;
:func:`derive_seed` gives every output image its own stable seed."""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from ..models import ModelUnavailableError
from ..settings import AugmentError, GeneratorConfig

Kind = Literal["preserving", "breaking"]


class GeneratorUnavailableError(AugmentError, ModelUnavailableError):
    """A generator's model (e.g. Stable Diffusion weights) cannot be loaded."""


def derive_seed(base_seed: int, source_path: str, kind: str, strength: float, sample_index: int) -> int:
    """A stable 31-bit seed for one output image (independent of run order and subset)."""
    key = f"{base_seed}|{source_path}|{kind}|{strength:.4f}|{sample_index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class SourceImage:
    """A source image handed to a generator: dataset-relative ``path``, absolute ``file``, label."""

    path: str
    file: Path
    label: int
    classname: str


GENERATORS: dict[str, type["ImageGenerator"]] = {}  # name -> class; filled as generator modules load


class ImageGenerator(abc.ABC):
    """The interface every generator implements.

    Subclasses set :attr:`name`, hold a :class:`GeneratorConfig` in :attr:`config` and implement
    :meth:`make`. :func:`generate` does everything else (paths, seeds, skipping, manifest).
    """

    name: ClassVar[str] = ""
    config: GeneratorConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            GENERATORS[cls.name] = cls

    @classmethod
    def from_options(cls, dataset: str | None = None, **config: Any) -> "ImageGenerator":
        """A generator from its config fields (``dataset`` lets a generator pick per-dataset defaults)."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Identifier of the model / transform version that makes the images."""

    def prompt(self, classname: str) -> str:
        """Text prompt for a class (empty for generators without text conditioning)."""
        return ""

    def settings(self) -> dict[str, Any]:
        """Everything that identifies the images this generator makes (stored in ``generator.json``)."""
        return {"generator": self.name, "model_id": self.model_id, **self.config.settings()}

    def fingerprint(self) -> str:
        """A short hash of :meth:`settings`."""
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        """Human-readable name used in figure titles, e.g. ``diffusion (CompVis/stable-diffusion-v1-4)``."""
        return f"{self.name} ({self.model_id})"

    def prepare(self, sources: Sequence[SourceImage]) -> None:
        """Called once per :func:`generate` call with all its source images (default: nothing)."""

    def availability_problem(self, probe: bool = True) -> str | None:
        """One line saying what this generator needs to make images and does not find on this machine,
        or ``None`` (loads and downloads nothing; ``probe``: it may ask the network whether a missing
        model can be downloaded now). The preflight asks this before any notebook runs. Default:
        nothing is needed."""
        return None

    @abc.abstractmethod
    def make(self, source: SourceImage, image, kind: str, strength: float, seeds: Sequence[int]) -> list:
        """Return one PIL image per seed, made from ``image`` (the source, RGB PIL) at ``strength``."""


def make_generator(name: str, dataset: str | None = None, **config: Any) -> ImageGenerator:
    """Build a generator by name: ``"classic"`` or ``"diffusion"``.

    Args:
        name: generator name.
        dataset: dataset name; picks the diffusion prompt template (ignored by ``classic``).
        **config: fields of :class:`~lowres_clip.augment.classic.ClassicConfig` or
            :class:`~lowres_clip.augment.diffusion.DiffusionConfig`.
    """
    if name not in GENERATORS:
        raise AugmentError(f"Unknown generator {name!r}; choose one of {sorted(GENERATORS)}.")
    return GENERATORS[name].from_options(dataset, **config)
