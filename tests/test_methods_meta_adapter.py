"""Meta-Adapter: the equations (bias-free q/k, unprojected values, sigmoid gate, residual, L2
norm), shapes, invariance to support order, masks and uneven supports, episodes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lowres_clip.methods.meta_adapter import (
    MetaAdapter,
    MetaAdapterConfig,
    episode_mask,
    pack_support,
)
from lowres_clip.utils import AdaptationError


pytestmark = pytest.mark.usefixtures("one_thread")


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_shapes_parameters_and_definition():
    c, k, d = 5, 4, 16
    ad = MetaAdapter(d, dropout=0.0).eval()
    assert ad.q_proj.bias is None and ad.k_proj.bias is None  # bias-free projections
    assert torch.allclose(ad.gate.bias, torch.ones(1))  # gate bias initialised to 1
    n = sum(p.numel() for p in ad.parameters())
    print(f"\nMeta-Adapter D={d}: {n} trainable parameters")
    assert n == 2 * d * d + d + 1
    text, support = _unit(c, d, seed=1), _unit(c, k, d, seed=2)
    out = ad(text, support)
    assert out.shape == (c, d) and torch.allclose(out.norm(dim=-1), torch.ones(c), atol=1e-6)

    # the module docstring's equations, written out for class 0
    t, s = text[0], support[0]
    kv = torch.cat([t[None], s])
    a = torch.softmax((ad.q_proj.weight @ t) @ (kv @ ad.k_proj.weight.T).T / math.sqrt(d), dim=0)
    g = torch.sigmoid(ad.gate.weight @ t + ad.gate.bias)
    assert torch.allclose(out[0], F.normalize(t + g * (a @ kv), dim=0), atol=1e-6)
    assert torch.allclose(ad.gate_values(text)[0], g)


def test_closed_gate_returns_the_text_embedding():
    ad = MetaAdapter(8, gate_bias_init=-1e4, dropout=0.0)
    with torch.no_grad():
        ad.gate.weight.zero_()
    text = _unit(3, 8)
    assert torch.allclose(ad(text, _unit(3, 2, 8, seed=3)), text, atol=1e-6)


def test_output_does_not_depend_on_support_order():
    ad = MetaAdapter(16, num_heads=2, dropout=0.0).eval()
    text, support = _unit(4, 16), _unit(4, 6, 16, seed=5)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ad(text, support), ad(text, support[:, perm]), atol=1e-6)


def test_mask_equals_removing_entries_and_per_query_masks():
    ad = MetaAdapter(8, dropout=0.0).eval()
    text, support = _unit(3, 8), _unit(3, 4, 8, seed=7)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, 2:] = False
    masked = ad(text, support, mask)
    assert torch.allclose(masked[1], ad(text[1:2], support[1:2, :2])[0], atol=1e-6)
    assert torch.allclose(masked[0], ad(text, support)[0], atol=1e-6)
    per_query = torch.stack([mask, torch.ones_like(mask)])  # [B=2, C, K]
    out = ad(text, support, per_query)
    assert out.shape == (2, 3, 8)
    assert torch.allclose(out[0], masked, atol=1e-6) and torch.allclose(out[1], ad(text, support), atol=1e-6)


def test_pack_support_uneven_and_too_many_shots():
    feats = _unit(6, 4)
    labels = torch.tensor([2, 0, 2, 2, 0, 1])
    packed = pack_support(feats, labels, num_classes=4)
    assert packed.features.shape == (4, 3, 4)
    assert packed.mask.tolist() == [[True, True, False], [True, False, False], [True, True, True], [False] * 3]
    assert torch.equal(packed.features[2, 1], feats[2]) and packed.slot[4].tolist() == [0, 1]
    first = pack_support(feats, labels, num_classes=3, shots=1)
    assert first.mask.sum() == 3 and first.slot[2].tolist() == [-1, -1]
    with pytest.raises(AdaptationError, match=r"shots=2 is larger than classes \[1\]"):
        pack_support(feats, labels, num_classes=3, shots=2)
    with pytest.raises(AdaptationError, match="support labels must lie in"):
        pack_support(feats, labels, num_classes=2)


def test_episode_mask_leaves_one_image_out_of_every_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])  # class 2 has a single image
    packed = pack_support(_unit(7, 4), labels, 3)
    torch.manual_seed(0)
    m = episode_mask(packed, torch.tensor([1, 4, 6]), episode_shots=None)
    assert m.shape == (3, 3, 3)
    assert m[:, :2].sum(dim=-1).eq(2).all()  # every class with 3 images keeps 2 for every query
    assert not m[0, 0, 1] and not m[1, 1, 1]  # each query's own image is left out
    assert m[2, 2, 0]  # the single image of class 2 is kept (K = 1)
    sub = episode_mask(packed, None, episode_shots=1)
    assert sub.sum(dim=-1).tolist() == [1, 1, 1]


def test_config_validation():
    with pytest.raises(AdaptationError, match="dropout"):
        MetaAdapterConfig(dropout=1.5).validate()
    with pytest.raises(AdaptationError, match="episode_shots"):
        MetaAdapterConfig(episode_shots=0).validate()
    with pytest.raises(AdaptationError, match="not divisible"):
        MetaAdapter(10, num_heads=3)
