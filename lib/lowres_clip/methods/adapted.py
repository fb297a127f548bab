"""``AdaptedCLIP``: one module for zero-shot CLIP and any combination of LoRA, BitFit, Meta-Adapter.

``forward(images) -> logits [B, C]`` = ``100 * cos(image feature, class embedding)`` where the
image feature comes from the (LoRA/BitFit-adapted) image tower and the class embeddings from the
(adapted) text tower through :func:`lowres_clip.features.encode_text_classifier`, optionally
refined by the Meta-Adapter with the support set. Build it with :func:`build_adapted` from a
method string; parts are combined in the fixed order ``lora+bitfit+meta_adapter``.

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
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..features import encode_text_classifier
from .. import registry
from ..settings import ConfigError
from ..utils import AdaptationError, count_parameters, tower_of
from .bitfit import BitFitConfig, apply_bitfit, bias_group
from .lora import LoraConfig, apply_lora, set_lora_dropout_mode
from .meta_adapter import MetaAdapter, MetaAdapterConfig, PackedSupport, episode_mask, pack_support
from .zero_shot import LOGIT_SCALE, cosine_logits

ZERO_SHOT = "zero_shot"


class UnknownMethodError(AdaptationError):
    """A method string names an unknown or impossible combination."""


def adapter_parts(method: str) -> tuple[str, ...]:
    """The adapter parts of ``method`` in registry order (``()`` for ``zero_shot``), as
    :func:`lowres_clip.registry.parse_method` reads them.

    Raises:
        UnknownMethodError: what the registry refuses, or ``linear_probe`` (a probe on cached
            features: :mod:`lowres_clip.methods.linear_probe`).
    """
    try:
        parts = registry.parse_method(str(method))
    except ConfigError as exc:
        raise UnknownMethodError(str(exc)) from exc
    if parts == (ZERO_SHOT,):
        return ()
    if not all(registry.METHODS[p].combines for p in parts):
        raise UnknownMethodError(
            f"{method} is not an AdaptedCLIP method; fit the linear probe on cached features with "
            "lowres_clip.methods.linear_probe.fit_linear_probe."
        )
    return parts


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
        method: ``zero_shot`` or a combination of ``lora``, ``bitfit``, ``meta_adapter``.
        lora_cfg, bitfit_cfg, meta_cfg: configurations (defaults when ``None``).
        support: Meta-Adapter support set: ``(features [N, D], labels [N])`` (cached base-model
            features, L2-normalised; frozen image tower only), a dataset yielding
            ``(image, label, index)`` (encoded here and re-encoded by :meth:`refresh` when the image
            tower trains), or :class:`SupportFeatures`.
        seed: initialisation seed of the adapters.
        model_name, weights: identity of the base model (stored in checkpoints).
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
    ):
        super().__init__()
        self.parts = adapter_parts(method)
        self.method = method_name(self.parts)
        if not classnames:
            raise AdaptationError("AdaptedCLIP needs at least one class name.")
        self.model, self.tokenizer = model, tokenizer
        self.classnames, self.templates = list(classnames), list(templates)
        self.model_name, self.weights, self.seed = model_name, weights, seed
        self.lora_cfg = (lora_cfg or LoraConfig()) if "lora" in self.parts else None
        self.bitfit_cfg = (bitfit_cfg or BitFitConfig()) if "bitfit" in self.parts else None
        self.meta_cfg = (meta_cfg or MetaAdapterConfig()) if "meta_adapter" in self.parts else None
        self.device = next(model.parameters()).device
        self.base_fingerprint = weights_fingerprint(model)

        for p in model.parameters():
            p.requires_grad_(False)
        trainable: set[str] = set()
        if self.lora_cfg is not None:
            apply_lora(model, self.lora_cfg, seed)
            trainable |= {n for n, _ in model.named_parameters() if "lora_" in n}
        if self.bitfit_cfg is not None:
            trainable |= set(apply_bitfit(model, self.bitfit_cfg))
        for n, p in model.named_parameters():
            p.requires_grad_(n in trainable)
        self.vision_trainable = any(tower_of(n) == "vision" for n in trainable)
        self.text_trainable = any(tower_of(n) == "text" for n in trainable)

        self._text_cache: torch.Tensor | None = None
        self._text_stale = True
        dim = self.class_embeddings().shape[1]

        self.meta_adapter: MetaAdapter | None = None
        self.support_dataset: Dataset | None = None
        self.packed: PackedSupport | None = None
        self.register_buffer("support_features", torch.empty(0), persistent=False)
        self.register_buffer("support_labels", torch.empty(0, dtype=torch.long), persistent=False)
        if self.meta_cfg is not None:
            self.meta_cfg.validate()
            self.meta_adapter = MetaAdapter(dim, self.meta_cfg.num_heads, self.meta_cfg.dropout,
                                            self.meta_cfg.gate_bias_init, seed).to(self.device)
            self.set_support(support)
        self.train(False)

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

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameter counts per part (``lora``, ``bitfit``, ``meta_adapter``) and in total."""
        counts = {"lora": 0, "bitfit": 0, "meta_adapter": 0}
        for n, p in self.trainable_parameters().items():
            part = "meta_adapter" if n.startswith("meta_adapter.") else "lora" if "lora_" in n else "bitfit"
            counts[part] += p.numel()
        counts["total"] = sum(counts.values())
        counts["base_model"] = count_parameters(self.model, trainable_only=False) - counts["lora"]
        return counts

    def parameter_group(self, name: str) -> str:
        """A readable group of the trained parameter ``name`` (what training reports movement for).

        ``lora.{tower}.{site}.{A|B}`` for LoRA matrices (``lora.vision.q_proj.A``),
        ``bitfit.{tower}.{group}`` for biases (``bitfit.text.norm``; the groups of
        :func:`~lowres_clip.methods.bitfit.bias_group`), and the parameter's own name for the
        Meta-Adapter (``meta_adapter.q_proj.weight``, ``meta_adapter.k_proj.weight``,
        ``meta_adapter.gate.weight``, ``meta_adapter.gate.bias``; its values are not projected).
        """
        if name.startswith("meta_adapter."):
            return name
        inner = name.removeprefix("model.")
        tower = tower_of(inner) or "other"
        if "lora_" in inner:
            owner, _, tail = inner.partition(".lora_")
            return f"lora.{tower}.{owner.rpartition('.')[2]}.{tail[:1]}"
        return f"bitfit.{tower}.{bias_group(self.model, inner)}"

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
        """Detached copies of every trained parameter (what a checkpoint stores)."""
        return {n: p.detach().clone() for n, p in self.trainable_parameters().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load trained parameters (names must match exactly) and refresh the caches.

        Raises:
            AdaptationError: missing or unexpected names, or shape mismatches.
        """
        own = self.trainable_parameters()
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
        copy_model: work on a deep copy of ``bundle.model`` (default: when LoRA or BitFit change
            encoder weights, so the bundle stays usable for other methods).

    Raises:
        UnknownMethodError: unknown method string.
        AdaptationError: invalid configuration or missing support set.
    """
    parts = adapter_parts(method)
    if copy_model is None:
        copy_model = "lora" in parts or "bitfit" in parts
    model = copy.deepcopy(bundle.model) if copy_model else bundle.model
    return AdaptedCLIP(
        model, bundle.tokenizer, classnames, templates, method_name(parts), lora_cfg, bitfit_cfg, meta_cfg,
        support, seed, bundle.model_name, bundle.weights,
    )
