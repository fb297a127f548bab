"""LoRA settings (CLIP-LoRA: rank, alpha, dropout, which projections of which blocks of which towers)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from .base import AdaptationError, check_encoders

LORA_PARAMS = ("q", "k", "v", "o")
POSITIONS = ("all", "bottom", "mid", "up", "half-bottom", "half-up")
POSITION_ALIASES = {"top": "up", "half-top": "half-up"}
SCALINGS = ("clip-lora", "standard")
CNN_TARGETS = ("conv_pw", "conv_pwl", "conv_head")


@dataclass
class LoraConfig:
    """LoRA hyper-parameters (defaults: CLIP-LoRA).

    Attributes:
        rank: rank r of each adapter (> 0).
        alpha: LoRA alpha; the update is scaled by ``alpha / sqrt(r)`` or ``alpha / r`` (``scaling``).
        dropout: dropout on the adapter input during training (CLIP-LoRA: 0.25).
        encoders: ``"vision"``, ``"text"`` or ``"both"``.
        position: ``all | bottom | mid | up (top) | half-bottom | half-up (half-top)`` or a list of
            block indices (see the module docstring).
        params: which projections of an attention block: any of ``q``, ``k``, ``v``, ``o``.
        scaling: ``"clip-lora"`` (alpha / sqrt(r), CLIP-LoRA's code) or ``"standard"`` (alpha / r).
        cnn_targets: names of the 1x1 convolutions adapted in attention-free (CNN) towers.
    """

    rank: int = 2
    alpha: float = 1.0
    dropout: float = 0.25
    encoders: str = "both"
    position: str | Sequence[int] = "all"
    params: Sequence[str] = ("q", "k", "v")
    scaling: str = "clip-lora"
    cnn_targets: Sequence[str] = field(default_factory=lambda: list(CNN_TARGETS))

    def validate(self) -> None:
        """Raise :class:`AdaptationError` on any invalid field."""
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise AdaptationError(f"LoRA rank must be a positive integer, got {self.rank!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise AdaptationError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")
        check_encoders(self.encoders)
        bad = [p for p in self.params if p not in LORA_PARAMS]
        if bad or not self.params:
            raise AdaptationError(f"Unknown LoRA params {bad or list(self.params)}; choose from {LORA_PARAMS}.")
        if self.scaling not in SCALINGS:
            raise AdaptationError(f"Unknown LoRA scaling {self.scaling!r}; choose one of {SCALINGS}.")
        if isinstance(self.position, str):
            pos = POSITION_ALIASES.get(self.position, self.position)
            if pos not in POSITIONS:
                raise AdaptationError(
                    f"Unknown LoRA position {self.position!r}; choose one of "
                    f"{POSITIONS + tuple(POSITION_ALIASES)} or give a list of block indices."
                )

    @property
    def scale(self) -> float:
        """The factor s of the update ``s * B A``."""
        return self.alpha / (math.sqrt(self.rank) if self.scaling == "clip-lora" else self.rank)
