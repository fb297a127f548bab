"""Benchmark: the project's CLIP-LoRA training step against a CLIP-LoRA-style baseline and the matmul rate.

One training step = forward, backward and AdamW step of CLIP-LoRA (rank 2, alpha 1, dropout 0.25 on
q, k, v of every block of BOTH encoders, scaling alpha / sqrt(r)) on a batch of random images, with
the class prompts re-encoded every step because the text encoder is trained. Weights are random
(``load_clip(name, "random")``): they do not change the speed. Measured in ONE run, on each device:

* ``project``: the step of ``lowres_clip.train.train``: ``AdaptedCLIP`` from ``build_adapted(...,
  "lora")``, the project's ``autocast`` helper, ``TaskLoss``, AdamW. Its attention runs through
  :mod:`lowres_clip.methods.lora_fused` (one cast and one frozen product for q/k/v, the three LoRA
  paths batched, cheap dropout masks) and its text tower skips the padding after the prompts;
* ``baseline``: the same method written the way CLIP-LoRA's code (``loralib/layers.py``) runs it:
  each ``nn.MultiheadAttention`` replaced by separate q/k/v/out linears with
  ``F.scaled_dot_product_attention``, each adapted projection computing
  ``x W^T + b + s * dropout(x) (B A)^T`` with the ``d x d`` matrix ``B A`` formed at every forward
  (``W + s B A`` merged per forward when dropout is off), full 77-token prompts, the same loss,
  autocast dtype and optimiser. Both start from the same weights and adapters; ``--quick`` checks
  that they compute the same logits;
* a 4096^3 matrix product in fp32 and bf16 (start and end of the run; the best is used).

The two steps alternate (baseline, project, baseline, ...) so a change of machine load hits both.
Step times and matmul times are the best of their repeats (``timeit`` practice: the minimum is the
least disturbed by other processes); medians are printed beside them. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and attention, forward and backward).
Rates use the FLOPs the method needs, counted the same way for both steps: those of the project's
step (the baseline's own count, larger because of its ``d x d`` products and its padded prompts,
is printed beside it).

Goals (ViT-B/16, batch 32, bf16 autocast on a CPU with native bf16): the project's step is
>= 1.5x faster than the baseline's and reaches >= 50 % of the bf16 matmul rate.

    python benchmarks/lora_throughput.py [--models ViT-B-16] [--batch 32] [--warmup 1] [--steps 3] [--profile]
    python benchmarks/lora_throughput.py --quick      # tiny model, one step each: checks the script

``--devices`` defaults to ``cpu`` and, when present, ``cuda``. On a 2-core CPU a ViT-B/16 step takes
about 5-10 s, the default run about 3-4 minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from lowres_clip.methods import LoraConfig, build_adapted
from lowres_clip.methods.lora import SeparateQKVAttention, lora_layers
from lowres_clip.models import load_clip
from lowres_clip.prompts import format_prompts, get_templates
from lowres_clip.train import TaskLoss
from lowres_clip.utils import autocast, cpu_supports_bf16, resolve_precision, seed_everything

GOAL_MODEL = "ViT-B-16"
GOAL_SPEEDUP = 1.5
GOAL_FRACTION = 0.50
MATMUL_N = 4096
LOGIT_SCALE = 100.0


class BenchmarkSetupError(ValueError):
    """The models are not set up the way this benchmark must measure them; the message says what is wrong."""


# ------------------------------------------------------------------------------------ device
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_device(device: torch.device) -> str:
    """One line naming the device, its thread count and whether bf16 is native."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), bf16 supported: {torch.cuda.is_bf16_supported()}"
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
            f"native bf16 (avx512_bf16/amx_bf16): {cpu_supports_bf16()}, torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}")


def load_average() -> str:
    """The 1-minute load average (other processes slow every timing down)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA) so wall times cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class MatmulRate:
    """FLOP rate of an ``n x n @ n x n`` matrix product.

    Attributes:
        wall: best GFLOP per wall second.
        cpu: best GFLOP per process CPU-second (all threads; insensitive to other processes taking
            the CPUs, unlike ``wall``).
    """

    wall: float
    cpu: float

    def best_of(self, other: "MatmulRate") -> "MatmulRate":
        return MatmulRate(max(self.wall, other.wall), max(self.cpu, other.cpu))


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = MATMUL_N, repeats: int = 3) -> MatmulRate:
    """Best FLOP rates of an ``n x n @ n x n`` matrix product in ``dtype`` over ``repeats``."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b  # warm-up (kernel selection, page faults)
    synchronize(device)
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        synchronize(device)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return MatmulRate(2 * n**3 / wall / 1e9, 2 * n**3 / max(cpu, 1e-9) / 1e9)


# ------------------------------------------------------------------------------------ baseline
class BaselineLoraLinear(nn.Module):
    """A frozen linear map with a LoRA adapter computed as CLIP-LoRA's ``LinearLoRA`` does.

    Training with dropout: ``x W^T + b + s * dropout(x) (B A)^T`` (the ``d x d`` product ``B A`` is
    formed at every call and applied as a second full-size product); without dropout:
    ``x (W + s B A)^T + b`` (merged per call, differentiable in ``A`` and ``B``).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, lora_a: torch.Tensor, lora_b: torch.Tensor,
                 scale: float, dropout: float):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.lora_A = nn.Parameter(lora_a.detach().clone())
        self.lora_B = nn.Parameter(lora_b.detach().clone())
        self.scale = scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.lora_B @ self.lora_A  # [d_out, d_in], formed at every forward as in CLIP-LoRA
        if self.dropout is None:
            return F.linear(x, self.weight + self.scale * delta, self.bias)
        out = F.linear(x, self.weight, self.bias)
        x = self.dropout(x) if self.training else x
        return out + torch.matmul(x, delta.transpose(0, 1)) * self.scale


class BaselineLoraAttention(nn.Module):
    """CLIP-LoRA's ``PlainMultiheadAttentionLoRA``: separate q/k/v/out linears, SDPA, LoRA on q/k/v."""

    def __init__(self, attn: SeparateQKVAttention):
        super().__init__()
        self.num_heads, self.batch_first = attn.num_heads, attn.batch_first
        projs = []
        for name in ("q_proj", "k_proj", "v_proj"):
            layer = getattr(attn, name)
            if not isinstance(layer, LoraLayer):
                raise BenchmarkSetupError(f"{name} has no LoRA adapter; the benchmark adapts q, k and v.")
            base = layer.get_base_layer()
            drop = layer.lora_dropout["default"]
            projs.append(BaselineLoraLinear(base.weight, base.bias, layer.lora_A["default"].weight,
                                            layer.lora_B["default"].weight, float(layer.scaling["default"]),
                                            float(drop.p) if isinstance(drop, nn.Dropout) else 0.0))
        self.q_proj, self.k_proj, self.v_proj = projs
        self.out_proj = nn.Linear(attn.embed_dim, attn.embed_dim, bias=attn.out_proj.bias is not None)
        self.out_proj.load_state_dict(attn.out_proj.state_dict())
        self.out_proj.requires_grad_(False)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None, **_: object) -> tuple[torch.Tensor, None]:
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, e = x.shape
        h = self.num_heads
        q, k, v = (p(x).view(b, n, h, e // h).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = attn_mask.to(q.dtype) if attn_mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, e))
        return (out if self.batch_first else out.transpose(0, 1)), None


def build_baseline(project_model: nn.Module, model_name: str, device: torch.device, seed: int) -> nn.Module:
    """A fresh copy of ``model_name`` (same random weights as ``project_model``, same ``seed``) whose
    attention modules are :class:`BaselineLoraAttention` with the project model's adapters."""
    seed_everything(seed)
    model = load_clip(model_name, "random", device).model
    for p in model.parameters():
        p.requires_grad_(False)
    project = dict(project_model.named_modules())
    replaced = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            twin = project.get(name)
            if not isinstance(twin, SeparateQKVAttention):
                raise BenchmarkSetupError(f"the project model has no adapted attention at {name}.")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, BaselineLoraAttention(twin))
            replaced += 1
    if not replaced:
        raise BenchmarkSetupError(f"{model_name} has no nn.MultiheadAttention to adapt.")
    model.eval()
    for m in model.modules():
        if isinstance(m, BaselineLoraLinear):
            m.train()  # only the adapters' dropout is in training mode, as in the project
    return model


# ------------------------------------------------------------------------------------ steps
@dataclass
class Variant:
    """One way of running the training step, timed.

    Attributes:
        name: ``project`` or ``baseline``.
        step: the closure running one step (returns the loss).
        flops: FLOPs counted for one step.
        seconds, cpu_seconds: wall and process CPU time of each timed step.
    """

    name: str
    step: Callable[[], float]
    flops: int = 0
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def project_step(adapted, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None,
                 lr: float = 2e-4) -> Callable[[], float]:
    """One step of ``lowres_clip.train.train``'s loop: forward under the project's autocast helper,
    task loss, backward, AdamW step."""
    params = [p for p in adapted.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    task = TaskLoss().to(adapted.device)

    def step() -> float:
        adapted.train()
        with autocast(adapted.device, dtype):
            loss = task(adapted(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def baseline_logits(model: nn.Module, tokens: torch.Tensor, images: torch.Tensor,
                    dtype: torch.dtype | None) -> torch.Tensor:
    """CLIP-LoRA's forward: full-length prompts and images under autocast, cosine logits x 100."""
    with autocast(images.device, dtype):
        text = model.encode_text(tokens)
        image = model.encode_image(images)
    text = F.normalize(text.float(), dim=-1)
    return LOGIT_SCALE * F.normalize(image.float(), dim=-1) @ text.t()


def baseline_step(model: nn.Module, tokens: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                  dtype: torch.dtype | None, lr: float = 2e-4) -> Callable[[], float]:
    """One CLIP-LoRA training step: forward, cross-entropy, backward, AdamW over the adapters."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)

    def step() -> float:
        loss = F.cross_entropy(baseline_logits(model, tokens, images, dtype), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _cpu_flash_flops(query, key, value, *_, out_shape=None, **__) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward_flops(grad_out, query, key, value, *_, out_shape=None, **__) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's flop counter knows the CUDA SDPA kernels but not the CPU flash kernel: without these the
# baseline's attention would count as zero FLOPs (torch's SDPA formulas: 2 products forward, 5 backward)
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops,
}


def count_flops(step: Callable[[], float]) -> int:
    """FLOPs of one call of ``step`` (matrix products, convolutions, attention; forward and backward)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        step()
    return int(counter.get_total_flops())


def time_alternating(variants: Sequence[Variant], device: torch.device, warmup: int, steps: int) -> None:
    """Run ``warmup`` untimed, then ``steps`` timed rounds of every variant in turn (interleaved, so
    that a change of machine load affects all of them alike)."""
    for i in range(warmup + steps):
        for v in variants:
            synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            v.step()
            synchronize(device)
            if i >= warmup:
                v.seconds.append(time.perf_counter() - t0)
                v.cpu_seconds.append(time.process_time() - c0)


# ------------------------------------------------------------------------------------ profile
def op_category(name: str, shapes: list) -> str:
    """Coarse category of a profiled aten op (see :func:`profile_step`)."""
    dims = [d for s in shapes if isinstance(s, list) for d in s]
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        if dims and min(dims) <= 8:
            return "LoRA side products (a dim <= 8)"
        return "attention products (bmm)" if name == "aten::bmm" else "frozen matrix products"
    if "scaled_dot_product" in name or "softmax" in name:
        return "attention (softmax / SDPA)"
    if name in ("aten::bernoulli_", "aten::native_dropout", "aten::random_", "aten::ge", "aten::where"):
        return "dropout masks"
    if name in ("aten::copy_", "aten::_to_copy", "aten::cat", "aten::stack"):
        return "copies / dtype casts"
    if "layer_norm" in name:
        return "layer norm"
    if "gelu" in name:
        return "GELU"
    if "convolution" in name:
        return "convolution"
    if name in ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::sum", "aten::fill_", "aten::zero_"):
        return "element-wise add/mul/sum/fill"
    return "other"


def profile_step(step: Callable[[], float]) -> list[tuple[str, float]]:
    """Self CPU seconds per :func:`op_category` of one profiled ``step``, largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    totals: Counter[str] = Counter()
    for event in prof.key_averages(group_by_input_shape=True):
        totals[op_category(event.key, event.input_shapes)] += event.self_cpu_time_total / 1e6
    return totals.most_common()


# ------------------------------------------------------------------------------------ main
@dataclass
class ModelResult:
    """Both steps of one model on one device."""

    device: torch.device
    model: str
    dtype: torch.dtype | None
    batch: int
    project: Variant
    baseline: Variant

    @property
    def speedup(self) -> float:
        return self.baseline.best / self.project.best

    def gflops(self, v: Variant) -> float:
        """Method FLOPs (the project's count) per best wall second of ``v``, GFLOP/s."""
        return self.project.flops / v.best / 1e9

    def cpu_gflops(self, v: Variant) -> float:
        """Method FLOPs per process CPU-second of ``v``'s least-CPU step, GFLOP/s."""
        return self.project.flops / min(v.cpu_seconds) / 1e9

    @property
    def precision(self) -> str:
        return str(self.dtype).replace("torch.", "") if self.dtype is not None else "fp32"


def check_models(adapted, baseline: nn.Module) -> str:
    """Check how both models are set up; return a one-line description.

    Raises:
        BenchmarkSetupError: packed attention left, merged adapters, the fused path not taken, or an
            encoder without adapters.
    """
    if any(isinstance(m, nn.MultiheadAttention) for m in adapted.modules()):
        raise BenchmarkSetupError("packed nn.MultiheadAttention left in the project model; apply_lora separates it.")
    layers = lora_layers(adapted.model)
    if any(m.merged for m in layers):
        raise BenchmarkSetupError("LoRA layers are merged; the benchmark measures unmerged training.")
    if not (adapted.vision_trainable and adapted.text_trainable):
        raise BenchmarkSetupError("LoRA must adapt both encoders (LoraConfig(encoders='both')).")
    attns = [m for m in adapted.modules() if isinstance(m, SeparateQKVAttention)]
    fused = sum(m.uses_fused_path() for m in attns)
    if fused != len(attns):
        raise BenchmarkSetupError(f"only {fused} of {len(attns)} attention modules take the fused LoRA path.")
    n_base = sum(isinstance(m, BaselineLoraLinear) for m in baseline.modules())
    return (f"project: {len(layers)} unmerged LoRA layers in {fused} fused attention modules; "
            f"baseline: {n_base} CLIP-LoRA-style layers (B A formed per forward, SDPA)")


def check_same_function(adapted, baseline: nn.Module, tokens: torch.Tensor, images: torch.Tensor) -> float:
    """Largest logit difference of both models in fp32, adapters' dropout off, ``B`` made non-zero.

    Restores the adapters afterwards. Used by ``--quick`` (small models only)."""
    layers = lora_layers(adapted.model)
    base_layers = [m for m in baseline.modules() if isinstance(m, BaselineLoraLinear)]
    saved = [layer.lora_B["default"].weight.detach().clone() for layer in layers]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer, twin in zip(layers, base_layers):
            new_b = 0.2 * torch.randn(layer.lora_B["default"].weight.shape, generator=gen)
            layer.lora_B["default"].weight.copy_(new_b)
            twin.lora_B.copy_(new_b)
        adapted.eval()
        baseline.eval()
        diff = (adapted(images) - baseline_logits(baseline, tokens, images, None)).abs().max().item()
        for layer, twin, b in zip(layers, base_layers, saved):
            layer.lora_B["default"].weight.copy_(b)
            twin.lora_B.copy_(b)
    for m in baseline.modules():
        if isinstance(m, BaselineLoraLinear):
            m.train()
    return diff


def run_model(model_name: str, device: torch.device, args: argparse.Namespace) -> ModelResult:
    """Build the project's model and the baseline, count each step's FLOPs, time them alternately."""
    seed_everything(args.seed)
    bundle = load_clip(model_name, "random", device)
    cfg = LoraConfig(rank=2, alpha=1.0, dropout=0.25, encoders="both", params=("q", "k", "v"), position="all")
    classnames = [f"class {i}" for i in range(args.classes)]
    templates = get_templates("eurosat")
    adapted = build_adapted(bundle, classnames, templates, "lora", lora_cfg=cfg, seed=args.seed, copy_model=False)
    baseline = build_baseline(adapted.model, model_name, device, args.seed)
    size = bundle.image_size
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, size, size, generator=gen).to(device)
    labels = torch.randint(0, args.classes, (args.batch,), generator=gen).to(device)
    tokens = bundle.tokenizer([p for per_class in format_prompts(classnames, templates) for p in per_class]).to(device)
    print(f"\n[{device.type}] {model_name}: {size}px, batch {args.batch}, {check_models(adapted, baseline)}, "
          f"{adapted.parameter_counts()['lora']:,} trainable LoRA parameters")
    if args.quick:
        diff = check_same_function(adapted, baseline, tokens, images)
        print(f"  same function: max |logit difference| project vs baseline (fp32, no dropout) = {diff:.2e}")
        if diff > 1e-3:
            raise BenchmarkSetupError(f"the baseline computes other logits than the project (max diff {diff:.2e}).")
    dtype = resolve_precision(args.precision, device)
    project = Variant("project", project_step(adapted, images, labels, dtype))
    base = Variant("baseline", baseline_step(baseline, tokens, images, labels, dtype))
    for v in (base, project):
        v.flops = count_flops(v.step)  # doubles as the first warm-up step
    time_alternating([base, project], device, args.warmup, args.steps)
    res = ModelResult(device, model_name, dtype, args.batch, project, base)
    for v in (base, project):
        print(f"  {v.name:8s} ({res.precision}): best {v.best:7.3f} s/step, median {v.median:7.3f}, "
              f"{args.batch / v.best:7.2f} images/s, {v.flops / 1e9:.5g} GFLOP counted")
    print(f"  project {res.speedup:.2f}x the baseline (load {load_average()})")
    if args.profile and model_name == args.models[-1]:
        breakdown = profile_step(project.step)
        total = sum(s for _, s in breakdown) or 1.0
        print(f"  profile of one project step of {model_name} (self CPU time by category):")
        for cat, s in breakdown:
            print(f"    {cat:34s} {s:7.2f} s  {100 * s / total:5.1f}%")
    return res


def print_table(results: list[ModelResult], mm: dict[str, MatmulRate]) -> None:
    """The results table; FLOP rates use the method FLOPs (project count) for both steps."""
    cpu_clock = results[0].device.type == "cpu"
    print(f"\n{'model':10s} {'step':8s} {'s/step':>7s} {'images/s':>9s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} "
          f"{'%fp32 mm':>9s} {'%bf16 mm':>9s} {'%bf16 mm CPU-time':>18s} {'speed-up':>9s}")
    for r in results:
        for v in (r.baseline, r.project):
            cpu = f"{100 * r.cpu_gflops(v) / mm['bf16'].cpu:17.1f}%" if cpu_clock else f"{'n/a':>18s}"
            print(f"{r.model:10s} {v.name:8s} {v.best:7.3f} {r.batch / v.best:9.2f} {r.project.flops / 1e9:11.1f} "
                  f"{r.gflops(v):8.1f} {100 * r.gflops(v) / mm['fp32'].wall:8.1f}% "
                  f"{100 * r.gflops(v) / mm['bf16'].wall:8.1f}% {cpu} {r.baseline.best / v.best:8.2f}x")


def run_device(device: torch.device, args: argparse.Namespace) -> str:
    """Measure every model on ``device``; returns this device's part of the ``SUMMARY`` line."""
    print(f"\ndevice: {describe_device(device)}; load average {load_average()}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    mm_start = {k: matmul_rate(dt, device, args.matmul_n, args.matmul_repeats) for k, dt in dtypes.items()}
    results = [run_model(name, device, args) for name in args.models]
    mm_end = {k: matmul_rate(dt, device, args.matmul_n, args.matmul_repeats) for k, dt in dtypes.items()}
    mm = {k: mm_start[k].best_of(mm_end[k]) for k in dtypes}
    print(f"\n[{device.type}] {args.matmul_n}^3 matrix product, GFLOP/s (start / end of run): "
          + ", ".join(f"{k} {mm_start[k].wall:.1f} / {mm_end[k].wall:.1f}" for k in dtypes)
          + "; per process CPU-second: " + ", ".join(f"{k} {mm[k].cpu:.1f}" for k in dtypes))
    print_table(results, mm)
    return device_summary(device, results, mm, args.matmul_n)


def device_summary(device: torch.device, results: list[ModelResult], mm: dict[str, MatmulRate], n: int) -> str:
    """``<device> <model> <precision>: speed-up and rate, with verdicts for the goal model``."""
    parts = []
    for r in results:
        frac = r.gflops(r.project) / mm["bf16"].wall
        text = (f"{device.type} {r.model} {r.precision}: {r.project.best:.2f} s/step = {r.speedup:.2f}x the "
                f"CLIP-LoRA-style baseline ({r.baseline.best:.2f} s), {r.gflops(r.project):.0f} GFLOP/s = "
                f"{100 * frac:.0f}% of the bf16 {n}^3 matmul rate")
        if device.type == "cpu":
            text += f" ({100 * r.cpu_gflops(r.project) / mm['bf16'].cpu:.0f}% by CPU time)"
        if r.model == GOAL_MODEL:
            text += (f" [goals: >= {GOAL_SPEEDUP}x {'MET' if r.speedup >= GOAL_SPEEDUP else 'MISSED'}, "
                     f">= {100 * GOAL_FRACTION:.0f}% {'MET' if frac >= GOAL_FRACTION else 'MISSED'}]")
        parts.append(text)
    return "; ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[GOAL_MODEL], help="open_clip model names")
    ap.add_argument("--batch", type=int, default=32, help="images per step")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed rounds (the FLOP-counting step comes on top)")
    ap.add_argument("--steps", type=int, default=3, help="timed rounds (the best is reported)")
    ap.add_argument("--classes", type=int, default=10, help="class prompts re-encoded every step")
    ap.add_argument("--precision", default="auto", help="auto | bf16 | fp32 (| fp16 on CUDA)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, and cuda when present)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matmul-n", type=int, default=MATMUL_N, help="size of the reference matrix product")
    ap.add_argument("--matmul-repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="profile one project step of the last model")
    ap.add_argument("--quick", action="store_true",
                    help="check the script: tiny-vit, batch 4, one timed round, 256^3 matmul, same-function check")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.batch, args.warmup, args.steps = ["tiny-vit"], 4, 0, 1
        args.matmul_n, args.matmul_repeats = 256, 1
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        ap.error("--steps and --batch must be >= 1 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"batch {args.batch}, {args.classes} class prompts, LoRA r=2 alpha=1 dropout=0.25 on q/k/v of both "
          f"encoders, {args.warmup} warm-up + {args.steps} timed rounds (baseline and project alternate)")
    parts = [run_device(torch.device(d), args) for d in devices]
    if "cuda" not in devices:
        parts.append("cuda: not available" if not torch.cuda.is_available() else "cuda: not measured (--devices)")
    print(f"\nSUMMARY lora-throughput: {'; '.join(parts)}; load {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
