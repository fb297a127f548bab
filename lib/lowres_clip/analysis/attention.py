"""Attention maps for any open_clip image tower: where does the image evidence for a class come from?

The explained score is the cosine similarity between the image feature and one class's text
feature (``cos(f(x), t_c)``), so the maps of two classes differ where the evidence differs.

* **ViT towers** (open_clip ``VisionTransformer``): gradient-weighted attention rollout of Chefer
  et al. 2021 ("Generic Attention-model Explainability for Interpreting Bi-Modal and
  Encoder-Decoder Transformers"): per block, ``Ā = mean_heads((∇A ⊙ A)⁺)`` and
  ``R ← R + Ā R`` from ``R = I``; the map is the class-token row of ``R`` over the patch tokens.
  The attention probabilities ``A`` are recomputed by a forward hook on every block's attention
  module from the module's input and its own projections; the hook checks that the recomputed
  output matches the module's output and substitutes it, so ``A`` lies on the gradient path
  (weights returned by ``need_weights=True`` do not). This works for

  - ``nn.MultiheadAttention`` (open_clip's ``ResidualAttentionBlock``), also when wrapped by
    peft's LoRA (the hook sits on the base module, where peft has merged the LoRA weights in);
  - custom attention modules with separate ``q``/``k``/``v`` and output layers (children named
    ``q_proj/k_proj/v_proj/out_proj``, ``q/k/v/proj``, ... and a ``num_heads``-like attribute),
    e.g. a LoRA re-implementation with LoRA ``Linear`` layers.

  Any other attention module falls back (with a warning) to Grad-CAM on the last block's tokens.
* **CNN towers** (``ModifiedResNet``, timm CNNs in ``TimmModel``): Grad-CAM on the last
  convolutional stage (the last module giving a spatial ``[B, C, h, w]`` map, or ``target_layer``).

All maps are upsampled to the input's spatial size and min-max normalised to ``[0, 1]``.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..plots import overlay  # noqa: F401  (re-exported: ``attention.overlay(image, heatmap)``)

METHODS = ("auto", "rollout", "gradcam")
QKV_NAMES = (("q_proj", "k_proj", "v_proj"), ("q", "k", "v"), ("query", "key", "value"), ("to_q", "to_k", "to_v"))
OUT_NAMES = ("out_proj", "o_proj", "proj", "out", "to_out")
HEAD_ATTRS = ("num_heads", "n_head", "n_heads", "heads")


class AttentionError(ValueError):
    """An attention map cannot be computed as asked; the message says what to change."""


class _Unsupported(Exception):
    """Internal: an attention module whose probabilities cannot be captured (triggers the fallback)."""


# ----------------------------------------------------------------------------- model inspection
def vision_tower(model: nn.Module) -> nn.Module:
    """The image tower of a CLIP-like model (``model.visual``, or the first open_clip tower inside)."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, nn.Module):
        return visual
    for m in model.modules():
        if m is not model and isinstance(getattr(m, "visual", None), nn.Module):
            return m.visual
    raise AttentionError(f"{type(model).__name__} has no image tower: expected a `visual` module (open_clip CLIP).")


def _vit_blocks(visual: nn.Module) -> list[nn.Module] | None:
    """Residual attention blocks of an open_clip ViT tower, else ``None``."""
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is not None and hasattr(visual, "class_embedding"):
        return list(blocks)
    return None


def _timm_vit(visual: nn.Module) -> nn.Module | None:
    """The timm ViT trunk of an open_clip ``TimmModel`` tower, else ``None``."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed"):
        return trunk
    return None


def tower_kind(model: nn.Module) -> str:
    """``"vit"`` (open_clip ViT), ``"timm-vit"`` (timm ViT trunk) or ``"cnn"``."""
    visual = vision_tower(model)
    if _vit_blocks(visual) is not None:
        return "vit"
    if _timm_vit(visual) is not None:
        return "timm-vit"
    return "cnn"


def resolve_method(model: nn.Module, method: str = "auto") -> str:
    """The method used for ``model``: ``rollout`` for open_clip ViTs, ``gradcam`` otherwise."""
    if method not in METHODS:
        raise AttentionError(f"unknown attention method {method!r}; use one of {METHODS}")
    kind = tower_kind(model)
    if method == "auto":
        return "rollout" if kind == "vit" else "gradcam"
    if method == "rollout" and kind != "vit":
        raise AttentionError(f"attention rollout needs an open_clip ViT image tower; this model's tower is {kind!r}. "
                             "Use method='gradcam' (or 'auto').")
    return method


# ----------------------------------------------------------------------------- capturing attention
def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (new,) + tuple(output[1:])
    if isinstance(output, list):
        return [new] + list(output[1:])
    return new


def _base_mha(module: nn.Module) -> nn.MultiheadAttention | None:
    """The ``nn.MultiheadAttention`` itself or the one wrapped by a peft LoRA layer, else ``None``."""
    if isinstance(module, nn.MultiheadAttention):
        return module
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else getattr(module, "base_layer", None)
    return base if isinstance(base, nn.MultiheadAttention) else None


@dataclass
class _Projections:
    """How to recompute one attention module: input projections, output projection, heads."""

    q: Callable[[torch.Tensor], torch.Tensor]
    k: Callable[[torch.Tensor], torch.Tensor]
    v: Callable[[torch.Tensor], torch.Tensor]
    out: Callable[[torch.Tensor], torch.Tensor]
    heads: int
    scale: float | None = None


def _mha_projections(mha: nn.MultiheadAttention) -> _Projections:
    """Projections of an ``nn.MultiheadAttention``; weights are read at call time, so LoRA weights that
    peft merges in for the duration of the forward pass are included."""
    d = mha.embed_dim

    def proj(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def f(x: torch.Tensor) -> torch.Tensor:
            if mha._qkv_same_embed_dim:
                w = mha.in_proj_weight[i * d:(i + 1) * d]
            else:
                w = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)[i]
            b = None if mha.in_proj_bias is None else mha.in_proj_bias[i * d:(i + 1) * d]
            return F.linear(x, w, b)
        return f

    return _Projections(proj(0), proj(1), proj(2),
                        lambda y: F.linear(y, mha.out_proj.weight, mha.out_proj.bias), int(mha.num_heads))


def _qkv_projections(module: nn.Module) -> _Projections | None:
    """Projections of a custom attention module with separate q/k/v/out layers, else ``None``."""
    children = dict(module.named_children())
    for names in QKV_NAMES:
        if all(n in children for n in names):
            out = next((children[n] for n in OUT_NAMES if n in children), None)
            heads = next((getattr(module, a) for a in HEAD_ATTRS if isinstance(getattr(module, a, None), int)), None)
            if out is not None and heads:
                scale = getattr(module, "scale", None)
                return _Projections(*(children[n] for n in names), out, int(heads),
                                    float(scale) if isinstance(scale, (int, float)) else None)
    return None


def _mask_to_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


@contextmanager
def _capture_attention(blocks: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Hook every block's attention module so that its attention probabilities ``[B, heads, L, L]``
    are appended to the yielded list during a forward pass.

    Each hook recomputes the attention from the module's input with the module's own projections,
    checks that the result matches the module's output and substitutes it, so the recorded
    probabilities lie on the autograd path from the input to the image feature (weights returned by
    ``need_weights=True`` do not: they are a detached-from-output view).
    """
    probs: list[torch.Tensor] = []
    handles = []

    def make_hook(proj: _Projections, batch_first: bool):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs.get("query", kwargs.get("q_x", kwargs.get("x")))
            others = list(args[1:3]) + [kwargs.get(n) for n in ("key", "value", "k_x", "v_x")]
            if not isinstance(x, torch.Tensor) or x.dim() != 3 or any(o is not None and o is not x for o in others):
                raise _Unsupported(f"{type(module).__name__} is not called as self-attention on [B, L, D] tokens")
            if len(args) > 3 or kwargs.get("key_padding_mask") is not None:
                raise _Unsupported(f"{type(module).__name__} is called with masks or extra positional arguments")
            xb = x if batch_first else x.transpose(0, 1)
            b, n, _ = xb.shape

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(b, n, proj.heads, -1).transpose(1, 2)

            q, k, v = split(proj.q(xb)), split(proj.k(xb)), split(proj.v(xb))
            scale = proj.scale if proj.scale is not None else q.shape[-1] ** -0.5
            logits = (q @ k.transpose(-2, -1)) * scale
            mask = kwargs.get("attn_mask")
            if mask is not None:
                logits = logits + _mask_to_additive(mask, logits.dtype)
            a = logits.softmax(dim=-1)
            y = proj.out((a @ v).transpose(1, 2).reshape(b, n, -1))
            y = y if batch_first else y.transpose(0, 1)
            ref = _first(output)
            tol = 1e-4 * (1.0 + ref.detach().abs().max().item())
            if y.shape != ref.shape or not torch.allclose(y.detach(), ref.detach(), atol=tol, rtol=1e-3):
                raise _Unsupported(f"recomputed attention of {type(module).__name__} does not match its output")
            probs.append(a)
            return _replace_first(output, y)

        return hook

    try:
        for blk in blocks:
            attn = getattr(blk, "attn", None)
            if attn is None:
                raise _Unsupported(f"{type(blk).__name__} has no `attn` module")
            mha = _base_mha(attn)
            if mha is not None:
                # hook the base module: inside peft's wrapper its LoRA weights are merged
                handles.append(mha.register_forward_hook(make_hook(_mha_projections(mha), mha.batch_first),
                                                         with_kwargs=True))
            elif (proj := _qkv_projections(attn)) is not None:
                handles.append(attn.register_forward_hook(make_hook(proj, getattr(attn, "batch_first", True)),
                                                          with_kwargs=True))
            else:
                raise _Unsupported(f"unsupported attention module {type(attn).__name__}")
        yield probs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _capture_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the (first) output tensor of ``module`` during a forward pass."""
    out: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, o: out.append(_first(o)))
    try:
        yield out
    finally:
        handle.remove()


def find_last_conv_layer(visual: nn.Module, image: torch.Tensor) -> str:
    """Name (in ``visual.named_modules()``) of the last module that outputs a spatial feature map.

    Runs one forward pass with hooks on every sub-module and keeps, in completion order, the last
    one whose output is ``[B, C, h, w]`` with ``h * w > 1`` (else the last 4-D one).
    """
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, m in visual.named_modules():
        if name:
            handles.append(m.register_forward_hook(
                lambda _m, _a, o, name=name: seen.append((name, tuple(_first(o).shape)))
                if isinstance(_first(o), torch.Tensor) else None))
    try:
        with torch.no_grad():
            visual(image[:1])
    finally:
        for h in handles:
            h.remove()
    maps = [(n, s) for n, s in seen if len(s) == 4]
    if not maps:
        raise AttentionError(f"{type(visual).__name__} has no module with a [B, C, h, w] output; pass target_layer.")
    spatial = [n for n, s in maps if s[2] * s[3] > 1]
    return spatial[-1] if spatial else maps[-1][0]


# ----------------------------------------------------------------------------- maps
def _target_score(model: nn.Module, images: torch.Tensor, text_features: torch.Tensor,
                  targets: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of ``cos(image feature, text feature of the target class)``."""
    feats = F.normalize(model.encode_image(images).float(), dim=-1)
    text = F.normalize(text_features.to(feats.device, feats.dtype), dim=-1)
    if text.shape[-1] != feats.shape[-1]:
        raise AttentionError(f"text features have dimension {text.shape[-1]} but image features {feats.shape[-1]}")
    return (feats * text[targets]).sum()


def _rollout(model, blocks, images, text_features, targets, pool: str) -> torch.Tensor:
    with _capture_attention(blocks) as probs:
        score = _target_score(model, images, text_features, targets)
    grads = torch.autograd.grad(score, probs, allow_unused=True)
    b, _, n, _ = probs[0].shape
    rel = torch.eye(n, device=images.device).expand(b, n, n).clone()
    for a, g in zip(probs, grads):
        if g is None:
            continue
        cam = (g * a).clamp(min=0).mean(dim=1)
        rel = rel + cam @ rel
    return rel[:, 0, :] if pool == "tok" else rel[:, 1:, :].mean(dim=1)


def _token_gradcam(model, block, images, text_features, targets) -> torch.Tensor:
    with _capture_output(block) as out:
        score = _target_score(model, images, text_features, targets)
    tokens = out[-1]
    (grad,) = torch.autograd.grad(score, tokens)
    weights = grad.mean(dim=1, keepdim=True)
    return F.relu((tokens * weights).sum(dim=-1))


def _conv_gradcam(model, layer, images, text_features, targets) -> torch.Tensor:
    with _capture_output(layer) as out:
        score = _target_score(model, images, text_features, targets)
    act = out[-1]
    (grad,) = torch.autograd.grad(score, act)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((act * weights).sum(dim=1))


def _tokens_to_grid(rel: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch-token relevances ``[B, L]`` (prefix tokens first) -> ``[B, gh, gw]``."""
    gh, gw = grid
    return rel[:, -gh * gw:].reshape(rel.shape[0], gh, gw)


def _normalise(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    out = torch.where(span > 1e-12, (up - lo) / span.clamp_min(1e-12), torch.zeros_like(up))
    return torch.nan_to_num(out).detach().cpu().numpy().astype(np.float32)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration; afterwards every sub-module gets back its own training flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def attention_maps(
    model: nn.Module,
    images: torch.Tensor,
    text_features: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | int | None = None,
    method: str = "auto",
    target_layer: str | nn.Module | None = None,
) -> np.ndarray:
    """Attention maps ``[B, H, W]`` in ``[0, 1]`` for a batch of preprocessed images.

    Args:
        model: an open_clip CLIP-like model (has ``encode_image`` and a ``visual`` tower); any
            wrapper exposing those works (LoRA, BitFit...). It is run in eval mode, and parameter
            gradients are left untouched.
        images: ``[B, 3, H, W]`` (or ``[3, H, W]``) preprocessed images.
        text_features: ``[C, D]`` class text features (e.g. ``encode_text_classifier``).
        targets: class index per image (one int for all); ``None`` = each image's predicted class.
        method: ``auto`` (rollout for open_clip ViTs, Grad-CAM otherwise), ``rollout`` or ``gradcam``.
        target_layer: Grad-CAM layer of a CNN tower (module or its name in ``model.visual``);
            default: the last module giving a spatial map (the last conv stage).

    Returns:
        ``float32`` maps at the input's spatial size, each min-max normalised (all zeros if flat).
    """
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise AttentionError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    method = resolve_method(model, method)
    visual = vision_tower(model)
    device = next(model.parameters()).device
    images = images.to(device).float().detach().requires_grad_(True)
    text_features = torch.as_tensor(text_features).detach()
    with _eval_mode(model), torch.enable_grad():
        if targets is None:
            with torch.no_grad():
                targets = _predict(model, images, text_features)
        t = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
        t = t.expand(images.shape[0]) if t.numel() == 1 else t
        if t.numel() != images.shape[0]:
            raise AttentionError(f"{t.numel()} targets for {images.shape[0]} images")
        if t.min() < 0 or t.max() >= text_features.shape[0]:
            raise AttentionError(f"target classes must lie in [0, {text_features.shape[0]}), got {t.tolist()}")
        maps = _compute(model, visual, images, text_features, t, method, target_layer)
    return _normalise(maps, tuple(images.shape[-2:]))


def _predict(model: nn.Module, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    feats = F.normalize(model.encode_image(images).float(), dim=-1)
    return (feats @ F.normalize(text_features.to(feats), dim=-1).T).argmax(dim=-1)


def _compute(model, visual, images, text_features, targets, method, target_layer) -> torch.Tensor:
    kind = tower_kind(model)
    h, w = images.shape[-2:]
    if kind == "vit":
        blocks = _vit_blocks(visual)
        ph, pw = _pair(getattr(visual, "patch_size", 1))
        grid = (h // ph, w // pw)
        if method == "rollout":
            try:
                rel = _rollout(model, blocks, images, text_features, targets, getattr(visual, "pool_type", "tok"))
                return _tokens_to_grid(rel, grid)
            except _Unsupported as exc:
                warnings.warn(f"attention rollout unavailable ({exc}); using Grad-CAM on the last block's tokens",
                              stacklevel=3)
        return _tokens_to_grid(_token_gradcam(model, blocks[-1], images, text_features, targets), grid)
    if kind == "timm-vit":
        trunk = _timm_vit(visual)
        grid = tuple(getattr(trunk.patch_embed, "grid_size", None) or (h // 16, w // 16))
        return _tokens_to_grid(_token_gradcam(model, trunk.blocks[-1], images, text_features, targets), grid)
    if target_layer is None:
        target_layer = find_last_conv_layer(visual, images.detach())
    layer = dict(visual.named_modules())[target_layer] if isinstance(target_layer, str) else target_layer
    return _conv_gradcam(model, layer, images, text_features, targets)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def attention_map(model: nn.Module, image: torch.Tensor, text_features: torch.Tensor, target: int | None = None,
                  method: str = "auto", target_layer: str | nn.Module | None = None) -> np.ndarray:
    """Attention map ``[H, W]`` in ``[0, 1]`` of one preprocessed image ``[3, H, W]`` for class ``target``
    (default: the predicted class). See :func:`attention_maps`."""
    return attention_maps(model, image, text_features, None if target is None else [target], method, target_layer)[0]


# ----------------------------------------------------------------------------- PIL-level helper
def display_image(image: Any, size: int) -> Any:
    """The image as the model sees it (shorter side resized to ``size``, centre-cropped), as PIL RGB,
    so that maps of open_clip's eval preprocessing align with it."""
    import torchvision.transforms.functional as TF

    img = image.convert("RGB")
    return TF.center_crop(TF.resize(img, size), [size, size])


@dataclass
class AttentionSource:
    """Everything needed to explain a run's predictions on PIL images.

    Attributes:
        model: the (adapted) CLIP model.
        preprocess: its evaluation transform (PIL -> tensor), e.g. ``ClipBundle.preprocess_eval``.
        text_features: ``[C, D]`` class text features of the run's classifier.
        method: ``auto``, ``rollout`` or ``gradcam``.
        batch_size: images per forward/backward pass.
    """

    model: nn.Module
    preprocess: Callable
    text_features: torch.Tensor
    method: str = "auto"
    batch_size: int = 16

    @classmethod
    def from_bundle(cls, bundle: Any, text_features: torch.Tensor, method: str = "auto") -> "AttentionSource":
        """From a :class:`~lowres_clip.models.ClipBundle` and its class text features."""
        return cls(bundle.model, bundle.preprocess_eval, text_features, method)

    def image_size(self) -> int:
        size = getattr(vision_tower(self.model), "image_size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def maps(self, images: Sequence[Any], targets: Sequence[int], progress: bool = False) -> list[np.ndarray]:
        """One ``[S, S]`` map per PIL image for its target class (``S``: model input size)."""
        if len(images) != len(targets):
            raise AttentionError(f"{len(images)} images but {len(targets)} targets")
        out: list[np.ndarray] = []
        starts = range(0, len(images), self.batch_size)
        for s in tqdm(starts, desc="attention maps", disable=not progress or len(starts) < 2):
            batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images[s:s + self.batch_size]])
            out.extend(attention_maps(self.model, batch, self.text_features, list(targets[s:s + self.batch_size]),
                                      self.method))
        return out

    def explain(self, images: Sequence[Any], targets: Sequence[int]) -> tuple[list[Any], list[np.ndarray]]:
        """``(display images, maps)``: images cropped like the model input, with their maps."""
        size = self.image_size()
        return [display_image(im, size) for im in images], self.maps(images, targets)


__all__ = [
    "AttentionError", "AttentionSource", "attention_map", "attention_maps", "display_image",
    "find_last_conv_layer", "overlay", "resolve_method", "tower_kind", "vision_tower", "METHODS",
]
