"""The task loss: cross-entropy with optional class-balanced weights (Cui et al., 2019) and logit
adjustment (Menon et al., 2021), weighted by sample for LRV's replaced images."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def class_balanced_weights(counts: torch.Tensor, beta: float = 0.999) -> torch.Tensor:
    """Cui et al.'s class-balanced weights ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to the
    number of present classes (absent classes get 0)."""
    counts = counts.double()
    present = counts > 0
    w = torch.zeros_like(counts)
    w[present] = (1 - beta) / (1 - torch.pow(beta, counts[present]))
    w = w / w.sum() * present.sum()
    return w.float()


def logit_adjustment(counts: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Menon et al.'s additive offsets ``tau * log(prior_c)`` (absent classes: prior 1e-8)."""
    prior = counts.double() / counts.sum()
    return (tau * torch.log(prior.clamp_min(1e-8))).float()


class TaskLoss(nn.Module):
    """Cross-entropy with optional class weights and additive logit offsets (training only)."""

    def __init__(self, weights: torch.Tensor | None = None, offsets: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weights", weights)
        self.register_buffer("offsets", offsets)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy; with ``sample_weights`` ``w`` (and class weights ``c``) the weighted
        mean ``sum(w c_y l) / sum(w c_y)`` (LRV's weighting of replaced images)."""
        logits = logits.float()
        if self.offsets is not None:
            logits = logits + self.offsets
        if sample_weights is None:
            return F.cross_entropy(logits, labels, weight=self.weights)
        w = sample_weights.to(logits.device, torch.float32)
        if self.weights is not None:
            w = w * self.weights[labels]
        return (w * F.cross_entropy(logits, labels, reduction="none")).sum() / w.sum()
