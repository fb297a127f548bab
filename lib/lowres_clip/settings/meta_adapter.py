"""Meta-Adapter settings, its reference training protocol and its two budgets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .base import AdaptationError, added_field
from .training import TrainConfig

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
