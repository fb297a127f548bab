"""How well the assembled towers align: text -> prototype retrieval on held-out ImageNet classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .projection import fit_text_projection
from .recipe import EmbeddedBuildConfig, EmbeddedBuildError


@dataclass
class AlignmentReport:
    """Text -> image-prototype retrieval on ImageNet classes held out of the ridge fit.

    Attributes:
        top1: fraction of held-out classes whose text embedding ranks its own prototype first among the
            ``n_test`` held-out prototypes.
        top5: same within the first five.
        median_rank: median 0-based rank of the own prototype.
        mean_rank: mean 0-based rank.
        n_fit: classes used for the fit; n_test: held-out classes; alpha: chosen ridge penalty.
    """

    top1: float
    top5: float
    median_rank: float
    mean_rank: float
    n_fit: int
    n_test: int
    alpha: float


def alignment_report(
    text_emb: torch.Tensor | np.ndarray,
    prototypes: torch.Tensor | np.ndarray,
    n_test: int = 200,
    seed: int = 0,
    config: EmbeddedBuildConfig | None = None,
) -> AlignmentReport:
    """Fit on all but ``n_test`` random classes and measure text -> prototype retrieval on the held-out ones."""
    X = np.asarray(text_emb, dtype=np.float32)
    Y = np.asarray(prototypes, dtype=np.float32)
    if not 1 < n_test < len(X) - 1:
        raise EmbeddedBuildError(f"n_test must be between 2 and {len(X) - 2}; got {n_test}.")
    perm = np.random.default_rng(seed).permutation(len(X))
    test, fit = perm[:n_test], perm[n_test:]
    proj = fit_text_projection(X[fit], Y[fit], config)
    pred = X[test] @ proj.weight.numpy().T
    sims = (pred / np.linalg.norm(pred, axis=1, keepdims=True)) @ Y[test].T
    ranks = (sims > np.diag(sims)[:, None]).sum(1)
    return AlignmentReport(
        top1=float((ranks == 0).mean()),
        top5=float((ranks < 5).mean()),
        median_rank=float(np.median(ranks)),
        mean_rank=float(ranks.mean()),
        n_fit=len(fit),
        n_test=n_test,
        alpha=proj.alpha,
    )
