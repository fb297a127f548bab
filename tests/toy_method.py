"""A toy method added exactly as a new method is added: one settings dataclass, one module, one
registry row (:func:`lowres_clip.registry.register_method`). It trains only the last ``count`` biases
of the image tower. ``tests/test_registry.py`` runs it through the study runner (notebooks
included: ``$LOWRES_CLIP_METHODS=toy_method`` registers it in their kernels too).

Imports nothing heavy at import time (the registry loads it before any torch is needed).
"""

from __future__ import annotations

from dataclasses import dataclass

from lowres_clip import registry
from lowres_clip.settings import AdaptationError

NAME = "toy_bias"


@dataclass
class ToyBiasConfig:
    """Settings of the toy method.

    Attributes:
        count: how many of the image tower's last biases are trained.
    """

    count: int = 1

    def validate(self) -> None:
        if self.count < 1:
            raise AdaptationError(f"toy_bias count must be at least 1, got {self.count}.")


def _last_vision_biases(model, count: int) -> list[str]:
    from lowres_clip.methods.bitfit import is_bias
    from lowres_clip.utils import tower_of

    names = [n for n, _ in model.named_parameters() if tower_of(n) == "vision" and is_bias(n)]
    if not names:
        raise AdaptationError("toy_bias: the model's image tower has no bias.")
    return names[-count:]


def apply_method(model, cfg: ToyBiasConfig, seed: int | None = 0) -> set[str]:
    """The parameters to train: the last ``cfg.count`` biases of the image tower."""
    return set(_last_vision_biases(model, cfg.count))


def parameter_group(model, name: str) -> str | None:
    """``toy_bias.vision`` for a trained bias of the image tower, ``None`` for any other parameter
    (asked about trained parameters only)."""
    from lowres_clip.methods.bitfit import is_bias
    from lowres_clip.utils import tower_of

    inner = name.removeprefix("model.")
    return "toy_bias.vision" if name.startswith("model.") and tower_of(inner) == "vision" and is_bias(inner) else None


METHOD = registry.Method(
    NAME, registry.NB_LORA, "toy: train the image tower's last bias", "toy_bias", ToyBiasConfig,
    trains=True, towers=lambda cfg: ("vision",), copies_model=True,
    apply=apply_method, parameter_group=parameter_group,
)
if NAME not in registry.METHODS:
    registry.register_method(METHOD)
