"""The loaded-model bundle every step uses, its error, and device resolution (no model code).

Kept apart from :mod:`lowres_clip.models` so that model builders (:mod:`lowres_clip.embedded`) and
the loader can both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .spec import weights_id


class ModelUnavailableError(RuntimeError):
    """A model or its weights cannot be loaded; the message says how to provide them."""


@dataclass
class ClipBundle:
    """A loaded CLIP model with everything needed to use it.

    Attributes:
        model: the open_clip model (``encode_image`` / ``encode_text``), in eval mode.
        preprocess_train: open_clip's training transform (random resized crop).
        preprocess_eval: open_clip's evaluation transform (resize + centre crop).
        tokenizer: callable mapping a list of strings to a token tensor.
        model_name: open_clip architecture name.
        weights: weights identifier as given (tag, file path, ``random`` or ``embedded``).
        device: the device the model lives on.
    """

    model: torch.nn.Module
    preprocess_train: Callable
    preprocess_eval: Callable
    tokenizer: Callable
    model_name: str
    weights: str
    device: torch.device

    @property
    def weights_id(self) -> str:
        """Short identifier of the weights used in run keys and cache keys."""
        return weights_id(self.weights)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return resolve_device("auto")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU; asking for CUDA without one is a :class:`ValueError`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {str(device)!r} requested but no CUDA device is available; use 'cpu' or 'auto'.")
    return torch.device(device)


