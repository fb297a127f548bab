"""Fused LoRA self-attention: the training path of CLIP-LoRA with fewer passes over memory.

CLIP-LoRA adapts the q/k/v (and optionally out) projections of an attention block separately:
``y_j = x W_j^T + b_j + s * dropout_j(x) A_j^T B_j^T`` (``s = alpha / sqrt(r)``; ``dropout_j`` an
independent inverted dropout per adapter, active only in training; ``A_j``, ``B_j`` the only trained
tensors). Computed projection by projection through peft, one block step casts the fp32 residual
stream to bf16 six times (each frozen projection and each adapter input), draws three dropout masks
with the slow CPU ``bernoulli_``, scales and adds three ``[N, d]`` LoRA outputs, and runs attention
through ``F.scaled_dot_product_attention``, whose CPU backward is about twice as slow as batched
matrix products for CLIP's short sequences.

:func:`fused_self_attention` computes exactly the same function, with:

* **one cast** of the block input to the autocast dtype (``h``), shared by every product;
* **one frozen product** for q, k and v (``h [W_q; W_k; W_v]^T``, weights concatenated per call,
  so nothing can go stale);
* **the three LoRA paths batched**: ``u = bmm(h * keep, A'^T)`` with the three independent keep
  masks stacked (``[3, N, d]``) and ``A' = A * s / (1 - p)``, so the dropout scaling and ``s``
  touch the tiny ``A`` instead of ``[N, d]`` activations, then one ``baddbmm`` adds ``u B^T`` to the
  frozen product (the ``d x d`` matrix ``B A`` is never formed: training stays unmerged);
* **cheap dropout masks** (:func:`keep_mask`): one 64-bit random word gives eight keep decisions
  (``p * 256`` integer, e.g. CLIP-LoRA's 0.25: exactly Bernoulli(1 - p)) or two (other ``p``: the
  keep probability is within 2**-33 of ``1 - p``, finer than the float32 uniforms behind
  ``torch.rand``), about 10x faster than ``bernoulli_`` on a CPU;
* on CPUs, attention as ``softmax(q k^T / sqrt(d) + mask) v`` with batched matrix products
  (softmax in the compute dtype, accumulated in fp32 by the kernel); on CUDA, ``F.scaled_dot_product_attention``.

Only plain LoRA is fused (one active adapter per projection, unmerged, no DoRA or other variant, no
LoRA bias, ``nn.Dropout``/``nn.Identity`` dropout with the same ``p`` on every adapted projection);
:func:`fusable_projections` returns ``None`` otherwise and the caller takes the generic path.
Autograd does the backward; the frozen weights never receive gradients.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer

_STATE = {"enabled": True, "attention": "auto"}
ATTENTION_BACKENDS = ("auto", "bmm", "sdpa")


@contextlib.contextmanager
def fused_lora(enabled: bool = True, attention: str | None = None) -> Iterator[None]:
    """Switch the fused path on or off (and optionally choose the attention backend) inside a block.

    Args:
        enabled: ``False`` makes :class:`~lowres_clip.methods.lora.SeparateQKVAttention` call its
            q/k/v modules one by one (peft's own forward), e.g. to compare both paths.
        attention: ``"auto"`` (CPU: batched products, CUDA: SDPA), ``"bmm"`` or ``"sdpa"``.
    """
    if attention is not None and attention not in ATTENTION_BACKENDS:
        raise ValueError(f"Unknown attention backend {attention!r}; choose one of {ATTENTION_BACKENDS}.")
    old = dict(_STATE)
    _STATE["enabled"] = enabled
    if attention is not None:
        _STATE["attention"] = attention
    try:
        yield
    finally:
        _STATE.update(old)


def fused_enabled() -> bool:
    """Whether the fused path is switched on (see :func:`fused_lora`)."""
    return bool(_STATE["enabled"])


# ------------------------------------------------------------------------------ dropout masks
def keep_mask(shape: Sequence[int], p: float, device: torch.device | str | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent keep decisions (``True`` with probability ``1 - p``) of an inverted dropout.

    Drawn from full-range 64-bit random words split into bytes (when ``p * 256`` is an integer, the
    probability is exact) or 32-bit halves (keep probability within ``2**-33`` of ``1 - p``).
    Follows ``torch.manual_seed`` / ``generator`` like every torch sampler.

    Raises:
        ValueError: ``p`` outside ``[0, 1)``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    n = math.prod(shape)
    if float(p * 256).is_integer():
        per_word, view, threshold = 8, torch.uint8, int(p * 256)  # byte u >= 256 p: P = 1 - p exactly
    else:
        # int32 s uniform on [-2**31, 2**31): P(s >= c) = (2**31 - c) / 2**32 = 1 - p (to 2**-33)
        per_word, view, threshold = 2, torch.int32, int(round((2.0 * p - 1.0) * 2**31))
    words = torch.randint(-2**63, 2**63 - 1, ((n + per_word - 1) // per_word,), dtype=torch.int64,
                          device=device, generator=generator)
    return (words.view(view)[:n] >= threshold).view(*shape)


def keep_values(shape: Sequence[int], p: float, dtype: torch.dtype, device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`keep_mask` as ``0``/``1`` values of ``dtype`` (the form a product with activations needs).

    When ``p * 256`` is an integer ``t``, the random bytes ``u`` become ``clamp(u - (t - 1), 0, 1)``
    in ``dtype`` (exact: small integers), which avoids the slow boolean conversions; otherwise the
    boolean mask is converted.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    if not float(p * 256).is_integer():
        return keep_mask(shape, p, device, generator).view(torch.uint8).to(dtype)
    n = math.prod(shape)
    words = torch.randint(-2**63, 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=device, generator=generator)
    values = words.view(torch.uint8)[:n].to(dtype)
    return values.sub_(int(p * 256) - 1).clamp_(0, 1).view(*shape)


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` whose keep masks come from :func:`keep_values` (random bytes, not ``bernoulli_``).

    The same inverted dropout (each element kept with probability ``1 - p``, exactly when ``p * 256`` is
    an integer, then scaled by ``1 / (1 - p)``), about 10x cheaper to draw on a CPU. peft's LoRA layers
    that the fused attention path does not cover (the embedded model's 1x1 convolutions, where drawing
    the masks with ``bernoulli_`` made the step 1.41x slower: ``benchmarks/cpu_lora_paths.py``) get it in place of their
    ``nn.Dropout`` (:func:`lowres_clip.methods.lora.apply_lora`). Still an ``nn.Dropout`` (``p``,
    ``training``), so :func:`projection_of` reads it as one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.training or self.p == 0.0:
            return x
        keep = keep_values(x.shape, self.p, x.dtype, x.device).mul_(1.0 / (1.0 - self.p))
        return x * keep


class _DroppedDown(torch.autograd.Function):
    """``u_j = (h * keep_j) a_j^T`` for stacked adapters: ``h [N, d]``, ``keep [n, N, d]``, ``a [n, r, d]``.

    Saves the 0/1 mask instead of the dropped inputs and recomputes them in the backward; the
    gradient of ``h`` sums the masked ``grad_u a`` of the adapters without materialising the mask
    products twice.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, keep: torch.Tensor, a: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(h, keep, a)
        return torch.bmm(keep * h.unsqueeze(0), a.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor):  # type: ignore[override]
        h, keep, a = ctx.saved_tensors
        grad_h = grad_a = None
        if ctx.needs_input_grad[2]:
            grad_a = torch.bmm(grad_u.transpose(1, 2), keep * h.unsqueeze(0))
        if ctx.needs_input_grad[0]:
            g = torch.bmm(grad_u, a).mul_(keep)  # [n, N, d]
            grad_h = g[0]
            for j in range(1, g.shape[0]):
                grad_h = grad_h.add_(g[j])
        return grad_h, None, grad_a


# ------------------------------------------------------------------------------ which layers
@dataclass
class Projection:
    """A frozen linear map and, when it carries one, its plain LoRA adapter.

    Attributes:
        weight, bias: the base ``nn.Linear``'s parameters.
        lora_A, lora_B: adapter weights ``[r, d_in]``, ``[d_out, r]`` (``None``: no adapter).
        scale: the adapter's scaling ``s``.
        dropout: the adapter's dropout probability now (0 when its dropout is in eval mode).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    lora_A: torch.Tensor | None = None
    lora_B: torch.Tensor | None = None
    scale: float = 0.0
    dropout: float = 0.0


def projection_of(module: nn.Module) -> Projection | None:
    """``module`` as a :class:`Projection`, or ``None`` when it is not a plain (LoRA-)linear map."""
    if isinstance(module, LoraLayer):
        base = module.get_base_layer()
        if not isinstance(base, nn.Linear) or module.merged or module.disable_adapters:
            return None
        active = [a for a in module.active_adapters if a in module.lora_A]
        if not active:
            return Projection(base.weight, base.bias)
        if len(active) > 1 or active[0] in getattr(module, "lora_variant", {}):
            return None
        name = active[0]
        a, b = module.lora_A[name], module.lora_B[name]
        drop = module.lora_dropout[name]
        if not (isinstance(a, nn.Linear) and isinstance(b, nn.Linear)) or a.bias is not None or b.bias is not None:
            return None
        if isinstance(drop, nn.Dropout):
            p = float(drop.p) if drop.training else 0.0
        elif isinstance(drop, nn.Identity):
            p = 0.0
        else:
            return None
        return Projection(base.weight, base.bias, a.weight, b.weight, float(module.scaling[name]), p)
    if type(module) is nn.Linear:
        return Projection(module.weight, module.bias)
    return None


def fusable_projections(modules: Sequence[nn.Module]) -> list[Projection] | None:
    """The q/k/v modules as :class:`Projection` s when they can be fused, else ``None``.

    Fusable: every module is a plain ``nn.Linear`` or a plain peft LoRA layer (see the module
    docstring) on the same input width, adapters share one rank and one active dropout probability.
    """
    projs = [projection_of(m) for m in modules]
    if any(p is None for p in projs):
        return None
    adapted = [p for p in projs if p.lora_A is not None]
    if len({p.weight.shape[1] for p in projs}) != 1:
        return None
    if adapted and (len({p.lora_A.shape[0] for p in adapted}) != 1 or len({p.dropout for p in adapted}) != 1):
        return None
    return projs  # type: ignore[return-value]


# ------------------------------------------------------------------------------ computation
def compute_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device`` (``None`` when autocast is off)."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def adjacent_view(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The concatenation of ``tensors`` along dim 0 as a view (no copy) when they lie back to back
    in one storage, else ``None``."""
    first = tensors[0]
    if len(tensors) == 1:
        return first
    storage, offset, rows = first.untyped_storage().data_ptr(), first.storage_offset(), 0
    for t in tensors:
        if (not t.is_contiguous() or t.untyped_storage().data_ptr() != storage or t.storage_offset() != offset
                or t.dtype != first.dtype or t.shape[1:] != first.shape[1:]):
            return None
        offset += t.numel()
        rows += t.shape[0]
    return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())


def pack_parameters(params: Sequence[torch.Tensor]) -> None:
    """Move ``params`` (same dtype, device and trailing shape) into one storage, back to back, so
    that :func:`adjacent_view` joins them without a copy. Values and parameter objects are kept;
    only their ``.data`` now views the shared storage."""
    with torch.no_grad():
        joined = torch.cat([p.data.reshape(p.shape) for p in params])
        start = 0
        for p in params:
            p.data = joined[start:start + p.shape[0]]
            start += p.shape[0]


def frozen_concat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors)`` without copying frozen parameters: when none requires a gradient they
    are (re)packed into one storage once (:func:`pack_parameters`) and joined as a view; tensors
    that are trained (e.g. BitFit biases) are concatenated so that gradients reach them."""
    if any(t.requires_grad for t in tensors):
        return torch.cat(list(tensors))
    view = adjacent_view(tensors)
    if view is None and all(isinstance(t, nn.Parameter) for t in tensors) and not torch.is_inference_mode_enabled():
        pack_parameters(tensors)
        view = adjacent_view(tensors)
    return view if view is not None else torch.cat(list(tensors))


def _scaled_cast(t: torch.Tensor, row_scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``t`` (rows scaled by ``row_scale`` when given) in ``dtype``, never modifying ``t`` itself."""
    if row_scale is None:
        return t.to(dtype)
    scale = row_scale.view(-1, *([1] * (t.dim() - 1)))
    if t.dtype != dtype:
        return t.to(dtype).mul_(scale.to(dtype))
    return t * scale.to(dtype)


def packed_projections(h: torch.Tensor, projs: Sequence[Projection],
                       out_scale: Sequence[float] | None = None) -> torch.Tensor:
    """``[P, N, d_out]``: every projection of ``h [N, d_in]`` with its LoRA update, times ``out_scale``.

    ``y_j = c_j (h W_j^T + b_j + s_j * dropout_j(h) A_j^T B_j^T)`` for all ``j`` with one frozen
    matrix product, one batched LoRA-down product over the stacked dropout masks and one batched
    LoRA-up product added to the frozen result. The factors ``c_j`` (``out_scale``, default 1; e.g.
    attention's ``1 / sqrt(d)`` for ``q``) and ``s_j / (1 - p)`` are folded into the weights, so no
    ``[N, d]`` tensor is rescaled. ``h`` is already in the compute dtype; equal output widths.
    """
    n_rows, n_proj = h.shape[0], len(projs)
    width = projs[0].weight.shape[0]
    if any(p.weight.shape[0] != width for p in projs):
        raise ValueError("packed projections must have equal output widths")
    scales = [1.0] * n_proj if out_scale is None else [float(c) for c in out_scale]
    rows = None
    if any(c != 1.0 for c in scales):
        rows = torch.tensor(scales, device=h.device).repeat_interleave(width)
    weight = _scaled_cast(frozen_concat([p.weight for p in projs]), rows, h.dtype)
    bias = None
    if any(p.bias is not None for p in projs):
        bias = _scaled_cast(frozen_concat([p.bias if p.bias is not None else p.weight.new_zeros(width)
                                           for p in projs]), rows, h.dtype)
    y = F.linear(h, weight, bias).view(n_rows, n_proj, width).transpose(0, 1)  # [P, N, d_out] (strided view)
    adapted = [j for j, p in enumerate(projs) if p.lora_A is not None]
    if not adapted:
        return y
    p_drop = projs[adapted[0]].dropout
    # exactly c * s * dropout(h) A^T B^T with c * s / (1 - p) folded into the tiny A
    a = torch.stack([projs[j].lora_A * (scales[j] * projs[j].scale / (1.0 - p_drop)) for j in adapted]).to(h.dtype)
    b = torch.stack([projs[j].lora_B for j in adapted]).to(h.dtype)  # [n_adapted, d_out, r]
    if p_drop > 0.0:
        keep = keep_values((len(adapted), n_rows, h.shape[1]), p_drop, h.dtype, h.device)
        u = _DroppedDown.apply(h, keep, a)  # [n_adapted, N, r]
    else:
        u = F.linear(h, a.flatten(0, 1)).view(n_rows, len(adapted), -1).transpose(0, 1)
    if len(adapted) < n_proj:  # zero rows for the projections without an adapter
        index = torch.tensor(adapted, device=h.device)
        u = u.new_zeros(n_proj, *u.shape[1:]).index_copy(0, index, u)
        b = b.new_zeros(n_proj, *b.shape[1:]).index_copy(0, index, b)
    return torch.baddbmm(y, u, b.transpose(1, 2))


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   is_causal: bool = False, q_scaled: bool = False) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` for ``[B, H, L, d]`` inputs, ``[B, H, L, d]`` out.

    ``q_scaled``: ``q`` already carries the factor ``1 / sqrt(d)``.

    Backend per :func:`fused_lora`: ``auto`` uses batched matrix products on CPUs (their backward is
    about twice as fast as the CPU flash kernel's for CLIP's short sequences) and SDPA elsewhere.
    """
    backend = _STATE["attention"]
    if backend == "auto":
        backend = "bmm" if q.device.type == "cpu" else "sdpa"
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                              scale=1.0 if q_scaled else None)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    if not q_scaled:
        q = q * (1.0 / math.sqrt(d))
    scores = torch.bmm(q.reshape(b * h, lq, d), k.reshape(b * h, lk, d).transpose(1, 2))
    scores = scores.view(b, h, lq, lk)
    if mask is not None:
        scores = scores + mask.to(scores.dtype)
    elif is_causal:
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    probs = scores.softmax(dim=-1)  # compute dtype; the kernel accumulates in fp32
    return torch.bmm(probs.view(b * h, lq, lk), v.reshape(b * h, lk, d)).view(b, h, lq, d)


def fused_self_attention(x: torch.Tensor, projs: Sequence[Projection], out_proj: nn.Module, num_heads: int,
                         mask: torch.Tensor | None, is_causal: bool = False) -> torch.Tensor:
    """Multi-head self-attention of ``x [B, L, E]`` (batch first) with fused LoRA q/k/v.

    Args:
        x: block input (e.g. the fp32 output of ``ln_1``); cast once to the autocast dtype.
        projs: the q, k, v :class:`Projection` s (from :func:`fusable_projections`).
        out_proj: the output projection module (called as is: a peft layer when ``o`` is adapted).
        num_heads: number of heads.
        mask: additive float mask broadcastable to ``[B, H, L, L]``, or ``None``.
        is_causal: causal attention when ``mask`` is ``None``.

    Returns:
        ``[B, L, E]`` attention output after ``out_proj``.
    """
    bsz, length, _ = x.shape
    dtype = compute_dtype(x.device)
    h = x.to(dtype) if dtype is not None else x
    with torch.autocast(x.device.type, enabled=False):
        width = projs[0].weight.shape[0]
        head_dim = width // num_heads
        qkv = packed_projections(h.reshape(bsz * length, -1), projs, (1.0 / math.sqrt(head_dim), 1.0, 1.0))
        heads = qkv.view(3, bsz, length, num_heads, head_dim).transpose(2, 3)
        if _STATE["attention"] != "sdpa" and x.device.type == "cpu":
            heads = heads.contiguous()  # one copy for q, k and v (batched products need it)
        q, k, v = heads.unbind(0)
        out = attention_core(q, k, v, mask, is_causal, q_scaled=True)
    return out_proj(out.transpose(1, 2).reshape(bsz, length, width))
