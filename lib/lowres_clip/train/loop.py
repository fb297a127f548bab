"""The one training loop (:func:`train`): optimiser, schedule, augmentation inputs, validation and
checkpoint selection; :class:`TrainResult` says what it did."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..methods import remedies
from ..methods.adapted import AdaptedCLIP
from .. import registry
from ..settings import TrainConfig
from ..config import _jsonable
from ..numerics import precision_name
from ..utils import AdaptationError, autocast, resolve_precision, seed_everything
from .evaluation import _metric, evaluate
from .loaders import _cycle, _loader, dataset_labels
from .losses import TaskLoss, logit_adjustment
from .movement import MOVED_THRESHOLD, parameter_movement
from .selection import select_checkpoint


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        method: the adapted method.
        iterations: planned steps; ``steps``: steps actually run (fewer after early stopping).
        selection: the selection rule (``last`` or ``best_val``; ``last`` without a validation split).
        selected_step: step whose parameters were kept (0 = the initial, untrained ones).
        selected_val: validation metric at ``selected_step`` (``nan`` without a validation split).
        selection_reason: one sentence saying why that step was kept.
        stopped_early: whether patience ran out.
        history: per validation ``{"step", "loss", "lr", "val"}``.
        parameter_counts: trainable parameters per part (``AdaptedCLIP.parameter_counts``).
        precision: autocast dtype used (``fp32`` = none).
        overrides: training settings the method's own protocol changed (the Meta-Adapter alone:
            ``MetaAdapterConfig.train``), ``{field: value}``.
        augmentation: the augmentation protocol used (:class:`lowres_clip.settings.AugmentProtocol`
            values plus what was actually fed: preserving items, pairing, breaking strengths);
            empty without generated images.
        movement: how far the kept parameters are from the initial ones, per parameter group
            (:meth:`lowres_clip.methods.AdaptedCLIP.parameter_group`; :func:`parameter_movement`).
        remedies: what each long-tail remedy of the method did (:mod:`lowres_clip.methods.remedies`).
        unmoved: the groups that did not move (:data:`MOVED_THRESHOLD`; :meth:`unmoved_groups`).
        seconds: wall time.
    """

    method: str
    iterations: int
    steps: int = 0
    selection: str = "last"
    selected_step: int = 0
    selected_val: float = float("nan")
    selection_reason: str = ""
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    parameter_counts: dict[str, int] = field(default_factory=dict)
    precision: str = "fp32"
    overrides: dict[str, Any] = field(default_factory=dict)
    augmentation: dict[str, Any] = field(default_factory=dict)
    movement: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmoved: list[str] = field(default_factory=list)
    remedies: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def moved_by(self, group: str) -> float:
        """The change of a group: relative to its initial norm, or absolute when it started at zero."""
        m = self.movement[group]
        return m["change_norm"] if m["relative"] is None else m["relative"]

    def unmoved_groups(self, threshold: float = MOVED_THRESHOLD) -> list[str]:
        """The groups whose change (:meth:`moved_by`) is at most ``threshold``."""
        return [g for g in self.movement if self.moved_by(g) <= threshold]


def resolve_iterations(cfg: TrainConfig, train_labels: torch.Tensor) -> int:
    """``cfg.iterations``, else ``epochs * ceil(N / batch_size)``, else ``iterations_per_shot * K``
    (N = training images, K = the largest class count)."""
    if cfg.iterations is not None:
        return cfg.iterations
    if cfg.epochs is not None:
        return max(1, cfg.epochs * math.ceil(len(train_labels) / cfg.batch_size))
    shots = int(torch.bincount(train_labels).max()) if len(train_labels) else 0
    return max(1, cfg.iterations_per_shot * shots)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, iterations: int):
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warm = min(cfg.warmup_iterations, iterations - 1)
    cosine = CosineAnnealingLR(opt, T_max=max(1, iterations - warm), eta_min=cfg.min_lr)
    if warm <= 0:
        return cosine
    return SequentialLR(opt, [LinearLR(opt, start_factor=1e-3, total_iters=warm), cosine], milestones=[warm])


def train(
    adapted: AdaptedCLIP,
    train_set: Dataset,
    val_set: Dataset | None = None,
    cfg: TrainConfig | None = None,
    preserving: Dataset | None = None,
    breaking: Dataset | None = None,
) -> TrainResult:
    """Train ``adapted`` in place and keep the parameters ``cfg.selection`` chooses.

    Args:
        adapted: the model (its ``requires_grad`` parameters are trained).
        train_set: ``(image, label, index)`` items, already with the training transform
            (:func:`train_transform`). With a Meta-Adapter and ``exclude_query``, it must be the
            support set itself (same items, same order) so a batch's images can be left out.
        val_set: validation items (evaluation transform) for checkpoint selection and the history;
            ``None`` keeps the last parameters.
        cfg: loop settings; the Meta-Adapter alone uses them updated by its ``meta_cfg.train``.
        preserving: label-preserving generated images (:class:`~lowres_clip.augment.PreservingDataset`:
            ``(image, label, index)`` with ``source_paths``; ``train_set`` must then have ``samples``).
        breaking: label-breaking view pairs ``(view1, view2, source_index)``; a
            :class:`~lowres_clip.augment.BreakingPairDataset` is switched to the variant's pairing.

    Returns:
        a :class:`TrainResult`; zero-shot (nothing trainable) returns at once with 0 steps.

    Raises:
        AdaptationError: bad configuration, breaking loss without a trainable image tower, or a
            training set that is not the Meta-Adapter's support set.
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    given = asdict(cfg)
    cfg = registry.effective_train(cfg, adapted.parts, adapted.settings.get)
    start = time.time()
    params = [p for p in adapted.parameters() if p.requires_grad]
    labels_all = dataset_labels(train_set)
    iterations = resolve_iterations(cfg, labels_all)
    result = TrainResult(adapted.method, iterations, parameter_counts=adapted.parameter_counts(),
                         selection=cfg.selection if val_set is not None else "last",
                         overrides={k: v for k, v in asdict(cfg).items() if v != given[k]})
    if not params:
        adapted.eval()
        result.selection_reason = "nothing to train"
        return result
    _check_inputs(adapted, train_set, breaking)
    seed_everything(cfg.seed)
    device = adapted.device
    dtype = resolve_precision(cfg.precision, device)
    result.precision = precision_name(dtype)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16 and device.type == "cuda")

    task = _task_loss(torch.bincount(labels_all, minlength=adapted.num_classes), cfg).to(device)
    protocol = cfg.augment_protocol()
    train_data, breaking, result.augmentation = _augmented_inputs(train_set, preserving, breaking, protocol)
    breaking_loss = None
    if breaking is not None:
        from ..augment.breaking_loss import BreakingLoss

        breaking_loss = BreakingLoss(protocol.bank_batches, protocol.temperature).to(device)

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas), eps=cfg.eps)
    sched = _scheduler(opt, cfg, iterations)
    sampler = remedies.train_sampler(train_data, cfg)  # resample: class-balanced draws, else None (shuffle)
    train_iter = _cycle(_loader(train_data, cfg.batch_size, True, cfg.num_workers, cfg.seed, sampler))
    break_iter = _cycle(_loader(breaking, cfg.batch_size, True, cfg.num_workers, cfg.seed + 2)) if breaking is not None else None

    validate = _validator(adapted, val_set, cfg, dtype)
    kept = _KeptStates(adapted, result.selection, cfg.patience, validate())
    result.history.append({"step": 0, "loss": float("nan"), "lr": sched.get_last_lr()[0], "val": kept.best_seen})
    running: list[float] = []

    bar = tqdm(range(1, iterations + 1), desc=f"train {adapted.method}", disable=not cfg.progress)
    for step in bar:
        adapted.train()
        batch = next(train_iter)
        with autocast(device, dtype):
            loss = _batch_loss(adapted, batch, task, device)
            if break_iter is not None:
                view1, view2, _ = next(break_iter)
                loss = loss + protocol.breaking_lambda * breaking_loss(
                    adapted.encode_images(view1), adapted.encode_images(view2)
                )
        _optimiser_step(loss, opt, scaler, params, cfg.grad_clip)
        sched.step()
        running.append(float(loss.detach()))
        result.steps = step

        if step % cfg.eval_every == 0 or step == iterations:
            val = validate()
            mean_loss = float(np.mean(running)) if running else float("nan")
            running = []
            result.history.append({"step": step, "loss": mean_loss, "lr": sched.get_last_lr()[0], "val": val})
            bar.set_postfix(loss=f"{mean_loss:.3f}", val=f"{val:.3f}")
            if kept.validated(step, val):
                result.stopped_early = True
                break
    bar.close()
    _keep_selected(adapted, result, kept.states)
    remedies.after_training(adapted, train_set, cfg, result, validate, sampler)  # records; decouple's stage 2
    adapted.eval()
    result.seconds = time.time() - start
    return result


def _check_inputs(adapted: AdaptedCLIP, train_set: Dataset, breaking: Dataset | None) -> None:
    """Raise :class:`AdaptationError` for inputs the model cannot train on: label-breaking pairs without a
    trainable image tower, or a Meta-Adapter with ``exclude_query`` whose training set is not its support set."""
    if breaking is not None and not adapted.vision_trainable:
        raise AdaptationError(
            f"The breaking loss acts on image features, but {adapted.method} does not train the image tower; "
            "use LoRA or BitFit on the vision encoder, or drop the label-breaking images."
        )
    if adapted.meta_cfg is not None and adapted.meta_cfg.exclude_query and len(train_set) != len(adapted.support_labels):
        raise AdaptationError(
            f"Meta-Adapter with exclude_query needs the training set to be its support set "
            f"({len(train_set)} training items vs {len(adapted.support_labels)} support items); "
            "build the model with the same samples or set meta_cfg.exclude_query=False."
        )


def _task_loss(counts: torch.Tensor, cfg: TrainConfig) -> TaskLoss:
    """The run's :class:`TaskLoss` from the training set's class ``counts``: class-balanced weights and
    logit adjustment when ``cfg`` asks for them."""
    return TaskLoss(
        remedies.loss_weights(counts, cfg),  # balanced_loss: Cui et al.'s or inverse-frequency weights
        logit_adjustment(counts, cfg.logit_adjustment_tau) if cfg.logit_adjustment_tau > 0 else None,
    )


def _batch_loss(adapted: AdaptedCLIP, batch: list, task: TaskLoss, device: torch.device) -> torch.Tensor:
    """The task loss of one training batch ``(images, labels, indices[, sample weights])``."""
    images, labels, idx, *rest = batch
    labels = labels.to(device)
    weights = rest[0] if rest else None
    return task(adapted(images, query_indices=idx), labels, weights)


def _optimiser_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler, params: list[torch.Tensor],
                    grad_clip: float | None) -> None:
    """Backward pass and one (gradient-scaled, optionally clipped) optimiser step."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()


class _KeptStates:
    """The parameters a selection rule may come back to (the untrained ones and, with ``best_val``, the
    best trained ones so far) and the patience count of validations without a strict improvement."""

    def __init__(self, adapted: AdaptedCLIP, selection: str, patience: int | None, initial_val: float):
        self.adapted, self.selection, self.patience = adapted, selection, patience
        self.states = {0: adapted.trainable_state()}
        self.best_trained, self.best_seen = -math.inf, initial_val
        self.bad_evals = 0

    def validated(self, step: int, val: float) -> bool:
        """Record the validation score of ``step``; ``True`` when patience ran out (stop training)."""
        if self.selection == "best_val" and val >= self.best_trained:  # ties: the later step
            self.states = {0: self.states[0], step: self.adapted.trainable_state()}
            self.best_trained = val
        if val > self.best_seen or math.isnan(self.best_seen):
            self.best_seen, self.bad_evals = val, 0
            return False
        self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience


def _keep_selected(adapted: AdaptedCLIP, result: TrainResult, states: dict[int, dict[str, torch.Tensor]]) -> None:
    """Load the parameters the selection rule keeps and record the step, its score and how far each
    parameter group moved."""
    result.selected_step, result.selection_reason = select_checkpoint(result.history, result.selection)
    if result.selected_step != result.steps:
        adapted.load_trainable_state(states[result.selected_step])
    result.selected_val = next(h["val"] for h in result.history if h["step"] == result.selected_step)
    result.movement = parameter_movement(states[0], adapted.trainable_state(), adapted.parameter_group)
    result.unmoved = result.unmoved_groups()


def _augmented_inputs(train_set: Dataset, preserving: Dataset | None, breaking: Dataset | None,
                      protocol) -> tuple[Dataset, Dataset | None, dict[str, Any]]:
    """The training items and breaking pairs of an augmentation protocol, and what to record.

    Returns:
        ``(training items, breaking pairs, info)``: the items are ``train_set`` itself,
        :class:`~lowres_clip.augment.PreservingReplacement` (``replace``) or
        :class:`~lowres_clip.augment.PreservingExtension` (``extend``); a
        :class:`~lowres_clip.augment.BreakingPairDataset` gets the protocol's pairing.
    """
    if preserving is None and breaking is None:
        return train_set, None, {}
    info: dict[str, Any] = {"variant": protocol.variant}
    if preserving is not None:
        from ..augment import PreservingExtension, PreservingReplacement

        info.update(preserving_mode=protocol.preserving_mode, preserving_images=len(preserving))
        if protocol.preserving_mode == "replace":
            train_set = PreservingReplacement(train_set, preserving, protocol.preserving_p, protocol.preserving_weight)
            info.update(preserving_p=protocol.preserving_p, preserving_weight=protocol.preserving_weight)
        else:
            train_set = PreservingExtension(train_set, preserving)
    if breaking is not None:
        if hasattr(breaking, "with_pairing"):
            breaking = breaking.with_pairing(protocol.pairing)
        info.update(pairing=getattr(breaking, "pairing", "custom"), breaking_pairs=len(breaking),
                    breaking_strengths=getattr(breaking, "strengths", None), breaking_lambda=protocol.breaking_lambda,
                    bank_batches=protocol.bank_batches, temperature=protocol.temperature)
    return train_set, breaking, info


def _validator(adapted: AdaptedCLIP, val_set: Dataset | None, cfg: TrainConfig,
               dtype: torch.dtype | None) -> Callable[[], float]:
    """A function scoring the current parameters on ``val_set`` (NaN without one).

    When the image tower is frozen, validation image features are encoded once and reused.
    """
    if val_set is None:
        return lambda: float("nan")
    cached: dict[str, torch.Tensor] = {}

    def score() -> float:
        adapted.refresh()
        if adapted.vision_trainable or not cached:
            out = evaluate(adapted, val_set, cfg.eval_batch_size, cfg.precision, cfg.num_workers,
                           progress=False, desc="validate")
            if not adapted.vision_trainable:
                cached.update(features=out["features"], labels=out["labels"])
            logits, labels = out["logits"], out["labels"]
        else:
            adapted.eval()
            with torch.no_grad():
                logits = adapted.logits_from_features(cached["features"]).cpu()
            labels = cached["labels"]
        return _metric(logits, labels, cfg.select_metric)

    return score
