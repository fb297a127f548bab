"""Settings of the methods, the training loop and the image generators, as plain dataclasses.

This module is the configuration layer's vocabulary: :mod:`lowres_clip.config` nests these classes
into one :class:`~lowres_clip.config.RunConfig`, and the heavy modules that act on them (``methods``,
``train``, ``augment``) import them from here. It imports nothing heavy (no torch, no open_clip), so
a profile can be read and validated without loading a model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
TOWERS = ("vision", "text")
ENCODER_CHOICES = ("vision", "text", "both")
KINDS = ("preserving", "breaking")
EMBEDDED_MODEL = "EffLite0-MiniLM"  # the embedded CPU model's open_clip name (lowres_clip.embedded)


class ConfigError(ValueError):
    """A configuration, profile or notebook parameter is invalid; the message names the key."""


class AdaptationError(ValueError):
    """Bad configuration or input for an adaptation method or the training loop.

    The message names the offending value and the accepted ones.
    """


class AugmentError(ValueError):
    """Augmentation settings, inputs or outputs are invalid; the message says how to fix it."""


def check_encoders(encoders: str) -> tuple[str, ...]:
    """``"vision" | "text" | "both"`` -> the tuple of towers; anything else is an error."""
    if encoders not in ENCODER_CHOICES:
        raise AdaptationError(f"Unknown encoders {encoders!r}; choose one of {ENCODER_CHOICES}.")
    return TOWERS if encoders == "both" else (encoders,)


def runtime_field(default: Any, doc: str = "") -> Any:
    """A config field that does not change a result (paths, device, batch size of inference...).

    Runtime fields are left out of a run's identity (:class:`lowres_clip.spec.RunSpec`) and of
    :meth:`GeneratorConfig.settings` (the generated images' identity).
    """
    return field(default=default, metadata={"runtime": True, "doc": doc})


def added_field(default: Any, absent_means: Any, doc: str = "") -> Any:
    """A result-affecting config field added after runs were recorded without it.

    ``absent_means`` is the value that reproduces what the code did before the field existed. A run
    whose field holds that value leaves the field out of its settings
    (:func:`lowres_clip.spec.result_settings`), so the settings hash of every run recorded before the
    field existed stays the same; any other value is a setting like the others (a new hash, a new
    folder). Tables read a setting absent from a run's settings as this value
    (:func:`lowres_clip.spec.distinguishing`).
    """
    return field(default=default, metadata={"absent_means": absent_means, "doc": doc})


# ----------------------------------------------------------------------------- LoRA
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


# ------------------------------------------------------------------------ separated attention


# ----------------------------------------------------------------------------- BitFit
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


# ----------------------------------------------------------------------------- Meta-Adapter
META_BUDGETS = ("reference", "run")


@dataclass
class MetaAdapterConfig:
    """Meta-Adapter options.

    Attributes:
        dropout: dropout on the attention weights during training. The reference code
            (ArsenalCheng/Meta-Adapter ``main.py``) has none (default 0.0); the seed authors used
            0.4 on the q/k projections.
        num_heads: attention heads (1 in the paper).
        exclude_query: during training, leave each query's own image out of its support set (and
            one random image of every other class; see :func:`episode_mask`).
        episode_shots: if set, each training step keeps at most this many random support images
            per class (simulates K-shot episodes when more shots are available); ``None`` = all.
        gate_bias_init: initial gate bias (paper: 1, i.e. ``sigmoid(1) ~ 0.73``).
        train: overrides of the training loop (:class:`TrainConfig` fields, e.g. ``lr``, ``epochs``,
            ``batch_size``, ``crop_scale``, ``eps``) used when the Meta-Adapter is the only trained
            part of a method and ``budget`` is ``reference``; combinations (``lora+meta_adapter``...)
            train with the run's ``train`` settings. Setting ``epochs`` without ``iterations``
            clears ``iterations``. See :meth:`train_protocol`.
        budget: the training budget of the Meta-Adapter alone. ``reference`` (default; what the code
            did before this field existed): the run's ``train`` updated by ``train`` above (the
            profiles put the reference repository's protocol there: lr 1e-4, 5 epochs of batch 64,
            cosine to 0, whose sum of learning rates over its steps is small: see README,
            "Protocols"). ``run``: the run's ``train`` settings unchanged, i.e. the budget the
            Meta-Adapter gets inside a combination. No effect on combinations.
    """

    dropout: float = 0.0
    num_heads: int = 1
    exclude_query: bool = True
    episode_shots: int | None = None
    gate_bias_init: float = 1.0
    train: dict[str, Any] = field(default_factory=dict)
    budget: str = added_field("reference", absent_means="reference",
                              doc="reference: alone, train with the overrides in train; run: the run's train")

    def validate(self) -> None:
        if self.budget not in META_BUDGETS:
            raise AdaptationError(f"Meta-Adapter budget must be one of {META_BUDGETS}, got {self.budget!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise AdaptationError(f"Meta-Adapter dropout must be in [0, 1), got {self.dropout!r}.")
        if self.num_heads <= 0:
            raise AdaptationError(f"Meta-Adapter num_heads must be positive, got {self.num_heads!r}.")
        if self.episode_shots is not None and self.episode_shots <= 0:
            raise AdaptationError(f"episode_shots must be positive or None, got {self.episode_shots!r}.")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        bad = sorted(set(self.train) - known)
        if bad:
            raise AdaptationError(f"Meta-Adapter train overrides: unknown keys {bad}; accepted: {', '.join(sorted(known))}.")

    def train_protocol(self, train: "TrainConfig", parts: tuple[str, ...]) -> "TrainConfig":
        """The training-loop settings the Meta-Adapter asks for in a label of ``parts`` (its
        registry row's ``train_protocol``: :func:`lowres_clip.registry.effective_train`).

        ``train`` itself, except for the Meta-Adapter alone (``parts`` is this method only) with
        ``budget == "reference"``, which trains with ``train`` updated by ``self.train`` (its
        reference protocol); ``epochs`` given there without ``iterations`` clears ``iterations``.
        With ``budget == "run"`` the Meta-Adapter alone trains with ``train``, as in a combination.
        The result is validated; ``train`` is never changed.
        """
        if len(parts) != 1 or self.budget == "run" or not self.train:
            return train
        overrides = dict(self.train)
        if "epochs" in overrides and "iterations" not in overrides:
            overrides["iterations"] = None
        out = dataclasses.replace(train, **overrides)
        out.validate()
        return out


# ----------------------------------------------------------------------------- long-tail remedies
# A remedy changes how a trained method trains (registry role ``remedy``: ``lora+la``); its logic is in
# lowres_clip.methods.remedies. ``train_protocol`` (light) is its registry row's training-protocol hook.
REWEIGHT_KINDS = ("inverse", "effective")


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


# ----------------------------------------------------------------------------- training loop
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


# ----------------------------------------------------------------------------- image generators
@dataclass
class GeneratorConfig:
    """Settings every generator shares.

    Attributes:
        num_samples: images generated per source image *and* strength (LRV: 5; the seed report: 3).
            A run's generator gets its augmentation variant's values unless it sets them
            (:meth:`lowres_clip.config.AugmentConfig.generator_options`); the defaults here are
            for direct use.
        seed: base seed. Each output gets its own seed derived from this one, the source path, the
            kind, the strength and the sample index (:func:`derive_seed`), so a rerun, a resumed run
            or a run over a different subset of sources makes the same image for the same source.
        preserving_strength: strength of label-preserving outputs (diffusion: img2img noise
            strength; classic: intensity of the mild transforms). Default 0.3 (LRV and the seed report).
        breaking_strengths: strengths of label-breaking outputs; ``num_samples`` outputs are made
            per strength. Default ``[0.6, 0.7, 0.8]`` (LRV's README generates at 0.6, its dataloader
            reads 0.7/0.75/0.8: variant ``lrv``; the seed report 0.6: variant ``seed``). Every one
            must exceed ``preserving_strength``.
    """

    num_samples: int = 5
    seed: int = 42
    preserving_strength: float = 0.3
    breaking_strengths: Sequence[float] = (0.6, 0.7, 0.8)

    def __post_init__(self) -> None:
        self.breaking_strengths = tuple(float(s) for s in self.breaking_strengths)
        self.preserving_strength = float(self.preserving_strength)
        if self.num_samples < 1:
            raise AugmentError(f"num_samples must be >= 1, got {self.num_samples}.")
        if not self.breaking_strengths:
            raise AugmentError("breaking_strengths is empty; give at least one strength, e.g. [0.6, 0.7, 0.8].")
        for s in (self.preserving_strength, *self.breaking_strengths):
            if not 0.0 < s <= 1.0:
                raise AugmentError(f"strengths must lie in (0, 1], got {s}.")
        if self.preserving_strength >= min(self.breaking_strengths):
            raise AugmentError(
                f"preserving_strength {self.preserving_strength} must be lower than every breaking "
                f"strength {list(self.breaking_strengths)}: low strength preserves the label, high breaks it."
            )

    def strengths(self, kind: str) -> tuple[float, ...]:
        """The strengths used for ``kind`` (``preserving``: one, ``breaking``: the list)."""
        check_kind(kind)
        return (self.preserving_strength,) if kind == "preserving" else tuple(self.breaking_strengths)

    def settings(self) -> dict[str, Any]:
        """JSON-able values of all non-runtime fields (what identifies the generated images)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("runtime"):
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def check_kind(kind: str) -> None:
    """Raise :class:`AugmentError` unless ``kind`` is ``preserving`` or ``breaking``."""
    if kind not in KINDS:
        raise AugmentError(f"kind must be one of {KINDS}, got {kind!r}.")


@dataclass
class ClassicConfig(GeneratorConfig):
    """Settings of the classic generator (see :class:`GeneratorConfig` for the shared fields).

    Attributes:
        image_size: output side length in pixels; ``None`` keeps each source image's size.
    """

    image_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size is not None and self.image_size < 8:
            raise AugmentError(f"image_size must be >= 8 pixels or None, got {self.image_size}.")


DEFAULT_MODEL_ID = "CompVis/stable-diffusion-v1-4"
DIFFUSION_PROMPTS = {
    "circuits": "a circuit diagram of {}",
    "eurosat": "a satellite photo of {}",
}
DEFAULT_PROMPT = "a photo of {}"


@dataclass
class DiffusionConfig(GeneratorConfig):
    """Settings of the diffusion generator (see :class:`GeneratorConfig` for the shared fields).

    Attributes:
        model_id: Hugging Face hub id or local folder of a Stable Diffusion (v1) pipeline.
        revision: hub revision of ``model_id`` (``None``: default branch).
        prompt_template: prompt with ``{}`` for the class name; :meth:`for_dataset` picks the
            dataset's (``a circuit diagram of {}``, ``a satellite photo of {}``).
        num_inference_steps: DDIM steps of the full schedule; img2img runs ``int(steps * strength)``.
        guidance_scale: classifier-free guidance scale.
        eta: DDIM eta (0: deterministic given the seed).
        image_size: side length the source is resized to and outputs have (pixels).
        scheduler: ``"ddim"`` replaces the pipeline's scheduler by DDIM; ``"pipeline"`` keeps it.
        batch_size: images per pipeline call (runtime: does not change the images' identity).
        device: ``None``: CUDA when present, else CPU (runtime).
        dtype: ``"auto"`` (fp16 on CUDA, fp32 on CPU), ``"fp16"`` or ``"fp32"`` (runtime).
        local_files_only: never try the network when loading (runtime).
    """

    model_id: str = DEFAULT_MODEL_ID
    revision: str | None = None
    prompt_template: str = DEFAULT_PROMPT
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    eta: float = 0.0
    image_size: int = 512
    scheduler: Literal["ddim", "pipeline"] = "ddim"
    batch_size: int = runtime_field(5, "images per pipeline call")
    device: str | None = runtime_field(None, "None: CUDA when present")
    dtype: Literal["auto", "fp16", "fp32"] = runtime_field("auto", "fp16 on CUDA when auto")
    local_files_only: bool = runtime_field(False, "never use the network")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "{}" not in self.prompt_template:
            raise AugmentError(f"prompt_template must contain '{{}}' for the class name, got {self.prompt_template!r}.")
        if self.scheduler not in ("ddim", "pipeline"):
            raise AugmentError(f"scheduler must be 'ddim' or 'pipeline', got {self.scheduler!r}.")
        if self.dtype not in ("auto", "fp16", "fp32"):
            raise AugmentError(f"dtype must be 'auto', 'fp16' or 'fp32', got {self.dtype!r}.")
        if self.batch_size < 1:
            raise AugmentError(f"batch_size must be >= 1, got {self.batch_size}.")
        weakest = min(self.strengths("preserving") + self.strengths("breaking"))
        if int(self.num_inference_steps * weakest) < 1:
            raise AugmentError(
                f"num_inference_steps={self.num_inference_steps} x strength {weakest} gives no denoising "
                f"step; use at least {int(1 / weakest) + 1} steps."
            )

    @classmethod
    def for_dataset(cls, dataset: str, **kwargs: Any) -> "DiffusionConfig":
        """Config with the dataset's prompt (:data:`DIFFUSION_PROMPTS`, else ``a photo of {}``)."""
        kwargs.setdefault("prompt_template", DIFFUSION_PROMPTS.get(dataset, DEFAULT_PROMPT))
        return cls(**kwargs)
