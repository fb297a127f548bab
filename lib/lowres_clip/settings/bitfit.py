"""BitFit settings (which bias groups of which towers train)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .base import AdaptationError, check_encoders

BIAS_GROUPS = ("attention", "mlp", "norm", "other")


@dataclass
class BitFitConfig:
    """Which biases BitFit trains.

    Attributes:
        encoders: ``"vision"``, ``"text"`` or ``"both"``.
        groups: ``"all"`` or a subset of ``attention``, ``mlp``, ``norm``, ``other``.
    """

    encoders: str = "both"
    groups: str | Sequence[str] = "all"

    def validate(self) -> None:
        """Raise :class:`AdaptationError` for unknown encoders or groups."""
        self.group_set()

    def group_set(self) -> tuple[str, ...]:
        """The selected groups; raises :class:`AdaptationError` for unknown names."""
        check_encoders(self.encoders)
        if isinstance(self.groups, str):
            groups = BIAS_GROUPS if self.groups == "all" else (self.groups,)
        else:
            groups = tuple(self.groups)
        bad = [g for g in groups if g not in BIAS_GROUPS]
        if bad or not groups:
            raise AdaptationError(f"Unknown BitFit groups {bad or groups}; use 'all' or a subset of {BIAS_GROUPS}.")
        return groups
