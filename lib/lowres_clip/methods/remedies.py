"""Long-tail remedies: training options that combine with any trained method (``lora+la``).

Each remedy is one settings dataclass (:mod:`lowres_clip.settings`: its ``train_protocol`` sets the
training loop's fields), one registry row (role ``remedy``, :mod:`lowres_clip.registry`) and its
logic here; the training loop (:func:`lowres_clip.train.train`) calls in three places:

- ``resample`` (Kang et al., ICLR 2020): :func:`train_sampler` replaces shuffling by a seeded
  :class:`torch.utils.data.WeightedRandomSampler` (with replacement, ``len(dataset)`` draws per pass,
  per-item weight ``n_c^(q-1)``, so class ``c`` is drawn with probability ``p_c ∝ n_c^q``); the number
  of iterations is unchanged.
- ``reweight``: :func:`loss_weights` gives the cross-entropy's class weights (``TaskLoss.weights``):
  ``inverse`` ``∝ 1/n_c`` or ``effective`` (Cui et al., CVPR 2019) ``∝ (1-beta)/(1-beta^n_c)``, both
  normalised to ``sum_c w_c = C`` over the present classes.
- ``la`` (Menon et al., ICLR 2021): the loop's existing ``logit_adjustment_tau`` (training logits
  ``+ tau log pi_c``); nothing here but its record.
- ``decouple`` (Kang et al. 2020, cRT): after the loop, :func:`retrain_classifier_stage` keeps the
  representation fixed and re-trains only the class embeddings with class-balanced sampling
  (:func:`retrain_classifier`); the model then classifies with them
  (:attr:`~lowres_clip.methods.adapted.AdaptedCLIP.classifier_override`, kept in checkpoints).

After the loop :func:`after_training` asks each remedy of the model (its registry ``after_train``)
what it did; the answers go to ``TrainResult.remedies`` (a record's ``extra.train.remedies``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from .. import registry
from ..settings import REWEIGHT_KINDS, AdaptationError, DecoupleConfig, TrainConfig
from ..utils import autocast, resolve_precision
from .zero_shot import LOGIT_SCALE, cosine_logits

STAGE_SEED_OFFSET = 3  # stage 2's seeds: the loop's seed + this (the loop uses +0 for data, +2 for breaking pairs)


# ----------------------------------------------------------------------------- labels and counts
def item_labels(dataset: Any) -> torch.Tensor:
    """Labels ``[N]`` of the items a training loader draws from, without loading images where the
    dataset says them (``samples``; the augmentation wrappers' ``train_set`` / ``preserving``)."""
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return torch.tensor([int(s.label) for s in samples], dtype=torch.long)
    base, extra = getattr(dataset, "train_set", None), getattr(dataset, "preserving", None)
    if base is not None:
        labels = item_labels(base)
        if extra is not None and len(dataset) == len(base) + len(extra):  # PreservingExtension
            labels = torch.cat([labels, item_labels(extra)])
        if len(labels) == len(dataset):
            return labels
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


# ----------------------------------------------------------------------------- resample
def class_probabilities(counts: torch.Tensor, q: float) -> torch.Tensor:
    """``p_c = n_c^q / sum_j n_j^q`` over present classes (absent: 0), float64."""
    counts = counts.double()
    present = counts > 0
    p = torch.zeros_like(counts)
    p[present] = counts[present].pow(q)
    return p / p.sum()


def sample_weights(labels: torch.Tensor, q: float, num_classes: int | None = None) -> torch.Tensor:
    """Per-item weights ``n_{y_i}^(q-1)`` (float64): with them a class is drawn with ``p_c ∝ n_c^q``."""
    counts = torch.bincount(labels, minlength=num_classes or 0).double()
    return counts[labels].pow(q - 1.0)


class CountingSampler(WeightedRandomSampler):
    """A :class:`WeightedRandomSampler` that counts the classes of the indices it hands out
    (what a record says was drawn, the loader's prefetching included)."""

    def __init__(self, weights: torch.Tensor, num_samples: int, labels: torch.Tensor, generator: torch.Generator):
        super().__init__(weights, num_samples, replacement=True, generator=generator)
        self.labels = labels
        self.drawn = torch.zeros(int(labels.max()) + 1 if len(labels) else 0, dtype=torch.long)

    def __iter__(self):
        for i in super().__iter__():
            self.drawn[self.labels[i]] += 1
            yield i


def balanced_sampler(labels: torch.Tensor, q: float, seed: int) -> CountingSampler:
    """A seeded sampler drawing ``len(labels)`` items per pass, with replacement, class ``c`` with
    probability ``∝ n_c^q`` (Kang et al. 2020; ``q = 0``: class-balanced)."""
    return CountingSampler(sample_weights(labels, q), len(labels), labels, torch.Generator().manual_seed(seed))


def train_sampler(dataset: Dataset, cfg: TrainConfig) -> CountingSampler | None:
    """The training loader's sampler: ``None`` (shuffle) unless ``cfg.resample_q`` is set."""
    if cfg.resample_q is None:
        return None
    return balanced_sampler(item_labels(dataset), cfg.resample_q, cfg.seed)


# ----------------------------------------------------------------------------- reweight
def class_weights(counts: torch.Tensor, kind: str = "effective", beta: float = 0.999) -> torch.Tensor:
    """Class weights of the cross-entropy, ``sum_c w_c = C`` over present classes (absent: 0):
    ``inverse`` ``∝ 1 / n_c``; ``effective`` ``∝ (1 - beta) / (1 - beta^n_c)`` (Cui et al. 2019; the
    same numbers as :func:`lowres_clip.train.class_balanced_weights`)."""
    if kind not in REWEIGHT_KINDS:
        raise AdaptationError(f"class weights: kind must be one of {REWEIGHT_KINDS}, got {kind!r}.")
    counts = counts.double()
    present = counts > 0
    w = torch.zeros_like(counts)
    if kind == "inverse":
        w[present] = 1.0 / counts[present]
    else:
        w[present] = (1 - beta) / (1 - torch.pow(beta, counts[present]))
    w = w / w.sum() * present.sum()
    return w.float()


def loss_weights(counts: torch.Tensor, cfg: TrainConfig) -> torch.Tensor | None:
    """The training loop's class weights: ``None`` unless ``cfg.balanced_loss``."""
    return class_weights(counts, cfg.balanced_weights, cfg.balanced_beta) if cfg.balanced_loss else None


# ----------------------------------------------------------------------------- after the loop
@dataclass
class Stage:
    """What the training loop hands the remedies after its loop.

    Attributes:
        train_set: the training images (training transform), ``(image, label, index)``.
        cfg: the loop's settings (every part's ``train_protocol`` applied).
        counts: training images per class ``[C]``.
        validate: scores the current model on the validation split (NaN without one).
        sampler: the training loader's sampler (``resample``), else ``None``.
    """

    train_set: Dataset
    cfg: TrainConfig
    counts: torch.Tensor
    validate: Callable[[], float]
    sampler: CountingSampler | None = None


def after_training(adapted, train_set: Dataset, cfg: TrainConfig, result, validate: Callable[[], float],
                   sampler: CountingSampler | None = None) -> None:
    """Call each part's registry ``after_train`` (the remedies') in label order; record what each
    did in ``result.remedies[name]``."""
    stage = Stage(train_set, cfg, torch.bincount(item_labels(train_set), minlength=adapted.num_classes), validate, sampler)
    for entry in adapted.entries:
        hook = registry.resolve(entry.after_train)
        if hook is not None:
            result.remedies[entry.name] = hook(adapted, adapted.settings[entry.name], stage)


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t]


def record_resample(adapted, settings, stage: Stage) -> dict[str, Any]:
    """What ``resample`` did: the sampler, the per-class probabilities and what was drawn."""
    labels = stage.sampler.labels if stage.sampler is not None else item_labels(stage.train_set)
    counts = torch.bincount(labels, minlength=adapted.num_classes)
    return {"q": stage.cfg.resample_q, "sampler": "WeightedRandomSampler(replacement=True, weight n_c^(q-1), seed)",
            "class_counts": [int(c) for c in counts], "class_probabilities": _floats(class_probabilities(counts, stage.cfg.resample_q)),
            "drawn": [] if stage.sampler is None else [int(c) for c in stage.sampler.drawn]}


def record_reweight(adapted, settings, stage: Stage) -> dict[str, Any]:
    """What ``reweight`` did: the kind, beta and the class weights of the cross-entropy."""
    cfg = stage.cfg
    return {"kind": cfg.balanced_weights, "beta": cfg.balanced_beta if cfg.balanced_weights == "effective" else None,
            "class_counts": [int(c) for c in stage.counts],
            "class_weights": _floats(class_weights(stage.counts, cfg.balanced_weights, cfg.balanced_beta))}


def record_la(adapted, settings, stage: Stage) -> dict[str, Any]:
    """What ``la`` did: tau and the training-logit offsets ``tau * log(n_c / N)``."""
    tau = stage.cfg.logit_adjustment_tau
    prior = stage.counts.double() / stage.counts.sum()
    return {"tau": tau, "class_counts": [int(c) for c in stage.counts],
            "offsets": _floats(tau * torch.log(prior.clamp_min(1e-8)))}


# ----------------------------------------------------------------------------- decouple
def balanced_loss(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor,
                  scale: float = LOGIT_SCALE) -> float:
    """The class-balanced cross-entropy ``mean_c mean_{i: y_i = c} CE_i`` (present classes): the
    expectation of the loss class-balanced sampling trains."""
    with torch.no_grad():
        ce = F.cross_entropy(cosine_logits(features, classifier, scale), labels, reduction="none")
        return float(torch.stack([ce[labels == c].mean() for c in labels.unique()]).mean())


def balanced_accuracy(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> float:
    """Mean per-class recall of the cosine classifier on ``features`` (present classes)."""
    with torch.no_grad():
        correct = (cosine_logits(features, classifier).argmax(1) == labels).float()
        return float(torch.stack([correct[labels == c].mean() for c in labels.unique()]).mean())


def retrain_classifier(features: torch.Tensor, labels: torch.Tensor, init: torch.Tensor, iterations: int = 100,
                       lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
                       scale: float = LOGIT_SCALE) -> tuple[torch.Tensor, dict[str, Any]]:
    """cRT on fixed features: learn class embeddings ``[C, D]`` from ``init`` by cross-entropy on
    ``scale * cos(feature, class)`` logits, batches of ``batch_size`` drawn with replacement,
    class-balanced (``p_c = 1/C``, seeded), AdamW (no weight decay, constant ``lr``).

    Returns:
        the L2-normalised class embeddings and what happened: class-balanced loss and balanced
        accuracy on ``features`` before / after, and how far the (normalised) embeddings moved
        (``change_norm`` ``||W1 - W0||_F``, ``relative`` to ``||W0||_F``, mean row cosine).
    """
    device = init.device
    feats = F.normalize(features.detach().float().to(device), dim=-1)
    labels = labels.long().to(device)
    w0 = F.normalize(init.detach().float(), dim=-1)
    w = torch.nn.Parameter(w0.clone())
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=0.0)
    draw = sample_weights(labels.cpu(), 0.0)
    g = torch.Generator().manual_seed(seed)
    info: dict[str, Any] = {"iterations": int(iterations), "lr": float(lr), "batch_size": int(batch_size),
                            "features": int(len(feats)), "sampling": "class-balanced (p_c = 1/C, with replacement)",
                            "loss_before": balanced_loss(feats, labels, w0, scale),
                            "balanced_accuracy_before": balanced_accuracy(feats, labels, w0)}
    with torch.enable_grad():
        for _ in range(iterations):
            idx = torch.multinomial(draw, batch_size, replacement=True, generator=g).to(device)
            loss = F.cross_entropy(cosine_logits(feats[idx], w, scale), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    w1 = F.normalize(w.detach(), dim=-1)
    change = float((w1 - w0).double().norm())
    info.update(loss_after=balanced_loss(feats, labels, w1, scale), balanced_accuracy_after=balanced_accuracy(feats, labels, w1),
                change_norm=change, relative=change / float(w0.double().norm()),
                mean_cosine_to_initial=float((w1 * w0).sum(1).mean()))
    return w1, info


@torch.no_grad()
def stage_features(adapted, dataset: Dataset, views: int, batch_size: int, precision: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image features ``[views * N, D]`` (L2-normalised, float32) and labels of ``dataset`` through
    the trained model in eval mode, ``views`` passes of its (random, training) transform, seeded."""
    was_training = adapted.training
    adapted.eval()
    dtype = resolve_precision(precision, adapted.device)
    feats, labels = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(views):
            for images, y, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                with autocast(adapted.device, dtype):
                    feats.append(adapted.encode_images(images).float())
                labels.append(torch.as_tensor(y).long())
    adapted.train(was_training)
    return torch.cat(feats), torch.cat(labels).to(adapted.device)


def retrain_classifier_stage(adapted, settings: DecoupleConfig, stage: Stage) -> dict[str, Any]:
    """``decouple``'s second stage: features of the training images (training transform, eval
    mode, :func:`stage_features`), :func:`retrain_classifier` from the current classifier, then the
    model classifies with the result (``adapted.classifier_override``). Returns what it did (with
    the validation score before and after)."""
    start = time.time()
    cfg = stage.cfg
    seed = cfg.seed + STAGE_SEED_OFFSET
    feats, labels = stage_features(adapted, stage.train_set, settings.views, cfg.eval_batch_size, cfg.precision, seed)
    adapted.eval()
    val_before = stage.validate()
    init = adapted.classifier().detach().float()
    new, info = retrain_classifier(feats, labels, init, settings.iterations, settings.lr,
                                   settings.batch_size or cfg.batch_size, seed)
    adapted.classifier_override = new
    info.update(stage="classifier re-training on fixed features (cRT)", views=settings.views,
                transform="training (random crop + flip), eval mode", val_before=val_before,
                val_after=stage.validate(), seconds=time.time() - start)
    return info
