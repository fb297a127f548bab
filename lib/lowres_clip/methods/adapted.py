"""``AdaptedCLIP``: one module for zero-shot CLIP and any combination of LoRA, BitFit, Meta-Adapter.

``forward(images) -> logits [B, C]`` = ``100 * cos(image feature, class embedding)`` where the
image feature comes from the (LoRA/BitFit-adapted) image tower and the class embeddings from the
(adapted) text tower through :func:`lowres_clip.features.encode_text_classifier`, optionally
refined by the Meta-Adapter with the support set. Build it with :func:`build_adapted` from a
method string; parts are combined in the fixed order ``lora+bitfit+meta_adapter``. What each part
does is asked of the method registry (:mod:`lowres_clip.registry`): its ``apply`` changes the
encoders and names the parameters to train, its ``head`` (the Meta-Adapter) refines the class
embeddings on top of the features, its ``parameter_group`` names the trained parameters it owns;
this module names no method.

Text classifier: when the text tower has trainable parameters, prompts are re-encoded at every
training step (with gradients); otherwise the classifier is computed once and cached. The cache is
marked stale whenever the module enters training mode or trainable weights are loaded, and is
recomputed on the next evaluation call.

Train/eval modes: pretrained layers always run in eval mode (frozen BatchNorm statistics, no
pretrained dropout), so only the trained parameters change what the model computes; the adapters'
own dropout (LoRA, Meta-Adapter) follows ``train()`` / ``eval()``.

Methods that leave the encoders unchanged (zero-shot, Meta-Adapter) also work from cached image
features: :meth:`AdaptedCLIP.logits_from_features`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..features import encode_text_classifier
from .. import registry
from ..settings import ConfigError
from ..utils import AdaptationError, count_parameters, tower_of
from ..settings import BitFitConfig, LoraConfig, MetaAdapterConfig
from .lora import set_lora_dropout_mode
from .meta_adapter import MetaAdapter, PackedSupport, episode_mask, pack_support
from .zero_shot import LOGIT_SCALE, cosine_logits

ZERO_SHOT = registry.ZERO_SHOT
CLASSIFIER_OVERRIDE = "classifier_override"
"""The buffer (and trained-state key) of class embeddings learned after training, which
:meth:`AdaptedCLIP.classifier` returns when set (the ``decouple`` remedy)."""


class UnknownMethodError(AdaptationError):
    """A method string names an unknown or impossible combination."""


def adapter_parts(method: str) -> tuple[str, ...]:
    """The parts of ``method`` that act on the model or on its training, in registry order (``()``
    for ``zero_shot``, which the registry runs as an AdaptedCLIP with nothing applied; long-tail
    remedies, role ``remedy``, last), as :func:`lowres_clip.registry.parse_method` reads them.

    Raises:
        UnknownMethodError: what the registry refuses, or a method another runner makes (the
            linear probe on cached features: :mod:`lowres_clip.methods.linear_probe`).
    """
    try:
        parts = registry.parse_method(str(method))
    except ConfigError as exc:
        raise UnknownMethodError(str(exc)) from exc
    entries = [registry.get(p) for p in parts]
    if not all(e.runner == "adapted" for e in entries):
        raise UnknownMethodError(
            f"{method} is not an AdaptedCLIP method; fit the linear probe on cached features with "
            "lowres_clip.methods.linear_probe.fit_linear_probe."
        )
    heads = [e.name for e in entries if e.head is not None]
    if len(heads) > 1:
        raise UnknownMethodError(f"{method}: {heads} each put a head on the features; combine at most one.")
    return tuple(e.name for e in entries if e.apply is not None or e.head is not None or e.role == registry.REMEDY)


def weights_fingerprint(model: nn.Module) -> torch.Tensor:
    """Per-tensor ``(sum, sum of squares)`` in float64 of a model's weights, ``[P, 2]`` on CPU.

    Stored in checkpoints, so that loading onto a base model with other weights (e.g. another
    random initialisation, or another checkpoint file) is refused instead of silently giving other
    logits.
    """
    with torch.no_grad():
        return torch.stack([torch.stack([p.double().sum(), p.double().pow(2).sum()])
                            for p in model.parameters()]).cpu()


def method_name(parts: Sequence[str]) -> str:
    """Canonical method string of ``parts`` (``zero_shot`` when empty)."""
    return "+".join(parts) if parts else ZERO_SHOT


@dataclass
class SupportFeatures:
    """Support features already encoded by *this* adapted image tower (e.g. read from a checkpoint).

    Unlike a plain ``(features, labels)`` tuple (cached base-model features, only valid while the
    image tower is frozen), these are accepted for any method and never re-encoded.
    """

    features: torch.Tensor
    labels: torch.Tensor


class AdaptedCLIP(nn.Module):
    """A CLIP model with its adaptation; see the module docstring.

    Args:
        model: the open_clip model (modified in place: use :func:`build_adapted`, which copies it
            when the method changes encoder weights).
        tokenizer: the model's tokenizer.
        classnames: class names ordered by label.
        templates: prompt templates (one or an ensemble).
        method: ``zero_shot`` or a combination of ``lora``, ``bitfit``, ``meta_adapter`` (or any
            registered method the ``adapted`` runner makes).
        lora_cfg, bitfit_cfg, meta_cfg: configurations of the built-in parts (defaults when ``None``;
            ``settings`` wins).
        support: Meta-Adapter support set: ``(features [N, D], labels [N])`` (cached base-model
            features, L2-normalised; frozen image tower only), a dataset yielding
            ``(image, label, index)`` (encoded here and re-encoded by :meth:`refresh` when the image
            tower trains), or :class:`SupportFeatures`.
        seed: initialisation seed of the adapters.
        model_name, weights: identity of the base model (stored in checkpoints).
        settings: each part's settings by method name (a part left out: its ``config_class()``).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        classnames: Sequence[str],
        templates: Sequence[str],
        method: str = ZERO_SHOT,
        lora_cfg: LoraConfig | None = None,
        bitfit_cfg: BitFitConfig | None = None,
        meta_cfg: MetaAdapterConfig | None = None,
        support: Any = None,
        seed: int = 0,
        model_name: str = "",
        weights: str = "",
        settings: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.parts = adapter_parts(method)
        self.method = method_name(self.parts)
        if not classnames:
            raise AdaptationError("AdaptedCLIP needs at least one class name.")
        self.model, self.tokenizer = model, tokenizer
        self.classnames, self.templates = list(classnames), list(templates)
        self.model_name, self.weights, self.seed = model_name, weights, seed
        given = {type(c): c for c in (lora_cfg, bitfit_cfg, meta_cfg) if c is not None}
        self.entries = tuple(registry.get(p) for p in self.parts)
        self.settings: dict[str, Any] = {}
        for e in self.entries:
            chosen = (settings or {}).get(e.name)
            if chosen is None and e.config_class is not None:
                chosen = given.get(e.config_class) or e.config_class()
            self.settings[e.name] = chosen
        self.device = next(model.parameters()).device
        self.base_fingerprint = weights_fingerprint(model)

        for p in model.parameters():
            p.requires_grad_(False)
        trainable: set[str] = set()
        for e in self.entries:
            if e.apply is not None:
                trainable |= set(registry.resolve(e.apply)(model, self.settings[e.name], seed))
        for n, p in model.named_parameters():
            p.requires_grad_(n in trainable)
        self.vision_trainable = any(tower_of(n) == "vision" for n in trainable)
        self.text_trainable = any(tower_of(n) == "text" for n in trainable)

        self._text_cache: torch.Tensor | None = None
        self._text_stale = True
        dim = self.class_embeddings().shape[1]

        self.meta_adapter: MetaAdapter | None = None  # the head (its parameters: "meta_adapter.*")
        self.head_part = next((e.name for e in self.entries if e.head is not None), None)
        self.support_dataset: Dataset | None = None
        self.packed: PackedSupport | None = None
        self.register_buffer("support_features", torch.empty(0), persistent=False)
        self.register_buffer("support_labels", torch.empty(0, dtype=torch.long), persistent=False)
        # class embeddings [C, D] learned after training (the decouple remedy); None: classifier() computes them
        self.register_buffer(CLASSIFIER_OVERRIDE, None, persistent=False)
        if self.head_part is not None:
            build = registry.resolve(registry.get(self.head_part).head)
            self.meta_adapter = build(dim, self.settings[self.head_part], seed).to(self.device)
            self.set_support(support)
        self.train(False)

    def settings_of_type(self, config_class: type) -> Any:
        """The settings of the part whose settings are a ``config_class`` (``None``: no such part)."""
        return next((c for c in self.settings.values() if type(c) is config_class), None)

    @property
    def lora_cfg(self) -> LoraConfig | None:
        """The LoRA part's settings (``None``: no LoRA)."""
        return self.settings_of_type(LoraConfig)

    @property
    def bitfit_cfg(self) -> BitFitConfig | None:
        """The BitFit part's settings (``None``: no BitFit)."""
        return self.settings_of_type(BitFitConfig)

    @property
    def meta_cfg(self) -> MetaAdapterConfig | None:
        """The settings of the head on the features, the Meta-Adapter's (``None``: no head)."""
        return None if self.head_part is None else self.settings[self.head_part]

    # ------------------------------------------------------------------ properties
    @property
    def encoders_frozen(self) -> bool:
        """True when neither encoder is adapted: cached image features can be used directly."""
        return not (self.vision_trainable or self.text_trainable)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """``{name: parameter}`` of everything that is trained."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def _owner(self, name: str) -> tuple[str | None, str]:
        """The part owning the trained parameter ``name`` and its group (the first part, in label
        order, whose registry ``parameter_group`` claims it; ``(None, name)`` when none does)."""
        for e in self.entries:
            group = registry.resolve(e.parameter_group)
            found = group(self.model, name) if group is not None else None
            if found is not None:
                return e.name, found
        return None, name

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameter counts per part and in total, plus the base model's size.

        One key per built-in trained method (``lora``, ``bitfit``, ``meta_adapter``: 0 when absent,
        as records have always had) and per part of this model, then ``total`` and ``base_model``
        (the model's parameters less those its parts added, e.g. LoRA's matrices).
        """
        counts = {name: 0 for name, m in registry.methods().items()
                  if m.parameter_group is not None and (name in registry.BUILTIN or name in self.parts)}
        total = 0
        for n, p in self.trainable_parameters().items():
            part, _ = self._owner(n)
            total += p.numel()
            if part is not None:
                counts[part] += p.numel()
        counts["total"] = total
        added = sum(counts[e.name] for e in self.entries if e.adds_parameters)
        counts["base_model"] = count_parameters(self.model, trainable_only=False) - added
        return counts

    def parameter_group(self, name: str) -> str:
        """A readable group of the trained parameter ``name`` (what training reports movement for),
        as the registry's ``parameter_group`` of the part owning it names it:
        ``lora.{tower}.{site}.{A|B}`` for LoRA matrices (``lora.vision.q_proj.A``),
        ``bitfit.{tower}.{group}`` for biases (``bitfit.text.norm``; the groups of
        :func:`~lowres_clip.methods.bitfit.bias_group`), and the parameter's own name for the
        Meta-Adapter (``meta_adapter.q_proj.weight``, ``meta_adapter.gate.bias``...) and for a
        parameter no part claims.
        """
        return self._owner(name)[1]

    def config(self) -> dict[str, Any]:
        """JSON-able description of the method and its configuration (stored in checkpoints)."""
        return {
            "method": self.method,
            "model_name": self.model_name,
            "weights": self.weights,
            "seed": self.seed,
            "classnames": self.classnames,
            "templates": self.templates,
            "lora_cfg": asdict(self.lora_cfg) if self.lora_cfg else None,
            "bitfit_cfg": asdict(self.bitfit_cfg) if self.bitfit_cfg else None,
            "meta_cfg": asdict(self.meta_cfg) if self.meta_cfg else None,
            "settings": {name: asdict(c) if c is not None else None for name, c in self.settings.items()},
        }

    # ------------------------------------------------------------------ modes and caches
    def train(self, mode: bool = True) -> "AdaptedCLIP":
        """Adapters follow ``mode``; pretrained layers stay in eval mode (see module docstring)."""
        super().train(mode)
        self.model.eval()
        set_lora_dropout_mode(self.model, mode)
        if mode and self.text_trainable:
            self._text_stale = True
        return self

    @torch.no_grad()
    def encode_dataset(self, dataset: Dataset, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised image features ``[N, D]`` and labels ``[N]`` of a ``(image, label, index)``
        dataset through the current (adapted) image tower, in eval mode."""
        was_training = self.training
        self.eval()
        feats, labels = [], []
        for images, y, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            feats.append(self.encode_images(images.to(self.device)))
            labels.append(torch.as_tensor(y))
        self.train(was_training)
        if not feats:
            return torch.empty(0, 0, device=self.device), torch.empty(0, dtype=torch.long)
        return torch.cat(feats), torch.cat(labels).long()

    def set_support(self, support: Any) -> None:
        """Set the Meta-Adapter support set (see the class docstring for the accepted forms)."""
        if self.meta_adapter is None:
            raise AdaptationError(f"method {self.method!r} has no Meta-Adapter; a support set is not used.")
        if support is None:
            raise AdaptationError(
                "meta_adapter needs a support set: support=(features, labels) from "
                "lowres_clip.features.image_features on the few-shot train samples, or an ImageDataset."
            )
        if isinstance(support, SupportFeatures):  # already this tower's normalised features: kept bit-exact
            self.support_dataset = None
            feats, labels = support.features, support.labels
        elif isinstance(support, tuple) and len(support) == 2 and not isinstance(support[0], tuple):
            if self.vision_trainable:
                raise AdaptationError(
                    f"{self.method}: the image tower is trained, so the support features must be re-encoded; "
                    "pass the support images as a dataset (ImageDataset with the evaluation transform)."
                )
            self.support_dataset = None
            feats = F.normalize(torch.as_tensor(support[0]).float(), dim=-1)
            labels = torch.as_tensor(support[1])
        elif isinstance(support, Dataset) or hasattr(support, "__getitem__"):
            self.support_dataset = support
            feats, labels = self.encode_dataset(support)
        else:
            raise AdaptationError(
                f"support must be (features, labels), SupportFeatures or a dataset, got {type(support).__name__}."
            )
        self._store_support(feats.float(), labels.long())

    def _store_support(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        self.support_features = feats.to(self.device)
        self.support_labels = labels.to(self.device)
        self.packed = pack_support(self.support_features, self.support_labels.cpu(), self.num_classes)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute cached state after the trainable weights changed: the text classifier (lazily,
        on its next use) and, when the image tower is trained, the Meta-Adapter support features."""
        if self.text_trainable:
            self._text_stale = True
        if self.meta_adapter is not None and self.vision_trainable and self.support_dataset is not None:
            feats, labels = self.encode_dataset(self.support_dataset)
            self._store_support(feats, labels)

    # ------------------------------------------------------------------ computation
    def class_embeddings(self) -> torch.Tensor:
        """Class text embeddings ``[C, D]`` (L2-normalised, float32) of the (adapted) text tower."""
        if self.text_trainable and self.training and torch.is_grad_enabled():
            return encode_text_classifier(self.model, self.tokenizer, self.classnames, self.templates, self.device)
        if self._text_stale or self._text_cache is None:
            with torch.no_grad():
                self._text_cache = encode_text_classifier(
                    self.model, self.tokenizer, self.classnames, self.templates, self.device
                ).float()
            self._text_stale = False
        return self._text_cache

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 image features ``[B, D]`` (with gradients only when the image tower trains)."""
        with torch.set_grad_enabled(self.vision_trainable and torch.is_grad_enabled()):
            return F.normalize(self.model.encode_image(images.to(self.device)).float(), dim=-1)

    def classifier(self, query_indices: torch.Tensor | None = None) -> torch.Tensor:
        """The class embeddings used for classification ``[C, D]`` (Meta-Adapter applied if present).

        In training, ``query_indices`` (rows of the support set that are in the current batch) are
        removed from the support when ``meta_cfg.exclude_query``; ``episode_shots`` subsamples it.
        """
        if self.classifier_override is not None:  # re-trained on fixed features (lowres_clip.methods.remedies)
            return self.classifier_override
        text = self.class_embeddings()
        if self.meta_adapter is None:
            return text
        assert self.packed is not None and self.meta_cfg is not None
        mask = self.packed.mask
        if self.training:
            exclude = query_indices if self.meta_cfg.exclude_query else None
            mask = episode_mask(self.packed, exclude, self.meta_cfg.episode_shots)
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.meta_adapter(text.float(), self.packed.features.float(), mask)

    def logits_from_features(self, features: torch.Tensor, query_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[N, C]`` from image features (e.g. cached ones when :attr:`encoders_frozen`)."""
        return cosine_logits(features.to(self.device), self.classifier(query_indices), LOGIT_SCALE)

    def forward(self, images: torch.Tensor, query_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, C]`` of a batch of preprocessed images."""
        return self.logits_from_features(self.encode_images(images), query_indices)

    # ------------------------------------------------------------------ trained state
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Detached copies of every trained parameter (what a checkpoint stores), and the
        :data:`CLASSIFIER_OVERRIDE` when a second stage set one."""
        state = {n: p.detach().clone() for n, p in self.trainable_parameters().items()}
        if self.classifier_override is not None:
            state[CLASSIFIER_OVERRIDE] = self.classifier_override.detach().clone()
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load trained parameters (names must match exactly; a :data:`CLASSIFIER_OVERRIDE` is set,
        its absence clears it) and refresh the caches.

        Raises:
            AdaptationError: missing or unexpected names, or shape mismatches.
        """
        own = self.trainable_parameters()
        state = dict(state)
        override = state.pop(CLASSIFIER_OVERRIDE, None)  # absent: the classifier is computed
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise AdaptationError(
                f"trained state does not fit this {self.method} model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]} (was it made for another method or configuration?)"
            )
        with torch.no_grad():
            for n, p in own.items():
                if p.shape != state[n].shape:
                    raise AdaptationError(f"trained parameter {n}: shape {tuple(state[n].shape)} != {tuple(p.shape)}")
                p.copy_(state[n].to(p.device, p.dtype))
        if override is not None and override.shape[0] != self.num_classes:
            raise AdaptationError(f"{CLASSIFIER_OVERRIDE}: {override.shape[0]} classes, not {self.num_classes}")
        self.classifier_override = None if override is None else override.to(self.device, torch.float32)
        self.refresh()


def build_adapted(
    bundle,
    classnames: Sequence[str],
    templates: Sequence[str],
    method: str = ZERO_SHOT,
    lora_cfg: LoraConfig | None = None,
    bitfit_cfg: BitFitConfig | None = None,
    meta_cfg: MetaAdapterConfig | None = None,
    support: Any = None,
    seed: int = 0,
    copy_model: bool | None = None,
    settings: Mapping[str, Any] | None = None,
) -> AdaptedCLIP:
    """Build an :class:`AdaptedCLIP` for a :class:`~lowres_clip.models.ClipBundle`.

    Args:
        bundle: the loaded model.
        classnames, templates: classes and prompt templates.
        method: ``zero_shot``, ``lora``, ``bitfit``, ``meta_adapter`` or a ``+``-combination
            (any order; stored canonically, e.g. ``lora+bitfit+meta_adapter``).
        lora_cfg, bitfit_cfg, meta_cfg: per-part configurations (defaults when ``None``).
        support: Meta-Adapter support set (see :class:`AdaptedCLIP`).
        seed: adapter initialisation seed.
        copy_model: work on a deep copy of ``bundle.model`` (default: when a part changes encoder
            weights, registry ``copies_model``: LoRA, BitFit; so the bundle stays usable for other methods).
        settings: each part's settings by method name (see :class:`AdaptedCLIP`).

    Raises:
        UnknownMethodError: unknown method string.
        AdaptationError: invalid configuration or missing support set.
    """
    parts = adapter_parts(method)
    if copy_model is None:
        copy_model = any(registry.get(p).copies_model for p in parts)
    model = copy.deepcopy(bundle.model) if copy_model else bundle.model
    return AdaptedCLIP(
        model, bundle.tokenizer, classnames, templates, method_name(parts), lora_cfg, bitfit_cfg, meta_cfg,
        support, seed, bundle.model_name, bundle.weights, settings=settings,
    )
