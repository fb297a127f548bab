"""The label-breaking loss: a contrastive term over pairs of label-breaking views with a memory bank.

Zhang, Doughty, Snoek (CVPR 2024) add an unsupervised term to the task loss,
``L = L_task + λ · L_breaking`` (λ = ``TrainConfig.breaking_lambda``, 0.1 by default, applied by the training loop), with

    L_breaking = -(1/B) Σ_j log( exp(x'_jᵀ x_j / σ) / ( Σ_i exp(x'_jᵀ x_i / σ) + Σ_m exp(x'_jᵀ k_m / σ) ) )

**Exact definition used here** (that of LRV's ``scripts/train_circuit.py`` and of the seed authors'
``modules/runner.py``). ``x'`` and ``x`` are ``[B, D]`` features of the two views of B pairs (row j of
both from pair j). Both are L2-normalised inside :meth:`BreakingLoss.forward` (``F.normalize``
along the feature dimension, so raw and already normalised features give the same loss). For
anchor ``x'_j``:

* the positive is ``x_j`` (the other view of the same pair);
* the negatives are the other current pairs' views ``x_i`` (i ≠ j) **and** every row ``k_m`` of
  the memory bank (the ``x`` of earlier batches, detached);
* the loss is the mean over j of the cross-entropy of logits ``[x'_jᵀ x_1..x_B, x'_jᵀ k_1..k_M] / σ``
  with target j (i.e. the formula above; both codes write ``factor * x2 @ cat(x1, bank).T``).

After the loss is computed (in training mode only) the batch's ``x`` features, detached, are pushed
into the bank, a FIFO of the last ``bank_size`` *batches* (both codes keep a list of batch
tensors: LRV 40 at σ = 1/80, the seed authors 100 at σ = 1/100; see
:data:`lowres_clip.settings.AUGMENT_PROTOCOLS`). LRV's script truncates its list by rebinding a
local name, so as published its bank in fact keeps every batch; we keep the 40 it asks for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import AugmentError



class MemoryBank:
    """A FIFO of the last ``size`` batches of detached feature vectors (oldest first).

    Args:
        size: capacity in batches; pushing more drops the oldest batches (0: keeps nothing).
    """

    def __init__(self, size: int):
        if size < 0:
            raise AugmentError(f"Memory bank size must be >= 0 batches, got {size}.")
        self.size = int(size)
        self._batches: list[torch.Tensor] = []

    def push(self, features: torch.Tensor) -> None:
        """Append one ``[B, D]`` batch (detached); keep the newest ``size`` batches."""
        if features.dim() != 2:
            raise AugmentError(f"MemoryBank.push expects [B, D] features, got shape {tuple(features.shape)}.")
        if self._batches and self._batches[0].shape[1] != features.shape[1]:
            raise AugmentError(f"MemoryBank holds {self._batches[0].shape[1]}-d features, got {features.shape[1]}-d; "
                               "call clear() first.")
        if self.size == 0:
            return
        self._batches = (self._batches + [features.detach().clone()])[-self.size:]

    def tensor(self) -> torch.Tensor:
        """The stored features ``[n, D]``, oldest batch first (``[0, 0]`` when nothing was pushed)."""
        return torch.cat(self._batches) if self._batches else torch.empty(0, 0)

    def clear(self) -> None:
        """Forget every entry."""
        self._batches = []

    @property
    def batches(self) -> int:
        """Number of stored batches."""
        return len(self._batches)

    def __len__(self) -> int:
        """Number of stored feature vectors (rows over all batches)."""
        return sum(len(b) for b in self._batches)

    @property
    def full(self) -> bool:
        """True when the bank holds ``size`` batches."""
        return self.batches >= self.size


class BreakingLoss(nn.Module):
    """Contrastive loss over pairs of label-breaking views with a memory bank (module docstring).

    Args:
        bank_size: capacity of the FIFO memory bank of negatives, in batches (0 disables the bank;
            default 40 as LRV).
        temperature: σ (default 1/80 as LRV).
    """

    def __init__(self, bank_size: int = 40, temperature: float = 1 / 80):
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
        return f"bank_size={self.bank.size} batches, temperature={self.temperature:g}"
