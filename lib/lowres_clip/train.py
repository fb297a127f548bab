"""The one training loop for every adapted method, evaluation, and trained-checkpoint files.

Defaults follow CLIP-LoRA (Zanella & Ben Ayed, 2024): AdamW (weight decay 0.01, betas 0.9/0.999),
lr 2e-4, batch 32, ``500 x K`` iterations (K = shots per class, read from the training set),
cosine schedule down to 1e-6 (optional linear warm-up), RandomResizedCrop (scale 0.08-1) +
horizontal flip at the model's input size (:func:`train_transform`), cross-entropy on
``100 * cos`` logits. Mixed precision follows :func:`lowres_clip.utils.resolve_precision`.

Which parameters are kept is ``cfg.selection`` (:func:`select_checkpoint`): ``last`` keeps the
final ones (CLIP-LoRA's released code, ``VALIDATION = False``; CoOp); ``best_val`` keeps those with
the best validation score, ties going to the later step and the untrained step 0 kept only when it
is strictly better than every trained checkpoint (the result says so). Either way the trained
parameters are scored on ``val_set`` every ``eval_every`` steps (and before the first step, and
after the last) for the history; with ``best_val``, ``patience`` validations without a strict
improvement stop early. With a Meta-Adapter on a trained image tower, the support features are
re-encoded at every validation and at the end. The Meta-Adapter alone trains with its own
protocol (``MetaAdapterConfig.train``) under ``MetaAdapterConfig.budget == "reference"``, with the
run's settings under ``"run"``: each part's training protocol of the method registry
(:func:`lowres_clip.registry.effective_train`, :meth:`lowres_clip.settings.MetaAdapterConfig.train_protocol`).
A run passes :meth:`lowres_clip.config.RunConfig.train_settings` (the run's seed and augmentation
variant in it).

Every result says how far each group of trained parameters moved from its initial values
(:func:`parameter_movement`: norm of the change, relative to the initial norm), for the parameters
the selection rule kept, and names the groups that did not move.

Optional, off by default: class-balanced loss weights (Cui et al., 2019, effective number
``(1 - beta^n) / (1 - beta)``) and the logit-adjusted loss (Menon et al., 2021,
``logits + tau * log prior`` in training only).

Generated images (see :mod:`lowres_clip.augment`) enter as ``cfg.augment_variant`` says
(:class:`lowres_clip.settings.AugmentProtocol`). ``lrv``: each training image is replaced with
probability ``preserving_p`` by one of its label-preserving images weighted ``preserving_weight``,
and the cross-entropy is the weighted mean ``sum(w l) / sum(w)``
(:class:`~lowres_clip.augment.PreservingReplacement`); label-breaking pairs are a breaking image and
an augmented copy of it. ``seed``: the label-preserving images are extra training items of weight 1
(:class:`~lowres_clip.augment.PreservingExtension`); pairs are two breaking images of one source.
Each step adds ``breaking_lambda * BreakingLoss(f(view1), f(view2))`` (Zhang et al., 2024) on the
adapted image features of a batch of pairs, with a memory bank of the last ``bank_batches`` batches.

Checkpoints (:func:`save_trained` / :func:`load_trained`) hold only the trained parameters (plus
the Meta-Adapter's support features), the method configuration and the base model's identity; they
are rebuilt on a freshly loaded base model.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .atomic import atomic_write
from .methods.adapted import AdaptedCLIP, SupportFeatures, build_adapted, adapter_parts
from .methods.lora import merged_lora
from .methods import remedies
from .settings import (  # noqa: F401
    SELECT_METRICS,
    SELECTIONS,
    BitFitConfig,
    LoraConfig,
    MetaAdapterConfig,
    TrainConfig,
)
from . import registry
from .methods.zero_shot import LOGIT_SCALE, cosine_logits
from .config import _jsonable
from .spec import weights_id
from .numerics import precision_name
from .utils import AdaptationError, autocast, resolve_precision, seed_everything

CHECKPOINT_FORMAT = "lowres_clip.trained/1"
MOVED_THRESHOLD = 1e-6
"""A parameter group whose change is at most this (relative to its initial norm; absolute for groups
that start at zero) counts as not moved (:meth:`TrainResult.unmoved`)."""


class CheckpointMismatchError(AdaptationError):
    """A trained checkpoint does not belong to the given base model or method."""



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
        unmoved: the groups that did not move (:data:`MOVED_THRESHOLD`; :meth:`unmoved_groups`).
        remedies: what each long-tail remedy of the method did (:mod:`lowres_clip.methods.remedies`).
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


def select_checkpoint(history: list[dict[str, float]], rule: str) -> tuple[int, str]:
    """The step whose parameters a selection rule keeps, and why.

    Args:
        history: the validations ``{"step", "val", ...}`` in step order; the first is step 0 (the
            initial parameters), the last the final step.
        rule: ``last`` or ``best_val`` (see :class:`~lowres_clip.settings.TrainConfig`).

    Returns:
        ``(step, reason)``. ``best_val``: the trained step (> 0) with the highest score, the latest
        of equal ones; step 0 only when its score is strictly higher than every trained step's.
        Without scores (NaN: no validation split) or with ``last``: the final step.
    """
    if rule not in SELECTIONS:
        raise AdaptationError(f"Unknown selection {rule!r}; choose one of {SELECTIONS}.")
    final = history[-1]["step"]
    if rule == "last":
        return final, f"selection 'last': the final parameters (step {final})"
    trained = [h for h in history if h["step"] > 0 and not math.isnan(h["val"])]
    if not trained:
        return final, f"no validation score: the final parameters (step {final})"
    best = max(h["val"] for h in trained)
    step = max(h["step"] for h in trained if h["val"] == best)
    initial = history[0]["val"] if history[0]["step"] == 0 else float("nan")
    if not math.isnan(initial) and initial > best:
        return 0, (f"the untrained parameters (step 0, val {initial:.4f}) are strictly better than every trained "
                   f"checkpoint (best {best:.4f} at step {step})")
    return step, f"best validation score {best:.4f} at step {step} (ties go to the later step)"


# ----------------------------------------------------------------------------- data helpers
def _find_normalize(transform: Callable):
    from torchvision import transforms as T

    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, T.Normalize):
            return t
    return None


def train_transform(bundle, scale: tuple[float, float] = (0.08, 1.0)) -> Callable:
    """CLIP-LoRA's training augmentation at the bundle's input size and normalisation:
    ``RandomResizedCrop(size, scale, bicubic)``, horizontal flip, to tensor, normalise.

    ``scale``: the crop's area range; a run's is ``cfg.effective_train().crop_scale`` (CLIP-LoRA
    0.08-1; the Meta-Adapter reference 0.5-1)."""
    from torchvision import transforms as T

    norm = _find_normalize(bundle.preprocess_eval)
    if norm is None:
        raise AdaptationError("Cannot find the Normalize step in the bundle's evaluation transform.")
    return T.Compose([
        T.RandomResizedCrop(bundle.image_size, scale=tuple(scale), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(norm.mean, norm.std),
    ])


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Labels ``[N]`` of a dataset (from ``.samples`` when present, else by iterating it)."""
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return torch.tensor([int(s.label) for s in samples], dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


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


def _cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int, sampler=None) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=num_workers, drop_last=False,
        generator=torch.Generator().manual_seed(seed), worker_init_fn=_seed_worker,
        persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
    )


def _metric(logits: torch.Tensor, labels: torch.Tensor, name: str) -> float:
    pred = logits.argmax(dim=1).cpu()
    labels = labels.cpu()
    correct = (pred == labels).float()
    if name == "accuracy":
        return float(correct.mean())
    per_class = [correct[labels == c].mean() for c in labels.unique()]
    return float(torch.stack(per_class).mean())


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    adapted: AdaptedCLIP,
    dataset: Dataset,
    batch_size: int = 64,
    precision: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[str, torch.Tensor]:
    """Logits, labels and (adapted, L2-normalised) image features of every item of ``dataset``.

    Returns:
        ``{"logits": [N, C], "labels": [N], "features": [N, D], "indices": [N], "text": [C, D]}``
        (float32, on CPU; ``text``: the class embeddings the logits compare with).
    """
    dtype = resolve_precision(precision, adapted.device)
    was_training = adapted.training
    adapted.eval()
    out: dict[str, list[torch.Tensor]] = {"logits": [], "labels": [], "features": [], "indices": []}
    loader = _loader(dataset, batch_size, False, num_workers, 0)
    with merged_lora(adapted.model):  # the same function, one product per adapted layer
        classifier = adapted.classifier()
        for images, labels, idx in tqdm(loader, desc=desc, disable=not progress, leave=False):
            with autocast(adapted.device, dtype):
                feats = adapted.encode_images(images)
            out["features"].append(feats.float().cpu())
            out["logits"].append(cosine_logits(feats, classifier, LOGIT_SCALE).cpu())
            out["labels"].append(torch.as_tensor(labels).long())
            out["indices"].append(torch.as_tensor(idx).long())
    adapted.train(was_training)
    result = {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}
    result["text"] = classifier.float().cpu()
    return result


def evaluate_features(adapted: AdaptedCLIP, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Like :func:`evaluate` from cached image features (only for frozen encoders: zero-shot, Meta-Adapter).

    Raises:
        AdaptationError: the adapted model changes an encoder, so cached base features do not apply.
    """
    if not adapted.encoders_frozen:
        raise AdaptationError(
            f"{adapted.method} adapts an encoder; cached base-model features cannot be used. Use evaluate()."
        )
    was_training = adapted.training
    adapted.eval()
    with torch.no_grad():
        logits = adapted.logits_from_features(features).cpu()
        text = adapted.classifier().float().cpu()
    adapted.train(was_training)
    return {"logits": logits, "labels": torch.as_tensor(labels).long(), "features": features.float().cpu(),
            "indices": torch.arange(len(features)), "text": text}


# ----------------------------------------------------------------------------- training
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
    seed_everything(cfg.seed)
    device = adapted.device
    dtype = resolve_precision(cfg.precision, device)
    result.precision = precision_name(dtype)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16 and device.type == "cuda")

    counts = torch.bincount(labels_all, minlength=adapted.num_classes)
    task = TaskLoss(
        remedies.loss_weights(counts, cfg),  # balanced_loss: Cui et al.'s or inverse-frequency weights
        logit_adjustment(counts, cfg.logit_adjustment_tau) if cfg.logit_adjustment_tau > 0 else None,
    ).to(device)
    protocol = cfg.augment_protocol()
    train_data, breaking, result.augmentation = _augmented_inputs(train_set, preserving, breaking, protocol)
    breaking_loss = None
    if breaking is not None:
        from .augment.breaking_loss import BreakingLoss

        breaking_loss = BreakingLoss(protocol.bank_batches, protocol.temperature).to(device)

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas), eps=cfg.eps)
    sched = _scheduler(opt, cfg, iterations)
    sampler = remedies.train_sampler(train_data, cfg)  # resample: class-balanced draws, else None (shuffle)
    train_iter = _cycle(_loader(train_data, cfg.batch_size, True, cfg.num_workers, cfg.seed, sampler))
    break_iter = _cycle(_loader(breaking, cfg.batch_size, True, cfg.num_workers, cfg.seed + 2)) if breaking is not None else None

    validate = _validator(adapted, val_set, cfg, dtype)
    states = {0: adapted.trainable_state()}  # the untrained parameters and the best trained ones so far
    best_trained, best_seen = -math.inf, validate()
    result.history.append({"step": 0, "loss": float("nan"), "lr": sched.get_last_lr()[0], "val": best_seen})
    bad_evals, running = 0, []

    bar = tqdm(range(1, iterations + 1), desc=f"train {adapted.method}", disable=not cfg.progress)
    for step in bar:
        adapted.train()
        images, labels, idx, *rest = next(train_iter)
        labels = labels.to(device)
        weights = rest[0] if rest else None
        with autocast(device, dtype):
            loss = task(adapted(images, query_indices=idx), labels, weights)
            if break_iter is not None:
                view1, view2, _ = next(break_iter)
                loss = loss + protocol.breaking_lambda * breaking_loss(
                    adapted.encode_images(view1), adapted.encode_images(view2)
                )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        running.append(float(loss.detach()))
        result.steps = step

        if step % cfg.eval_every == 0 or step == iterations:
            val = validate()
            mean_loss = float(np.mean(running)) if running else float("nan")
            running = []
            result.history.append({"step": step, "loss": mean_loss, "lr": sched.get_last_lr()[0], "val": val})
            bar.set_postfix(loss=f"{mean_loss:.3f}", val=f"{val:.3f}")
            if result.selection == "best_val" and val >= best_trained:  # ties: the later step
                states = {0: states[0], step: adapted.trainable_state()}
                best_trained = val
            if val > best_seen or math.isnan(best_seen):
                best_seen, bad_evals = val, 0
            else:
                bad_evals += 1
                if cfg.patience is not None and bad_evals >= cfg.patience:
                    result.stopped_early = True
                    break
    bar.close()
    result.selected_step, result.selection_reason = select_checkpoint(result.history, result.selection)
    if result.selected_step != result.steps:
        adapted.load_trainable_state(states[result.selected_step])
    result.selected_val = next(h["val"] for h in result.history if h["step"] == result.selected_step)
    result.movement = parameter_movement(states[0], adapted.trainable_state(), adapted.parameter_group)
    result.unmoved = result.unmoved_groups()
    remedies.after_training(adapted, train_set, cfg, result, validate, sampler)  # records; decouple's stage 2
    adapted.eval()
    result.seconds = time.time() - start
    return result


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
        from .augment import PreservingExtension, PreservingReplacement

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


# ----------------------------------------------------------------------------- checkpoints
def save_trained(adapted: AdaptedCLIP, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the trained parameters, method configuration and base-model identity to ``path``.

    Args:
        adapted: the trained model.
        path: output file (``.pt``); written atomically.
        meta: anything else to keep, e.g. ``{"train_config": asdict(cfg), "seed": cfg.seed, "run_key": key}``.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": adapted.config(),
        "weights_id": weights_id(adapted.weights),
        "base_fingerprint": adapted.base_fingerprint,
        "params": {n: t.cpu() for n, t in adapted.trainable_state().items()},
        "support": None,
        "meta": dict(meta or {}),
    }
    if adapted.meta_adapter is not None:
        payload["support"] = {"features": adapted.support_features.cpu(), "labels": adapted.support_labels.cpu()}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_trained(bundle, path: str | Path, method: str | None = None) -> AdaptedCLIP:
    """Rebuild a trained model from :func:`save_trained`'s file on a freshly loaded base model.

    Args:
        bundle: the base model the checkpoint was trained from (same name and weights).
        path: the checkpoint file.
        method: if given, the method the checkpoint must hold.

    Returns:
        the :class:`AdaptedCLIP` in eval mode; the checkpoint's ``meta`` is in ``.checkpoint_meta``.

    Raises:
        CheckpointMismatchError: not a checkpoint of this format, another base model or weights,
            or another method.
    """
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # missing file, not a torch file, unpickling refused...
        raise CheckpointMismatchError(f"Cannot read trained checkpoint '{path}': {type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"'{path}' is not a lowres_clip trained checkpoint ({CHECKPOINT_FORMAT}).")
    c = ckpt["config"]
    if c["model_name"] != bundle.model_name or ckpt["weights_id"] != bundle.weights_id:
        raise CheckpointMismatchError(
            f"'{path}' was trained on {c['model_name']} ({ckpt['weights_id']}), not on the given "
            f"{bundle.model_name} ({bundle.weights_id}); load that base model first."
        )
    if method is not None and adapter_parts(method) != adapter_parts(c["method"]):
        raise CheckpointMismatchError(f"'{path}' holds method {c['method']!r}, not {method!r}.")
    support = None
    if ckpt.get("support") is not None:
        support = SupportFeatures(ckpt["support"]["features"], ckpt["support"]["labels"])
    settings = {name: registry.get(name).config_class(**values)
                for name, values in (c.get("settings") or {}).items() if values is not None}
    adapted = build_adapted(
        bundle, c["classnames"], c["templates"], c["method"],
        lora_cfg=LoraConfig(**c["lora_cfg"]) if c["lora_cfg"] else None,
        bitfit_cfg=BitFitConfig(**c["bitfit_cfg"]) if c["bitfit_cfg"] else None,
        meta_cfg=MetaAdapterConfig(**c["meta_cfg"]) if c["meta_cfg"] else None,
        support=support, seed=c["seed"], settings=settings,
    )
    saved_fp, fresh_fp = ckpt.get("base_fingerprint"), adapted.base_fingerprint
    if saved_fp is not None and (saved_fp.shape != fresh_fp.shape or not torch.allclose(saved_fp, fresh_fp, rtol=1e-6, atol=1e-8)):
        raise CheckpointMismatchError(
            f"'{path}' was trained on {c['model_name']} ({ckpt['weights_id']}) with other base weights than the "
            "given bundle's (e.g. another random initialisation or checkpoint file); load the same base weights."
        )
    try:
        adapted.load_trainable_state(ckpt["params"])
    except AdaptationError as exc:
        raise CheckpointMismatchError(f"'{path}': {exc}") from exc
    adapted.eval()
    adapted.checkpoint_meta = ckpt["meta"]
    return adapted

