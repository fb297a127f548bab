"""Settings of the long-tail remedies (``resample``, ``reweight``, ``la``, ``decouple``) and the training each asks for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .base import AdaptationError
from .training import REWEIGHT_KINDS, TrainConfig


@dataclass
class ResampleConfig:
    """Class-balanced re-sampling (Kang et al., ICLR 2020, "Decoupling representation and classifier
    for long-tailed recognition"): the training loader draws items with replacement so that a class
    ``c`` of ``n_c`` items is drawn with probability ``p_c = n_c^q / sum_j n_j^q`` (per item:
    weight ``n_c^(q-1)``), instead of shuffling; the number of iterations is unchanged.

    Attributes:
        q: the exponent of generalised square-root sampling: 0 class-balanced (``p_c = 1/C``),
            0.5 square-root, 1 instance-balanced (every item equally likely, as shuffling).
    """

    q: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.q <= 1.0:
            raise AdaptationError(f"resample: q must be in [0, 1] (0 class-balanced, 1 instance-balanced), got {self.q!r}.")

    def train_protocol(self, train: "TrainConfig", parts: tuple[str, ...]) -> "TrainConfig":
        """``train`` with ``resample_q = q`` (the loop then draws with a seeded WeightedRandomSampler)."""
        return dataclasses.replace(train, resample_q=float(self.q))


@dataclass
class ReweightConfig:
    """Class-level re-weighting of the cross-entropy, normalised so that ``sum_c w_c = C`` over the
    classes present in the training set (absent classes: 0).

    Attributes:
        kind: ``inverse`` (``w_c ∝ 1 / n_c``) or ``effective`` (Cui et al., CVPR 2019, "Class-Balanced
            Loss Based on Effective Number of Samples": ``w_c ∝ (1 - beta) / (1 - beta^n_c)``).
        beta: beta of the effective number of samples (``effective`` only), in [0, 1).
    """

    kind: str = "effective"
    beta: float = 0.999

    def validate(self) -> None:
        if self.kind not in REWEIGHT_KINDS:
            raise AdaptationError(f"reweight: kind must be one of {REWEIGHT_KINDS}, got {self.kind!r}.")
        if not 0.0 <= self.beta < 1.0:
            raise AdaptationError(f"reweight: beta must be in [0, 1), got {self.beta!r}.")

    def train_protocol(self, train: "TrainConfig", parts: tuple[str, ...]) -> "TrainConfig":
        """``train`` with the class-weighted loss on (``balanced_loss``, ``balanced_weights``, ``balanced_beta``)."""
        return dataclasses.replace(train, balanced_loss=True, balanced_weights=self.kind, balanced_beta=float(self.beta))


@dataclass
class LogitAdjustConfig:
    """The logit-adjusted loss (Menon et al., ICLR 2021, "Long-tail learning via logit adjustment";
    LIFT, ICML 2024): the training cross-entropy sees ``logits + tau * log(pi_c)`` with ``pi`` the
    training set's class prior; evaluation uses the plain logits.

    Attributes:
        tau: the scaling tau (> 0; Menon et al.: 1).
    """

    tau: float = 1.0

    def validate(self) -> None:
        if not self.tau > 0:
            raise AdaptationError(f"la: tau must be positive (drop '+la' for no adjustment), got {self.tau!r}.")

    def train_protocol(self, train: "TrainConfig", parts: tuple[str, ...]) -> "TrainConfig":
        """``train`` with ``logit_adjustment_tau = tau``."""
        return dataclasses.replace(train, logit_adjustment_tau=float(self.tau))


@dataclass
class DecoupleConfig:
    """Decoupled classifier re-balancing (Kang et al., ICLR 2020, classifier re-training, cRT): after
    the method's training, a second stage keeps the representation fixed and re-trains only the
    classifier, the class embeddings ``[C, D]`` the logits compare image features with, with
    class-balanced sampling (:func:`lowres_clip.methods.remedies.retrain_classifier`).

    Stage 2 encodes each training image ``views`` times, once, with the trained model in eval mode
    through the *training* transform (random crop and flip: cRT re-trains with the training
    augmentation), then learns the class embeddings: initialised at the current classifier, cosine
    logits at the training logit scale (100), cross-entropy, batches drawn class-balanced
    (``p_c = 1/C``), AdamW without weight decay, constant learning rate. The model then classifies
    with them (``AdaptedCLIP.classifier_override``, kept in its checkpoint).

    Attributes:
        iterations: steps of stage 2 (default 100).
        lr: its AdamW learning rate (default 1e-3: each step turns a unit class embedding by about
            ``lr * sqrt(D)`` radians at most).
        batch_size: features per step (``None``: the run's ``train.batch_size``).
        views: random training-transform views encoded per training image (default 1).
    """

    iterations: int = 100
    lr: float = 1e-3
    batch_size: int | None = None
    views: int = 1

    def validate(self) -> None:
        bad = {k: v for k, v in (("iterations", self.iterations), ("lr", self.lr), ("views", self.views)) if not v > 0}
        if self.batch_size is not None and self.batch_size < 1:
            bad["batch_size"] = self.batch_size
        if bad:
            raise AdaptationError(f"decouple: out-of-range values {bad} (all positive; batch_size may be null).")
