"""The label-breaking loss: a contrastive term over pairs of label-breaking views with a memory bank.

Zhang, Doughty, Snoek (CVPR 2024) add an unsupervised term to the task loss,
``L = L_task + λ · L_breaking`` (λ = ``TrainConfig.breaking_lambda``, 0.1 by default, applied by the training loop), with

    L_breaking = -(1/B) Σ_j log( exp(x'_jᵀ x_j / σ) / ( Σ_i exp(x'_jᵀ x_i / σ) + Σ_m exp(x'_jᵀ k_m / σ) ) )

**Exact definition used here.** ``x'`` and ``x`` are ``[B, D]`` features of two label-breaking
views of the same B source images (row j of both comes from source j). Both are L2-normalised
inside :meth:`BreakingLoss.forward` (``F.normalize`` along the feature dimension, so raw and
already normalised features give the same loss). For anchor ``x'_j``:

* the positive is ``x_j`` (the other view of the same source);
* the negatives are the other current pairs' second views ``x_i`` (i ≠ j) **and** every entry
  ``k_m`` of the memory bank (second views ``x`` of earlier batches, detached);
* the loss is the mean over j of the cross-entropy of logits ``[x'_jᵀ x_1..x_B, x'_jᵀ k_1..k_M] / σ``
  with target j (i.e. the formula above).

After the loss is computed (in training mode only) the batch's ``x`` features, detached, are pushed
into the bank, a FIFO of at most ``bank_size`` vectors (default 100; the original code used 40).
σ defaults to 1/80.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import AugmentError



class MemoryBank:
    """A FIFO of at most ``size`` detached feature vectors (oldest first).

    Args:
        size: capacity N; pushing more drops the oldest entries.
    """

    def __init__(self, size: int):
        if size < 0:
            raise AugmentError(f"Memory bank size must be >= 0, got {size}.")
        self.size = int(size)
        self._data: torch.Tensor | None = None

    def push(self, features: torch.Tensor) -> None:
        """Append ``[B, D]`` features (detached); keep the newest ``size`` rows."""
        if features.dim() != 2:
            raise AugmentError(f"MemoryBank.push expects [B, D] features, got shape {tuple(features.shape)}.")
        new = features.detach()
        if self._data is not None:
            if self._data.shape[1] != new.shape[1]:
                raise AugmentError(f"MemoryBank holds {self._data.shape[1]}-d features, got {new.shape[1]}-d; call clear() first.")
            new = torch.cat([self._data.to(new.device, new.dtype), new])
        self._data = new[max(len(new) - self.size, 0) :].clone()

    def tensor(self) -> torch.Tensor:
        """The stored features ``[n, D]``, oldest first (``[0, 0]`` when nothing was pushed)."""
        return self._data if self._data is not None else torch.empty(0, 0)

    def clear(self) -> None:
        """Forget every entry."""
        self._data = None

    def __len__(self) -> int:
        return 0 if self._data is None else len(self._data)

    @property
    def full(self) -> bool:
        """True when the bank holds ``size`` entries."""
        return len(self) >= self.size


class BreakingLoss(nn.Module):
    """Contrastive loss over pairs of label-breaking views with a memory bank (module docstring).

    Args:
        bank_size: capacity N of the FIFO memory bank of negatives (0 disables the bank).
        temperature: σ (default 1/80).
    """

    def __init__(self, bank_size: int = 100, temperature: float = 1 / 80):
        super().__init__()
        if temperature <= 0:
            raise AugmentError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.bank = MemoryBank(bank_size)

    def forward(self, x_prime: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Scalar loss for two ``[B, D]`` batches of views (row j of both from source j)."""
        if x_prime.dim() != 2 or x_prime.shape != x.shape:
            raise AugmentError(
                f"BreakingLoss expects two [B, D] feature batches of equal shape, got {tuple(x_prime.shape)} and {tuple(x.shape)}."
            )
        xp, xx = F.normalize(x_prime, dim=1), F.normalize(x, dim=1)
        keys = xx
        if len(self.bank):
            keys = torch.cat([xx, self.bank.tensor().to(xx.device, xx.dtype)])
        logits = xp @ keys.T / self.temperature
        loss = F.cross_entropy(logits, torch.arange(len(xp), device=xp.device))
        if self.training:
            self.bank.push(xx)
        return loss

    def extra_repr(self) -> str:
        return f"bank_size={self.bank.size}, temperature={self.temperature:g}"
