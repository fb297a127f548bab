"""Meta-Adapter (Cheng et al., 2024): an online few-shot learner for vision-language models.

For every class, the class text embedding ``t`` is the query of a single cross-attention whose
keys and values are ``t`` itself plus the class's K support image features ``s_1..s_K``:

    a      = softmax( (W_q t) . (W_k [t, s_1..s_K]) / sqrt(d) )      (bias-free W_q, W_k)
    out    = a . [t, s_1..s_K]                                        (values are not projected)
    g      = sigmoid(w_g . t + b_g)                                   (gate, b_g initialised to 1)
    t'     = normalize(t + g * out)                                   (residual, L2 normalisation)

and images are classified by ``100 * cos(image, t')``. The attention is a weighted sum over the
support set, so ``t'`` does not depend on the order of the support images. This is the reference
module (ArsenalCheng/Meta-Adapter ``main.py``, ``MetaAdapter.forward``: scores divided by
``sqrt(D)`` for one head, values ``[t, s_1..s_K]`` unprojected, gate ``sigmoid(alpha_proj(t))``).
Optional dropout on the attention weights (``MetaAdapterConfig.dropout``; the reference has none,
the seed authors put 0.4 on the q/k projections). Classes may have different numbers of support images (long
tails): the support is packed into ``[C, K_max, D]`` with a boolean mask (:func:`pack_support`).

Training is episodic on the few-shot set: support and queries are drawn from the same K shots;
each query's own image is left out of its support, and one random image of every other class too,
so that support sizes do not give the label away (:func:`episode_mask`; a class with one image
keeps it), optionally keeping a random ``episode_shots`` subset per class; evaluation uses all K
shots.

Not reproduced: the paper's meta-training on ImageNet before online use on other datasets (no
ImageNet here, and its released weights exist only for OpenAI's RN50/RN101/ViT-B backbones). The
reference's per-dataset script for EuroSAT (``datasets/eurosat.py``) overwrites its base-class
filter, so it trains on K shots of *all* classes, as this module does; it differs in taking the
support (its cache keys, averaged over 10 random augmentations) from a separate K-shot sample of
the validation split and in replacing, after each step, the oldest support feature of a class by
each training query's feature. The run's training protocol for the Meta-Adapter alone is
``MetaAdapterConfig.train`` under ``budget: reference`` (the profiles: the reference's lr 1e-4, AdamW
eps 1e-4, 5 epochs of batch 64, crops of scale 0.5-1, no dropout), the run's ``train`` settings under
``budget: run`` (as in combinations); see :meth:`lowres_clip.settings.MetaAdapterConfig.train_protocol`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..settings import MetaAdapterConfig  # noqa: F401 (re-exported)
from ..utils import AdaptationError, seeded



class MetaAdapter(nn.Module):
    """The Meta-Adapter module (see the module docstring for the equations).

    Args:
        dim: embedding dimension D.
        num_heads: attention heads (D must be divisible by it).
        dropout: attention-weight dropout in training.
        gate_bias_init: initial bias of the gate.
        seed: seed of the Xavier initialisation (``None``: global RNG).
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.4, gate_bias_init: float = 1.0,
                 seed: int | None = 0):
        super().__init__()
        if dim % num_heads:
            raise AdaptationError(f"Meta-Adapter dim {dim} is not divisible by num_heads {num_heads}.")
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(dim, 1, bias=True)
        with seeded(seed), torch.no_grad():
            nn.init.xavier_uniform_(self.q_proj.weight)
            nn.init.xavier_uniform_(self.k_proj.weight)
            nn.init.xavier_uniform_(self.gate.weight)
            nn.init.constant_(self.gate.bias, gate_bias_init)

    def gate_values(self, text: torch.Tensor) -> torch.Tensor:
        """The gate ``sigmoid(w_g . t + b_g)`` per class: ``[C, D] -> [C, 1]``."""
        return torch.sigmoid(self.gate(text))

    def forward(self, text: torch.Tensor, support: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Adapted class embeddings.

        Args:
            text: class text embeddings ``[C, D]`` (L2-normalised).
            support: support image features ``[C, K, D]`` (L2-normalised; K may be 0).
            mask: ``[C, K]`` boolean, ``True`` = valid support entry (``None``: all valid), or
                ``[B, C, K]`` for one support set per query (training episodes).

        Returns:
            ``[C, D]`` (or ``[B, C, D]`` with a per-query mask) L2-normalised adapted class embeddings.
        """
        c, k, d = support.shape
        if text.shape != (c, d):
            raise AdaptationError(f"text {tuple(text.shape)} and support {tuple(support.shape)} do not match.")
        text = text.to(self.q_proj.weight.dtype)
        support = support.to(text.dtype)
        h, hd = self.num_heads, d // self.num_heads
        kv = torch.cat([text[:, None], support], dim=1)  # [C, K+1, D]
        q = self.q_proj(text).view(c, 1, h, hd).transpose(1, 2)  # [C, H, 1, hd]
        keys = self.k_proj(kv).view(c, k + 1, h, hd).transpose(1, 2)  # [C, H, K+1, hd]
        values = kv.view(c, k + 1, h, hd).transpose(1, 2)
        scores = (q @ keys.transpose(-2, -1)) / math.sqrt(hd)  # [C, H, 1, K+1]
        if mask is not None:
            mask = mask.bool().to(scores.device)
            valid = torch.cat([torch.ones(*mask.shape[:-1], 1, dtype=torch.bool, device=mask.device), mask], dim=-1)
            scores = scores.masked_fill(~valid[..., None, None, :], float("-inf"))  # [(B,) C, H, 1, K+1]
        attn = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        out = (attn @ values).squeeze(-2).flatten(-2)  # [(B,) C, D]
        return F.normalize(text + self.gate_values(text) * out, dim=-1)


@dataclass
class PackedSupport:
    """Support features packed per class.

    Attributes:
        features: ``[C, K_max, D]`` (zeros where absent).
        mask: ``[C, K_max]`` boolean, ``True`` = a real support image.
        slot: ``[N, 2]`` (class, position) of every input row, to mask out query images.
    """

    features: torch.Tensor
    mask: torch.Tensor
    slot: torch.Tensor


def pack_support(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 shots: int | None = None) -> PackedSupport:
    """Pack ``[N, D]`` support features with labels into ``[C, K_max, D]`` plus a validity mask.

    Args:
        features: support image features (L2-normalised).
        labels: their labels ``[N]`` in ``[0, num_classes)``.
        num_classes: C.
        shots: keep the first ``shots`` images of every class (``None``: all, possibly uneven).

    Raises:
        AdaptationError: labels out of range, or ``shots`` larger than a class has.
    """
    labels = labels.long().cpu()
    if features.dim() != 2 or len(features) != len(labels):
        raise AdaptationError(f"support features {tuple(features.shape)} and labels {tuple(labels.shape)} mismatch.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise AdaptationError(f"support labels must lie in [0, {num_classes}); got {labels.unique().tolist()}.")
    counts = torch.bincount(labels, minlength=num_classes)
    if shots is not None:
        short = [c for c in range(num_classes) if counts[c] < shots]
        if shots <= 0 or short:
            raise AdaptationError(
                f"shots={shots} is larger than classes {short[:10]} allow (counts {counts[short[:10]].tolist()}); "
                "use shots=None to keep every available image (uneven, masked support)."
            )
    position = torch.zeros_like(labels)
    seen = torch.zeros(num_classes, dtype=torch.long)
    for i, y in enumerate(labels.tolist()):
        position[i] = seen[y]
        seen[y] += 1
    keep = position < shots if shots is not None else torch.ones_like(labels, dtype=torch.bool)
    k_max = int(position[keep].max().item()) + 1 if keep.any() else 0
    packed = features.new_zeros(num_classes, k_max, features.shape[1])
    mask = torch.zeros(num_classes, k_max, dtype=torch.bool)
    idx = keep.nonzero().squeeze(1)
    packed[labels[idx], position[idx]] = features[idx.to(features.device)]
    mask[labels[idx], position[idx]] = True
    slot = torch.stack([labels, position], dim=1)
    slot[~keep] = -1
    return PackedSupport(packed, mask.to(features.device), slot)


def episode_mask(packed: PackedSupport, query_indices: torch.Tensor | None, episode_shots: int | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The support mask of one training episode: ``[C, K]``, or ``[B, C, K]`` with queries.

    With ``episode_shots``, a random subset of at most that many images per class is kept. With
    ``query_indices`` (rows of the packed support that are in the batch), every query gets its own
    support set: one image is left out of *every* class with at least two images - the query's own
    image for its class, a random one for the others - so all classes lose one image and the support
    sizes carry no hint of the query's label. A class with a single image keeps it (K = 1, as in the
    paper's code, where the query is another augmented view of a support image).
    """
    mask = packed.mask.clone()
    if episode_shots is not None and mask.shape[1] > episode_shots:
        scores = torch.rand(mask.shape, generator=generator).to(mask.device)
        scores = scores.masked_fill(~mask, 2.0)
        rank = scores.argsort(dim=1).argsort(dim=1)
        mask &= rank < episode_shots
    if query_indices is None or len(query_indices) == 0 or mask.shape[1] == 0:
        return mask
    slots = packed.slot[query_indices.long().cpu()].to(mask.device)  # [B, 2] (class, position) or -1
    per_query = mask[None].repeat(len(slots), 1, 1)  # [B, C, K]
    scores = torch.rand(per_query.shape, generator=generator).to(mask.device).masked_fill(~per_query, -1.0)
    drop = scores.argmax(dim=-1)  # a random valid image per (query, class)
    rows = torch.nonzero(slots[:, 0] >= 0).squeeze(1)
    cls, pos = slots[rows, 0], slots[rows, 1]
    own = mask[cls, pos]  # the query's image is in this episode's support of its class
    drop[rows[own], cls[own]] = pos[own]
    droppable = per_query.sum(dim=-1) > 1
    per_query[droppable] &= ~F.one_hot(drop[droppable], mask.shape[1]).bool()
    return per_query


# ----------------------------------------------------------------------------- registry hooks
HEAD_ATTRIBUTE = "meta_adapter"  # the head's attribute in AdaptedCLIP: its parameters are "meta_adapter.*"


def build_head(dim: int, cfg: MetaAdapterConfig, seed: int = 0) -> MetaAdapter:
    """The registry's ``head`` of the Meta-Adapter (:mod:`lowres_clip.registry`): a
    :class:`MetaAdapter` of embedding size ``dim`` on top of the features (``cfg`` validated)."""
    cfg.validate()
    return MetaAdapter(dim, cfg.num_heads, cfg.dropout, cfg.gate_bias_init, seed)


def parameter_group(model: nn.Module, name: str) -> str | None:
    """The registry's ``parameter_group`` of the Meta-Adapter: the parameter's own name
    (``meta_adapter.gate.bias``; its values are not projected), ``None`` for any other parameter."""
    return name if name.startswith(HEAD_ATTRIBUTE + ".") else None
