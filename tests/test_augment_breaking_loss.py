"""Breaking loss and memory bank: hand-computed values, FIFO behaviour, one training step."""

from __future__ import annotations

import math

import pytest
import torch

from lowres_clip.augment import AugmentError, BreakingLoss, MemoryBank


def _normalise(rows: list[list[float]]) -> list[list[float]]:
    out = []
    for r in rows:
        n = math.sqrt(sum(v * v for v in r))
        out.append([v / n for v in r])
    return out


def _hand_loss(xp: torch.Tensor, x: torch.Tensor, bank: list[list[float]], sigma: float) -> float:
    """-(1/B) sum_j log(exp(x'_j.x_j/s) / (sum_i exp(x'_j.x_i/s) + sum_m exp(x'_j.k_m/s))), plain loops."""
    a, b = _normalise(xp.tolist()), _normalise(x.tolist())

    def dot(u, v):
        return sum(p * q for p, q in zip(u, v))

    total = 0.0
    for j in range(len(a)):
        pos = math.exp(dot(a[j], b[j]) / sigma)
        denom = sum(math.exp(dot(a[j], b[i]) / sigma) for i in range(len(b)))
        denom += sum(math.exp(dot(a[j], k) / sigma) for k in bank)
        total += -math.log(pos / denom)
    return total / len(a)


def test_memory_bank_is_fifo_of_batches():
    bank = MemoryBank(2)  # capacity in batches, as both reference codes keep a list of batches
    assert len(bank) == 0 and not bank.full and bank.tensor().numel() == 0
    rows = torch.arange(7.0).unsqueeze(1).repeat(1, 2)  # row r = [r, r]
    bank.push(rows[:3])
    assert len(bank) == 3 and bank.batches == 1 and not bank.full
    bank.push(rows[3:5].requires_grad_())
    bank.push(rows[5:7])
    assert bank.batches == 2 and bank.full and len(bank) == 4
    assert bank.tensor()[:, 0].tolist() == [3.0, 4.0, 5.0, 6.0]  # oldest batch dropped, order kept
    assert not bank.tensor().requires_grad  # detached
    with pytest.raises(AugmentError, match="3-d"):
        bank.push(torch.zeros(1, 3))
    bank.clear()
    assert len(bank) == 0
    off = MemoryBank(0)
    off.push(rows)
    assert len(off) == 0


def test_loss_equals_hand_computation_with_bank():
    torch.manual_seed(0)
    sigma = 1 / 80
    loss_fn = BreakingLoss(bank_size=2)  # default temperature 1/80
    assert loss_fn.temperature == pytest.approx(sigma)
    batches = [(torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)) for _ in range(4)]
    bank_batches: list[list[list[float]]] = []  # what the bank should hold: normalised x of the last 2 batches
    for xp, x in batches:
        expected = _hand_loss(xp, x, [r for b in bank_batches for r in b], sigma)
        got = loss_fn(xp, x)
        assert got.dim() == 0
        assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)
        bank_batches = (bank_batches + [_normalise(x.tolist())])[-2:]
        assert torch.allclose(loss_fn.bank.tensor(), torch.tensor([r for b in bank_batches for r in b], dtype=torch.float64))
    assert len(loss_fn.bank) == 6 and loss_fn.bank.full


def test_loss_normalises_inputs_and_eval_mode_keeps_bank():
    torch.manual_seed(1)
    xp, x = torch.randn(4, 8), torch.randn(4, 8)
    a, b = BreakingLoss(bank_size=10), BreakingLoss(bank_size=10)
    raw = a(xp * 7.0, x * 0.1)
    unit = b(torch.nn.functional.normalize(xp, dim=1), torch.nn.functional.normalize(x, dim=1))
    assert raw.item() == pytest.approx(unit.item(), rel=1e-5)
    b.eval()
    b(xp, x)
    assert len(b.bank) == 4  # not updated in eval mode
    # a perfectly aligned pair with orthogonal negatives gives a loss near 0
    eye = torch.eye(4)
    assert BreakingLoss(bank_size=0)(eye, eye).item() < 1e-6
    with pytest.raises(AugmentError, match="equal shape"):
        a(torch.randn(4, 8), torch.randn(3, 8))


def test_one_training_step_changes_exactly_the_trainable_parameters():
    from lowres_clip.models import load_clip

    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", device="cpu")
    model = bundle.model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("visual.") and name.endswith("bias"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    view1 = torch.rand(4, 3, 32, 32)
    view2 = (view1 + 0.1 * torch.randn_like(view1)).clamp(0, 1)
    loss_fn = BreakingLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # every parameter offered; frozen ones get no grad
    loss = loss_fn(model.encode_image(view1), model.encode_image(view2))
    assert torch.isfinite(loss) and loss.item() > 0
    opt.zero_grad()
    loss.backward()
    opt.step()

    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == trainable
    assert len(loss_fn.bank) == 4 and not loss_fn.bank.tensor().requires_grad
