"""The ``classic`` generator: image transforms instead of a diffusion model (no weights needed).

It mirrors the diffusion generator's two regimes with the same strengths:

* **label-preserving** (strength ``s``, default 0.3): a mild random resized crop keeping
  ``1 - s/2 .. 1`` of the area, a horizontal flip with probability 0.5 and colour jitter of
  ``s/2`` (hue ``s/10``);
* **label-breaking** (strengths default 0.6, 0.7, 0.8): a heavy crop keeping only
  ``(1 - s)/2 .. 1 - s`` of the area, patch shuffling on a ``(2 + int(4 s))`` square grid and a blend
  with another source image (preferably of another class) with weight ``s/2``.

Every output is seeded by its own seed (torch's RNG is forked, so the global RNG is untouched).
Rows and figure titles say ``generator="classic"`` and ``model_id="classic-v<version>"``; bump
:data:`CLASSIC_VERSION` whenever the transforms change, so old folders are not mixed with new ones.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from ..settings import ClassicConfig, check_kind
from .interface import ImageGenerator, SourceImage

CLASSIC_VERSION = 1



def preserving_transform(size: tuple[int, int], strength: float) -> v2.Compose:
    """Mild, label-preserving transform of intensity ``strength``; ``size`` is (height, width)."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(1.0 - strength / 2, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.ColorJitter(brightness=strength / 2, contrast=strength / 2, saturation=strength / 2, hue=strength / 10),
    ])


def heavy_crop(size: tuple[int, int], strength: float) -> v2.RandomResizedCrop:
    """Crop keeping only ``(1 - strength)/2 .. 1 - strength`` of the area, resized to ``size``."""
    hi = max(1.0 - strength, 0.02)
    return v2.RandomResizedCrop(size, scale=(hi / 2, hi), ratio=(0.75, 1.333), antialias=True)


def shuffle_patches(image: Image.Image, grid: int, rng: np.random.Generator) -> Image.Image:
    """Cut ``image`` into a ``grid x grid`` mosaic, permute the tiles, return it at the input size."""
    w, h = image.size
    ph, pw = max(h // grid, 1), max(w // grid, 1)
    arr = np.asarray(image.resize((pw * grid, ph * grid), Image.BILINEAR))
    tiles = arr.reshape(grid, ph, grid, pw, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, ph, pw, 3)
    tiles = tiles[rng.permutation(grid * grid)]
    out = tiles.reshape(grid, grid, ph, pw, 3).transpose(0, 2, 1, 3, 4).reshape(grid * ph, grid * pw, 3)
    return Image.fromarray(np.ascontiguousarray(out)).resize((w, h), Image.BILINEAR)


def _seeded(transform, image: Image.Image, seed: int) -> Image.Image:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


class ClassicGenerator(ImageGenerator):
    """Label-preserving / label-breaking images from classic transforms (module docstring).

    Args:
        config: a :class:`ClassicConfig` (defaults as the diffusion generator: 5 samples, seed 42,
            preserving strength 0.3, breaking strengths 0.6, 0.7, 0.8).
    """

    name = "classic"

    @classmethod
    def from_options(cls, dataset: str | None = None, **config: Any) -> "ClassicGenerator":
        return cls(ClassicConfig(**config))

    def __init__(self, config: ClassicConfig | None = None):
        self.config = config or ClassicConfig()
        self._pool: list[SourceImage] = []

    @property
    def model_id(self) -> str:
        return f"classic-v{CLASSIC_VERSION}"

    def prepare(self, sources: Sequence[SourceImage]) -> None:
        """Remember the sources of this run: label-breaking outputs blend with one of them."""
        self._pool = list(sources)

    def _partner(self, source: SourceImage, rng: np.random.Generator) -> Image.Image:
        others = [s for s in self._pool if s.label != source.label] or [s for s in self._pool if s.path != source.path]
        if not others:  # a single source image: blend with its own rotated copy
            with Image.open(source.file) as im:
                return im.convert("RGB").rotate(90)
        with Image.open(others[int(rng.integers(len(others)))].file) as im:
            return im.convert("RGB")

    def make(self, source: SourceImage, image: Image.Image, kind: str, strength: float, seeds: Sequence[int]) -> list[Image.Image]:
        check_kind(kind)
        side = self.config.image_size
        size = (side, side) if side else (image.height, image.width)
        out = []
        for seed in seeds:
            if kind == "preserving":
                out.append(_seeded(preserving_transform(size, strength), image, seed))
                continue
            rng = np.random.default_rng(seed)
            img = _seeded(heavy_crop(size, strength), image, seed)
            img = shuffle_patches(img, 2 + int(4 * strength), rng)
            partner = self._partner(source, rng).resize(img.size, Image.BILINEAR)
            out.append(Image.blend(img, partner, strength / 2))
        return out
