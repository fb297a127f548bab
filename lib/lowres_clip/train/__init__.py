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

Modules: :mod:`.loop` (:func:`train`, :class:`TrainResult`), :mod:`.losses`, :mod:`.transforms`,
:mod:`.loaders`, :mod:`.evaluation`, :mod:`.selection` (:func:`select_checkpoint`), :mod:`.movement`
(:func:`parameter_movement`), :mod:`.checkpoints` (:func:`save_trained`, :func:`load_trained`).
"""

from __future__ import annotations

from .movement import MOVED_THRESHOLD, parameter_movement
from .selection import select_checkpoint
from .transforms import train_transform
from .losses import TaskLoss, class_balanced_weights, logit_adjustment
from .loaders import dataset_labels
from .evaluation import evaluate, evaluate_features
from .loop import TrainResult, resolve_iterations, train
from .checkpoints import CHECKPOINT_FORMAT, CheckpointMismatchError, load_trained, save_trained
from ..methods.zero_shot import LOGIT_SCALE, cosine_logits
from ..settings import (
    SELECT_METRICS, SELECTIONS, BitFitConfig, LoraConfig, MetaAdapterConfig, TrainConfig,
)

__all__ = [
    "BitFitConfig", "CHECKPOINT_FORMAT", "CheckpointMismatchError", "class_balanced_weights", "cosine_logits",
    "dataset_labels", "evaluate", "evaluate_features", "load_trained", "logit_adjustment",
    "LOGIT_SCALE", "LoraConfig", "MetaAdapterConfig", "MOVED_THRESHOLD", "parameter_movement",
    "resolve_iterations", "save_trained", "select_checkpoint", "SELECT_METRICS", "SELECTIONS", "TaskLoss",
    "train", "train_transform", "TrainConfig", "TrainResult",
]
