"""CLIP-LoRA's training augmentation at a bundle's input size and normalisation."""

from __future__ import annotations

from typing import Callable

from ..utils import AdaptationError


def _find_normalize(transform: Callable):
    from torchvision import transforms as T

    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, T.Normalize):
            return t
    return None


def train_transform(bundle, scale: tuple[float, float] = (0.08, 1.0)) -> Callable:
    """CLIP-LoRA's training augmentation at the bundle's input size and normalisation:
    ``RandomResizedCrop(size, scale, bicubic)``, horizontal flip, to tensor, normalise.

    ``scale``: the crop's area range; a run's is ``cfg.effective_train().crop_scale`` (CLIP-LoRA
    0.08-1; the Meta-Adapter reference 0.5-1)."""
    from torchvision import transforms as T

    norm = _find_normalize(bundle.preprocess_eval)
    if norm is None:
        raise AdaptationError("Cannot find the Normalize step in the bundle's evaluation transform.")
    return T.Compose([
        T.RandomResizedCrop(bundle.image_size, scale=tuple(scale), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(norm.mean, norm.std),
    ])
