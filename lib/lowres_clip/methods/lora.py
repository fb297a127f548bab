"""LoRA for CLIP as in CLIP-LoRA (Zanella & Ben Ayed, 2024), built on peft.

CLIP-LoRA puts a separate low-rank adapter ``W + s * B A`` (``A``: r x d_in, Kaiming-uniform;
``B``: d_out x r, zeros; dropout on the adapter's input) on the query, key and value projections
(optionally the output projection) of every chosen attention block of the vision encoder, the
text encoder or both. Defaults follow the paper: rank 2, alpha 1, dropout 0.25, q/k/v, all blocks,
both encoders. Scaling: CLIP-LoRA's released code (``loralib/layers.py``) uses
``s = alpha / sqrt(r)`` (rank-stabilised LoRA); ``scaling="clip-lora"`` (default) reproduces it,
``scaling="standard"`` gives the original LoRA ``s = alpha / r``.

open_clip packs q, k, v into one ``nn.MultiheadAttention`` (``in_proj_weight``), so before peft
injects its layers, each of them is replaced by :class:`SeparateQKVAttention`, which holds four
``nn.Linear`` maps with the pretrained weights copied exactly and computes the same function with
``F.scaled_dot_product_attention`` (attention masks and ``batch_first`` honoured). The
ModifiedResNet attention pool (``tiny-rn``, RN50...) already has separate q/k/v linears, but calls
their weights directly; it is replaced by :class:`SeparateAttentionPool2d`, which calls the
linears, so LoRA takes effect. HF BERT towers (MiniLM) already have ``query``/``key``/``value``.

Where LoRA sits, per tower type (what :func:`lora_sites` finds):
  * ViT image towers and the text transformers (open_clip, HF BERT/MiniLM): the q/k/v (optionally
    out) projections of every attention block chosen by ``position``;
  * a ModifiedResNet image tower (RN50, ``tiny-rn``): **only** its attention pool's q/k/v (one
    block); none of its convolutions (1x1 included) is adapted, because a tower with an attention
    module is treated as an attention tower;
  * attention-free image towers (a timm CNN such as the embedded model's EfficientNet-Lite0):
    the pointwise 1x1 convolutions listed in ``cnn_targets``.

Training speed: for self-attention whose q/k/v are plain peft LoRA layers (the CLIP-LoRA case),
:class:`SeparateQKVAttention` computes the same function through
:mod:`lowres_clip.methods.lora_fused` (one cast of the block input, one frozen product for q/k/v
stored back to back, the adapters batched with cheap dropout masks, batched-product attention on
CPUs); other cases, and everything inside ``fused_lora(False)``, call the projections one by one.

On attention-free towers the pointwise
1x1 convolutions (``conv_pw``, ``conv_pwl``, ``conv_head``): a 1x1 convolution is the per-pixel
linear map of a CNN, as q/k/v/out are the per-token linear maps of a transformer, and peft's Conv2d
LoRA adapts it with the same ``B A`` update. Each inverted-residual block counts as one block for
``position``; ``conv_head`` is the last block.

``position`` (which blocks of a tower of depth L get adapters), as CLIP-LoRA's ``position`` names,
generalised from its 12-block tables to any depth, t = ceil(L / 3), h = ceil(L / 2):
  * ``all``: every block;
  * ``bottom``: blocks ``0 .. t-1``; ``mid``: the blocks between bottom and up;
    ``up`` (alias ``top``): the last t blocks;
  * ``half-bottom``: the first h blocks; ``half-up`` (alias ``half-top``): the last h blocks;
  * or an explicit list of block indices.
For L = 12 these are exactly CLIP-LoRA's index lists (0-3, 4-7, 8-11, 0-5, 6-11).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import OrderedDict
from typing import Iterator, Sequence

import peft
import torch
import torch.nn as nn
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer

from ..settings import CNN_TARGETS, LORA_PARAMS, POSITION_ALIASES, POSITIONS, SCALINGS, LoraConfig  # noqa: F401
from ..utils import AdaptationError, check_encoders, seeded, tower_of
from .lora_fused import (MaskDropout, Projection, fusable_projections, fused_enabled, fused_self_attention,
                         pack_parameters)


def _merge_masks(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    batch: int,
    heads: int,
    q_len: int,
    k_len: int,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """One additive float mask broadcastable to ``[B, H, L, S]`` (``nn.MultiheadAttention`` semantics:
    boolean ``True`` = not allowed; float masks are added to the scores)."""

    def additive(m: torch.Tensor) -> torch.Tensor:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(m, float("-inf"))
        return m.to(dtype)

    out = None
    if attn_mask is not None:
        m = additive(attn_mask)
        if m.dim() == 2:
            m = m.view(1, 1, q_len, k_len)
        elif m.dim() == 3:
            m = m.view(batch, heads, q_len, k_len)
        else:
            raise AdaptationError(f"attn_mask must be 2-D or 3-D, got shape {tuple(attn_mask.shape)}")
        out = m
    if key_padding_mask is not None:
        m = additive(key_padding_mask).view(batch, 1, 1, k_len)
        out = m if out is None else out + m
    return out


class SeparateQKVAttention(nn.Module):
    """Drop-in replacement of ``nn.MultiheadAttention`` with separate q/k/v/out ``nn.Linear`` maps.

    Same call signature and outputs as ``nn.MultiheadAttention`` (``batch_first``, ``attn_mask``,
    ``key_padding_mask``, ``need_weights``, ``average_attn_weights``, ``is_causal``); build it with
    :meth:`from_mha` to copy the pretrained weights exactly.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise AdaptationError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "SeparateQKVAttention":
        """A module computing exactly what ``mha`` computes, on the same device and dtype."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise AdaptationError("nn.MultiheadAttention with bias_k/bias_v or add_zero_attn is not supported")
        ref = mha.in_proj_weight if mha.in_proj_weight is not None else mha.q_proj_weight
        new = cls(mha.embed_dim, mha.num_heads, mha.kdim, mha.vdim, mha.in_proj_bias is not None, mha.dropout,
                  mha.batch_first).to(device=ref.device, dtype=ref.dtype)
        e = mha.embed_dim
        with torch.no_grad():
            if mha.in_proj_weight is not None:
                w = mha.in_proj_weight
                ws = (w[:e], w[e:2 * e], w[2 * e:])
            else:
                ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            for lin, wi in zip((new.q_proj, new.k_proj, new.v_proj), ws):
                lin.weight.copy_(wi)
            if mha.in_proj_bias is not None:
                b = mha.in_proj_bias
                for lin, bi in zip((new.q_proj, new.k_proj, new.v_proj), (b[:e], b[e:2 * e], b[2 * e:])):
                    lin.bias.copy_(bi)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.pack_frozen()
        new.train(mha.training)
        return new

    def pack_frozen(self) -> None:
        """Store the q/k/v weights (and biases) back to back in one tensor, so that the fused path
        (:mod:`lowres_clip.methods.lora_fused`) uses them as one ``[3E, E]`` weight without copying.
        Parameter names and values are unchanged."""
        lins = (self.q_proj, self.k_proj, self.v_proj)
        if all(type(m) is nn.Linear for m in lins) and len({m.weight.shape for m in lins}) == 1:
            pack_parameters([m.weight for m in lins])
            if all(m.bias is not None for m in lins):
                pack_parameters([m.bias for m in lins])

    def _fusable(self, self_attention: bool, need_weights: bool) -> list[Projection] | None:
        """The q/k/v projections when the fused LoRA path applies (self-attention, no attention
        weights or attention dropout asked for, plain (LoRA-)linear q/k/v), else ``None``."""
        if not fused_enabled() or need_weights or not self_attention:
            return None
        if self.training and self.dropout > 0.0:
            return None
        projs = fusable_projections((self.q_proj, self.k_proj, self.v_proj))
        if projs is None or any(p.weight.shape[0] != self.embed_dim for p in projs):
            return None
        return projs

    def uses_fused_path(self) -> bool:
        """Whether a self-attention call without attention weights takes the fused LoRA path now."""
        return self._fusable(True, False) is not None

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self_attention = query is key and key is value
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1 if not self.batch_first else 0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, q_len, _ = query.shape
        k_len = key.shape[1]
        h, d = self.num_heads, self.head_dim
        projs = self._fusable(self_attention, need_weights)
        if projs is not None:
            mask = _merge_masks(attn_mask, key_padding_mask, b, h, q_len, k_len, query.dtype)
            out = fused_self_attention(query, projs, self.out_proj, h, mask, is_causal)
            out = out.transpose(0, 1) if not self.batch_first else out
            return (out.squeeze(1 if not self.batch_first else 0) if unbatched else out), None
        q = self.q_proj(query).view(b, q_len, h, d).transpose(1, 2)
        k = self.k_proj(key).view(b, k_len, h, d).transpose(1, 2)
        v = self.v_proj(value).view(b, k_len, h, d).transpose(1, 2)
        mask = _merge_masks(attn_mask, key_padding_mask, b, h, q_len, k_len, q.dtype)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                causal = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(causal, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, p, self.training) @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(b, q_len, h * d))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1 if not self.batch_first else 0)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights


class SeparateAttentionPool2d(nn.Module):
    """open_clip ``AttentionPool2d`` (ModifiedResNet) computed through its q/k/v/c_proj linears.

    The original passes ``q_proj.weight`` etc. straight to ``F.multi_head_attention_forward``, which
    would bypass any adapter wrapped around the linears. Parameter names are unchanged
    (``positional_embedding``, ``q_proj``, ``k_proj``, ``v_proj``, ``c_proj``).
    """

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.positional_embedding = pool.positional_embedding
        self.k_proj, self.q_proj, self.v_proj, self.c_proj = pool.k_proj, pool.q_proj, pool.v_proj, pool.c_proj
        self.num_heads = pool.num_heads
        self.train(pool.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).permute(0, 2, 1)  # NCHW -> N(HW)C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + self.positional_embedding[None].to(x.dtype)
        n, s, c = x.shape
        h = self.num_heads
        q = self.q_proj(x[:, :1]).view(n, 1, h, c // h).transpose(1, 2)
        k = self.k_proj(x).view(n, s, h, c // h).transpose(1, 2)
        v = self.v_proj(x).view(n, s, h, c // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, c)
        return self.c_proj(out)


def _is_attention_pool(module: nn.Module) -> bool:
    return type(module).__name__ == "AttentionPool2d" and all(
        hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj", "c_proj", "positional_embedding")
    )


def separate_attention(model: nn.Module, towers: Sequence[str] = ("vision", "text")) -> int:
    """Replace packed attention modules of the chosen towers by separated equivalents, in place.

    ``nn.MultiheadAttention`` -> :class:`SeparateQKVAttention`; ModifiedResNet ``AttentionPool2d`` ->
    :class:`SeparateAttentionPool2d`. Outputs are unchanged (up to float rounding).

    Returns:
        the number of modules replaced.
    """
    replaced = 0
    for name, module in list(model.named_modules()):
        if not name or tower_of(name) not in towers:
            continue
        if isinstance(module, nn.MultiheadAttention):
            new: nn.Module = SeparateQKVAttention.from_mha(module)
        elif _is_attention_pool(module):
            new = SeparateAttentionPool2d(module)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
        replaced += 1
    return replaced


# ------------------------------------------------------------------------ sites and placement
def _is_linear(m: nn.Module | None) -> bool:
    return isinstance(m, nn.Linear)


def lora_sites(model: nn.Module, tower: str, cnn_targets: Sequence[str] = CNN_TARGETS) -> "OrderedDict[str, dict[str, str]]":
    """The adaptable blocks of one tower, in forward order: ``{block: {kind: module name}}``.

    ``kind`` is ``q``/``k``/``v``/``o`` for attention blocks (separated open_clip attention, the
    ResNet attention pool, HF BERT self-attention) and ``pw:<name>`` for the 1x1 convolutions of an
    attention-free (CNN) tower. Call :func:`separate_attention` first for open_clip models.
    """
    modules = dict(model.named_modules())
    blocks: "OrderedDict[str, dict[str, str]]" = OrderedDict()
    for name, m in modules.items():
        if not name or tower_of(name) != tower:
            continue
        if isinstance(m, SeparateQKVAttention):
            blocks[name] = {"q": f"{name}.q_proj", "k": f"{name}.k_proj", "v": f"{name}.v_proj", "o": f"{name}.out_proj"}
        elif isinstance(m, SeparateAttentionPool2d):
            blocks[name] = {"q": f"{name}.q_proj", "k": f"{name}.k_proj", "v": f"{name}.v_proj", "o": f"{name}.c_proj"}
        elif all(_is_linear(getattr(m, a, None)) for a in ("query", "key", "value")):  # HF BERT self-attention
            site = {"q": f"{name}.query", "k": f"{name}.key", "v": f"{name}.value"}
            out = f"{name.rpartition('.')[0]}.output.dense"
            if _is_linear(modules.get(out)):
                site["o"] = out
            blocks[name] = site
        elif isinstance(m, (nn.MultiheadAttention,)) or _is_attention_pool(m):
            raise AdaptationError(f"Attention module '{name}' is still packed; call separate_attention() first.")
    if blocks:
        return blocks
    pattern = re.compile(r"^(.*\bblocks\.\d+(?:\.\d+)?)\.")
    for name, m in modules.items():
        if not name or tower_of(name) != tower:
            continue
        leaf = name.rpartition(".")[2]
        if isinstance(m, nn.Conv2d) and leaf in cnn_targets and m.kernel_size == (1, 1) and m.groups == 1:
            match = pattern.match(name)
            block = match.group(1) if match else name
            blocks.setdefault(block, {})[f"pw:{leaf}"] = name
    return blocks


def select_blocks(depth: int, position: str | Sequence[int]) -> list[int]:
    """Block indices chosen by ``position`` for a tower of ``depth`` blocks (see module docstring).

    Raises:
        AdaptationError: unknown position, an index out of range, or an empty selection.
    """
    if depth <= 0:
        raise AdaptationError("This tower has no block LoRA can adapt (no attention, no 1x1 convolutions).")
    if not isinstance(position, str):
        idx = sorted({int(i) for i in position})
        bad = [i for i in idx if not 0 <= i < depth]
        if bad or not idx:
            raise AdaptationError(f"LoRA block indices {bad or list(position)} are out of range for depth {depth}.")
        return idx
    pos = POSITION_ALIASES.get(position, position)
    third, half = math.ceil(depth / 3), math.ceil(depth / 2)
    table = {
        "all": range(depth),
        "bottom": range(third),
        "up": range(depth - third, depth),
        "mid": range(third, depth - third),
        "half-bottom": range(half),
        "half-up": range(depth - half, depth),
    }
    if pos not in table:
        raise AdaptationError(
            f"Unknown LoRA position {position!r}; choose one of {POSITIONS + tuple(POSITION_ALIASES)} "
            "or give a list of block indices."
        )
    idx = list(table[pos])
    if not idx:
        raise AdaptationError(f"LoRA position {position!r} selects no block in a tower of depth {depth}.")
    return idx


def lora_targets(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Full names of the modules that get an adapter under ``cfg`` (attention already separated)."""
    cfg.validate()
    names: list[str] = []
    for tower in check_encoders(cfg.encoders):
        blocks = list(lora_sites(model, tower, cfg.cnn_targets).values())
        for i in select_blocks(len(blocks), cfg.position):
            for kind, module_name in blocks[i].items():
                if kind.startswith("pw:") or kind in cfg.params:
                    names.append(module_name)
    if not names:
        raise AdaptationError(f"LoRA config {cfg} selects no module of this model.")
    return names


def apply_lora(model: nn.Module, cfg: LoraConfig, seed: int | None = 0) -> list[str]:
    """Inject CLIP-LoRA adapters into ``model`` in place (peft LoRA layers).

    Separates packed attention of the chosen towers, then injects peft LoRA layers on the selected
    modules (exact-name regex, so the text tower's ``transformer.*`` never matches the image tower's
    ``visual.transformer.*``). peft freezes every non-LoRA parameter. At initialisation ``B = 0``, so
    the model's outputs are unchanged.

    Args:
        model: an open_clip CLIP model (or any model with a ``visual`` image tower).
        cfg: the LoRA configuration.
        seed: seed for the ``A`` initialisation (``None``: global RNG).

    Returns:
        the adapted module names.
    """
    cfg.validate()
    separate_attention(model, check_encoders(cfg.encoders))
    targets = lora_targets(model, cfg)
    pcfg = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules="^(?:" + "|".join(re.escape(t) for t in targets) + ")$",
        use_rslora=cfg.scaling == "clip-lora",
        bias="none",
        init_lora_weights=True,
    )
    device = next(model.parameters()).device
    with seeded(seed, device):
        peft.inject_adapter_in_model(pcfg, model)
    for layer in lora_layers(model):  # same dropout, cheaper masks (see MaskDropout)
        for name, drop in layer.lora_dropout.items():
            if type(drop) is nn.Dropout:
                layer.lora_dropout[name] = MaskDropout(drop.p)
    set_lora_dropout_mode(model, model.training)  # new dropout modules start in train mode
    return targets


def lora_layers(model: nn.Module) -> list[LoraLayer]:
    """All peft LoRA layers inside ``model``."""
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight (``W <- W + s B A``); returns the number merged.

    The merged formulation is the reference the equivalence tests compare the training paths with.
    """
    layers = lora_layers(model)
    for layer in layers:
        layer.merge()
    return len(layers)


@contextlib.contextmanager
def merged_lora(model: nn.Module) -> Iterator[int]:
    """Inside the block every unmerged adapter is folded into its base weight (one product per
    layer instead of three: encoding is 1.77x faster on the embedded model's CPU tower, benchmarks/cpu_lora_paths.py);
    afterwards the base weights are restored bit for bit. Yields the number of layers merged."""
    layers = [m for m in lora_layers(model) if not m.merged and m.active_adapters]
    saved = [m.get_base_layer().weight.detach().clone() for m in layers]
    try:
        for layer in layers:
            layer.merge()
        yield len(layers)
    finally:
        with torch.no_grad():
            for layer, weight in zip(layers, saved):
                if layer.merged:
                    layer.unmerge()
                layer.get_base_layer().weight.copy_(weight)


def set_lora_dropout_mode(model: nn.Module, training: bool) -> None:
    """Put only the adapters' dropout modules in train/eval mode (base layers stay as they are)."""
    for layer in lora_layers(model):
        layer.lora_dropout.train(training)


# ----------------------------------------------------------------------------- registry hooks
def apply_method(model: nn.Module, cfg: LoraConfig, seed: int | None = 0) -> set[str]:
    """The registry's ``apply`` of LoRA (:mod:`lowres_clip.registry`): add the adapters
    (:func:`apply_lora`); the names of the parameters to train (every adapter matrix)."""
    apply_lora(model, cfg, seed)
    return {n for n, _ in model.named_parameters() if "lora_" in n}


def parameter_group(model: nn.Module, name: str) -> str | None:
    """The registry's ``parameter_group`` of LoRA: ``lora.{tower}.{site}.{A|B}``
    (``lora.vision.q_proj.A``) for an adapter matrix of :class:`AdaptedCLIP` (``model.`` prefix),
    ``None`` for any other parameter."""
    inner = name.removeprefix("model.")
    if not name.startswith("model.") or "lora_" not in inner:
        return None
    owner, _, tail = inner.partition(".lora_")
    return f"lora.{tower_of(inner) or 'other'}.{owner.rpartition('.')[2]}.{tail[:1]}"
