"""How far each group of trained parameters moved from its initial values (norm of the change,
relative to the initial norm), and the threshold below which a group counts as not moved."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

MOVED_THRESHOLD = 1e-6
"""A parameter group whose change is at most this (relative to its initial norm; absolute for groups
that start at zero) counts as not moved (:meth:`TrainResult.unmoved`)."""


def parameter_movement(initial: dict[str, torch.Tensor], final: dict[str, torch.Tensor],
                       group_of: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """How far parameters moved, per group: ``{group: {"tensors", "params", "initial_norm",
    "change_norm", "relative"}}`` with the L2 norms taken over all of a group's tensors together
    (in float64) and ``relative = ||theta_final - theta_0|| / ||theta_0||`` (``None`` for a group
    whose initial norm is 0, such as LoRA's B: its ``change_norm`` says how far it moved)."""
    sums: dict[str, dict[str, float]] = {}
    for name in sorted(initial):
        t0, t1 = initial[name].detach().double().cpu(), final[name].detach().double().cpu()
        d = sums.setdefault(group_of(name), {"tensors": 0, "params": 0, "initial": 0.0, "change": 0.0})
        d["tensors"] += 1
        d["params"] += t0.numel()
        d["initial"] += float(t0.pow(2).sum())
        d["change"] += float((t1 - t0).pow(2).sum())
    out = {}
    for group in sorted(sums):
        d = sums[group]
        norm0, change = math.sqrt(d["initial"]), math.sqrt(d["change"])
        out[group] = {"tensors": int(d["tensors"]), "params": int(d["params"]), "initial_norm": norm0,
                      "change_norm": change, "relative": change / norm0 if norm0 > 0 else None}
    return out
