"""Settings of the one training loop and the augmentation protocols (LRV's and the seed's)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from .base import AdaptationError, AugmentError, PRECISIONS, added_field, runtime_field

# A remedy changes how a trained method trains (registry role ``remedy``: ``lora+la``); its logic is in
# lowres_clip.methods.remedies. ``train_protocol`` (light) is its registry row's training-protocol hook.
REWEIGHT_KINDS = ("inverse", "effective")
SELECT_METRICS = ("accuracy", "balanced_accuracy")
SELECTIONS = ("last", "best_val")
AUGMENT_VARIANTS = ("lrv", "seed")
PRESERVING_MODES = ("replace", "extend")
PAIRINGS = ("augmented_copy", "two_breaking")


@dataclass(frozen=True)
class AugmentProtocol:
    """How generated images enter training: one named protocol (:data:`AUGMENT_PROTOCOLS`).

    Attributes:
        variant: ``lrv`` (Zhang, Doughty & Snoek's code) or ``seed`` (the seed report's code).
        preserving_mode: ``replace``: each training image is, with probability ``preserving_p``,
            replaced by one of its label-preserving images, whose loss term gets weight
            ``preserving_weight``; the supervised loss is the weighted mean ``sum(w l) / sum(w)``
            (LRV). ``extend``: every label-preserving image is one more training item with its
            source's label and weight 1 (seed report).
        preserving_p: replacement probability per image (``replace`` only).
        preserving_weight: weight of a replaced image's loss term (``replace`` only).
        pairing: ``augmented_copy``: the two views of a pair are two independent random training
            augmentations of *one* label-breaking image (LRV pairs a breaking image with an augmented
            copy of it); ``two_breaking``: two different label-breaking images of the same source
            (seed report: "sampled 2 at a time").
        breaking_lambda: weight λ of the breaking loss in ``L_task + λ L_breaking``.
        bank_batches: memory-bank capacity in *batches* of earlier positives (both codes keep a list
            of batches).
        temperature: σ of the breaking loss (LRV: logit factor 80, σ = 1/80; seed: logit 100).
        breaking_strengths: generator strengths of the label-breaking images.
        preserving_strength: generator strength of the label-preserving images.
        num_samples: generated images per source image and strength.
    """

    variant: str
    preserving_mode: str
    preserving_p: float
    preserving_weight: float
    pairing: str
    breaking_lambda: float
    bank_batches: int
    temperature: float
    breaking_strengths: tuple[float, ...]
    preserving_strength: float
    num_samples: int

    def generator_defaults(self) -> dict[str, Any]:
        """The generator options this protocol implies (``augmentation.generator`` overrides them)."""
        return {"breaking_strengths": list(self.breaking_strengths), "preserving_strength": self.preserving_strength,
                "num_samples": self.num_samples}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (what a run record stores)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


AUGMENT_PROTOCOLS: dict[str, AugmentProtocol] = {
    # xiaobai1217/Low-Resource-Vision: scripts/train_circuit.py (aug_prob 0.3, aug_weight 0.65, factor 80,
    # lambda 0.1, bank_size 40 batches, weighted mean), scripts/dataloader_circuit.py (per-image replacement by
    # one of 5 strength-0.3 images; breaking image from strengths 0.7/0.75/0.8 paired with an augmented copy).
    "lrv": AugmentProtocol("lrv", "replace", 0.3, 0.65, "augmented_copy", 0.1, 40, 1 / 80, (0.7, 0.75, 0.8), 0.3, 5),
    # OmarFacchini/LowResourcesFewShot-CLIP: datasets/circuits.py (preserving images as extra training items,
    # 2 breaking images of the source per item), main.py (bank_size 100 batches, lambda 0.1, logit_scale 100),
    # modules/data_generation (strength 0.3 / 0.6, --n_samples 3).
    "seed": AugmentProtocol("seed", "extend", 0.0, 1.0, "two_breaking", 0.1, 100, 1 / 100, (0.6,), 0.3, 3),
}


def check_variant(variant: str) -> AugmentProtocol:
    """The :class:`AugmentProtocol` named ``variant``; raise :class:`AugmentError` for unknown names."""
    if variant not in AUGMENT_PROTOCOLS:
        raise AugmentError(f"Unknown augmentation variant {variant!r}; choose one of {AUGMENT_VARIANTS}.")
    return AUGMENT_PROTOCOLS[variant]


@dataclass
class TrainConfig:
    """Settings of the training loop (defaults: CLIP-LoRA).

    Attributes:
        iterations: optimisation steps; ``None`` = ``epochs`` passes over the training set when
            ``epochs`` is set, else ``iterations_per_shot * K`` with K the largest number of training
            images of a class.
        iterations_per_shot: steps per shot when ``iterations`` and ``epochs`` are ``None`` (CLIP-LoRA: 500).
        epochs: passes over the training set (``ceil(N / batch_size)`` steps each) when
            ``iterations`` is ``None`` (the Meta-Adapter reference trains 5 epochs).
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        eps: AdamW epsilon (the Meta-Adapter reference uses 1e-4).
        batch_size: images per step.
        crop_scale: ``RandomResizedCrop`` scale range of the training transform (CLIP-LoRA: 0.08-1;
            the Meta-Adapter reference: 0.5-1); see :func:`lowres_clip.train.train_transform`.
        warmup_iterations: linear warm-up steps (0 = none) before the cosine decay.
        min_lr: learning rate at the end of the cosine schedule.
        eval_every: validate every this many steps (also before step 1 and after the last).
        selection: which parameters are kept: ``last`` (the final ones, as CLIP-LoRA with
            ``VALIDATION = False`` and CoOp) or ``best_val`` (the best validation score; ties go to
            the later step, and the untrained step 0 is kept only when it is strictly better than
            every trained checkpoint, which the result says). Validation always runs for the history.
        patience: with ``best_val``, stop after this many validations without a strict
            improvement (``None`` = never).
        select_metric: ``accuracy`` or ``balanced_accuracy`` (mean per-class recall; long tails).
        precision: ``auto`` | ``fp32`` | ``fp16`` | ``bf16`` (autocast; see ``utils.resolve_precision``).
        num_workers: DataLoader worker processes.
        seed: seed of data order, augmentation, dropout and the preserving coin flips.
        balanced_loss: weight the cross-entropy by class weights (``balanced_weights``).
        balanced_weights: which: ``effective`` (Cui et al.'s class-balanced weights) or ``inverse``
            (``1 / n_c``); both normalised to sum to the number of present classes.
        balanced_beta: beta of the effective number of samples.
        resample_q: draw training items with replacement, class ``c`` with probability ``∝ n_c^q``
            (Kang et al. 2020; 0: class-balanced); ``None``: shuffle (the ``resample`` remedy sets it).
        logit_adjustment_tau: tau of Menon et al.'s logit-adjusted loss (0 = off).
        augment_variant: the augmentation protocol (:data:`AUGMENT_PROTOCOLS`), ``lrv`` or ``seed``;
            :class:`~lowres_clip.config.RunConfig` copies ``augmentation.variant`` here.
        preserving_p, preserving_weight, breaking_lambda: override the variant's values
            (``None``: the variant's; see :class:`AugmentProtocol`).
        breaking_bank_size: override the variant's memory-bank capacity, in batches.
        breaking_temperature: override the variant's σ of the breaking loss.
        grad_clip: clip the gradient norm to this value (``None`` = no clipping).
        eval_batch_size: batch size of validation passes.
        progress: show a tqdm progress bar.
    """

    iterations: int | None = None
    iterations_per_shot: int = 500
    epochs: int | None = None
    lr: float = 2e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    warmup_iterations: int = 0
    min_lr: float = 1e-6
    eval_every: int = 250
    selection: str = "last"
    patience: int | None = None
    select_metric: str = "accuracy"
    precision: str = "auto"
    num_workers: int = runtime_field(0, "does not change results")
    seed: int = 1
    balanced_loss: bool = False
    balanced_beta: float = 0.999
    balanced_weights: str = added_field("effective", absent_means="effective", doc="effective (Cui) or inverse")
    resample_q: float | None = added_field(None, absent_means=None, doc="class-balanced re-sampling exponent")
    logit_adjustment_tau: float = 0.0
    augment_variant: str = "lrv"
    preserving_p: float | None = None
    preserving_weight: float | None = None
    breaking_lambda: float | None = None
    breaking_bank_size: int | None = None
    breaking_temperature: float | None = None
    grad_clip: float | None = None
    eval_batch_size: int = runtime_field(64, "does not change results")
    progress: bool = runtime_field(True, "does not change results")

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        self.crop_scale = tuple(float(c) for c in self.crop_scale)

    def validate(self) -> None:
        """Raise :class:`AdaptationError` for out-of-range values."""
        def opt(value: Any, ok: Callable[[Any], bool]) -> bool:
            return value is None or ok(value)

        checks = {
            "iterations": opt(self.iterations, lambda v: v >= 1),
            "iterations_per_shot": self.iterations_per_shot >= 1,
            "epochs": opt(self.epochs, lambda v: v >= 1),
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "eps": self.eps > 0,
            "batch_size": self.batch_size >= 1,
            "crop_scale": len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            "warmup_iterations": self.warmup_iterations >= 0,
            "eval_every": self.eval_every >= 1,
            "patience": opt(self.patience, lambda v: v >= 1),
            "num_workers": self.num_workers >= 0,
            "balanced_beta": 0 <= self.balanced_beta < 1,
            "logit_adjustment_tau": self.logit_adjustment_tau >= 0,
            "balanced_weights": self.balanced_weights in REWEIGHT_KINDS,
            "resample_q": opt(self.resample_q, lambda v: 0 <= v <= 1),
            "preserving_p": opt(self.preserving_p, lambda v: 0 <= v <= 1),
            "preserving_weight": opt(self.preserving_weight, lambda v: v > 0),
            "breaking_lambda": opt(self.breaking_lambda, lambda v: v >= 0),
            "breaking_bank_size": opt(self.breaking_bank_size, lambda v: v >= 0),
            "breaking_temperature": opt(self.breaking_temperature, lambda v: v > 0),
            "grad_clip": opt(self.grad_clip, lambda v: v > 0),
            "eval_batch_size": self.eval_batch_size >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise AdaptationError(f"TrainConfig: out-of-range values {[(k, getattr(self, k)) for k in bad]}.")
        if self.iterations is not None and self.epochs is not None:
            raise AdaptationError(f"TrainConfig: set iterations ({self.iterations}) or epochs ({self.epochs}), not both.")
        if self.select_metric not in SELECT_METRICS:
            raise AdaptationError(f"TrainConfig: select_metric {self.select_metric!r} not in {SELECT_METRICS}.")
        if self.selection not in SELECTIONS:
            raise AdaptationError(f"TrainConfig: Unknown selection {self.selection!r}; choose one of {SELECTIONS}.")
        if self.patience is not None and self.selection != "best_val":
            raise AdaptationError("TrainConfig: patience (early stopping) needs selection 'best_val'; "
                                  "with 'last' the final parameters are kept, so set patience to null.")
        if self.precision not in PRECISIONS:
            raise AdaptationError(f"TrainConfig: Unknown precision {self.precision!r}; choose one of {PRECISIONS}.")
        try:
            check_variant(self.augment_variant)
        except AugmentError as exc:
            raise AdaptationError(f"TrainConfig: {exc}") from exc

    def augment_protocol(self) -> AugmentProtocol:
        """The augmentation protocol of ``augment_variant`` with this config's overrides applied."""
        base = check_variant(self.augment_variant)
        overrides = {
            "preserving_p": self.preserving_p, "preserving_weight": self.preserving_weight,
            "breaking_lambda": self.breaking_lambda, "bank_batches": self.breaking_bank_size,
            "temperature": self.breaking_temperature,
        }
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
