"""Benchmark: LoRA training-step throughput of CLIP ViT-B/32 and ViT-B/16, fp32 versus the fastest mode.

One training step = forward, backward and AdamW step of CLIP-LoRA (rank 2 on q, k, v of every block
of BOTH encoders, built by :func:`lowres_clip.methods.build_adapted`) on a batch of random images,
with the class prompts re-encoded every step because the text encoder is trained. Weights are random
(``load_clip(name, "random")``): they do not change the speed.

Modes:
  * ``fp32``: no autocast, NCHW images (what ``TrainConfig(precision="fp32")`` does);
  * ``fast``: the fastest mode this device supports: autocast with
    ``resolve_precision("auto", device)`` (bf16 on CPUs with ``avx512_bf16``/``amx_bf16`` and on
    CUDA; fp32 elsewhere), channels-last images, attention through
    ``F.scaled_dot_product_attention`` (the project's ``SeparateQKVAttention``) and peft's unmerged
    LoRA path ``x A^T B^T`` (the full ``B A`` matrix is never formed). Both are checked, not assumed.

In the same run it measures the FLOP rate of a 4096^3 matrix product in fp32 and bf16 and prints each
step's achieved FLOP rate (FLOPs counted once per model with ``torch.utils.flop_counter.FlopCounterMode``)
as a fraction of both. Step times and matrix-product times are the best of their repeats (``timeit``
practice: the minimum is the least disturbed by other processes); medians are printed beside them.

Goal: in the fast mode, ViT-B/16 reaches at least 40% of the bf16 matrix-product rate.

    python benchmarks/lora_throughput.py [--models ViT-B-32 ViT-B-16] [--batch 32] [--warmup 2] [--steps 3] [--profile]

Defaults are sized for a 2-core CPU (a ViT-B/16 step at batch 32 takes 10-30 s there): the whole run
takes about 5 minutes on an idle 2-core CPU and 7-10 minutes when other processes share it.
``--profile`` adds one profiled fast step of the last model and prints where its time goes (matrix
products, attention, LoRA side path, dropout, casts, ...).
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
from typing import Callable

import torch
import torch.nn as nn
from peft.tuners.lora import LoraLayer
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from lowres_clip.methods import LoraConfig, build_adapted
from lowres_clip.methods.lora import SeparateQKVAttention
from lowres_clip.models import load_clip
from lowres_clip.prompts import get_templates
from lowres_clip.train import TaskLoss
from lowres_clip.utils import autocast, cpu_supports_bf16, resolve_precision, seed_everything

GOAL_MODEL = "ViT-B-16"
GOAL_FRACTION = 0.40
MATMUL_N = 4096


class BenchmarkSetupError(ValueError):
    """The model is not set up the way this benchmark must measure it; the message says what is wrong."""


@dataclass
class Mode:
    """One way of running the training step.

    Attributes:
        name: label printed in the table (``fp32`` or ``fast``).
        dtype: autocast dtype (``None``: plain fp32, no autocast).
        channels_last: feed the images in channels-last memory format.
    """

    name: str
    dtype: torch.dtype | None
    channels_last: bool

    def describe(self) -> str:
        """A short human-readable description of the mode."""
        amp = f"{str(self.dtype).replace('torch.', '')} autocast" if self.dtype is not None else "no autocast"
        return f"{amp}{', channels-last' if self.channels_last else ''}"

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in this mode's memory format."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


@dataclass
class Result:
    """Timings of one model in one mode.

    Attributes:
        model, mode: what was measured.
        flops: FLOPs of one training step (forward + backward + optimiser).
        batch: images per step.
        seconds: wall time of each timed step.
        cpu_seconds: process CPU time (all threads) of each timed step.
    """

    model: str
    mode: Mode
    flops: int
    batch: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def cpu_gflops(self) -> float:
        """FLOPs per process CPU-second (all threads) of the step with the least CPU time, GFLOP."""
        return self.flops / min(self.cpu_seconds) / 1e9

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.batch / self.best

    @property
    def gflops(self) -> float:
        """Achieved FLOP rate of the best step, GFLOP/s."""
        return self.flops / self.best / 1e9


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


def modes_for(device: torch.device) -> list[Mode]:
    """``fp32`` and the fastest mode the device supports (see the module docstring)."""
    return [Mode("fp32", None, False), Mode("fast", resolve_precision("auto", device), True)]


# ------------------------------------------------------------------------------------ model
def build_lora(model_name: str, device: torch.device, num_classes: int, seed: int):
    """CLIP-LoRA (rank 2, q/k/v, every block of both encoders) on a random-weight open_clip model."""
    bundle = load_clip(model_name, "random", device)
    cfg = LoraConfig(rank=2, encoders="both", params=("q", "k", "v"), position="all")
    classnames = [f"class {i}" for i in range(num_classes)]
    return build_adapted(bundle, classnames, get_templates("eurosat"), "lora", lora_cfg=cfg, seed=seed,
                         copy_model=False)


def check_fast_path(adapted: nn.Module) -> str:
    """Check that attention runs through SDPA and LoRA is unmerged; return a one-line description.

    Raises:
        BenchmarkSetupError: packed ``nn.MultiheadAttention`` left in the model, merged adapters, or
            no adapter on one of the encoders.
    """
    packed = [n for n, m in adapted.named_modules() if isinstance(m, nn.MultiheadAttention)]
    separated = sum(isinstance(m, SeparateQKVAttention) for m in adapted.modules())
    layers = [m for m in adapted.modules() if isinstance(m, LoraLayer)]
    if packed:
        raise BenchmarkSetupError(f"packed nn.MultiheadAttention left in the model (e.g. {packed[0]}); "
                                  "apply_lora should have separated it.")
    merged = [m for m in layers if m.merged]
    if merged:
        raise BenchmarkSetupError(f"{len(merged)} LoRA layers are merged; the benchmark measures the unmerged "
                                  "training path x A^T B^T.")
    if not (adapted.vision_trainable and adapted.text_trainable):
        raise BenchmarkSetupError("LoRA must adapt both encoders (LoraConfig(encoders='both')).")
    return (f"{len(layers)} unmerged peft LoRA layers (x A^T B^T, no B A matrix), "
            f"{separated} SeparateQKVAttention modules (F.scaled_dot_product_attention)")


def make_step(adapted, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None,
              lr: float = 2e-4) -> Callable[[], float]:
    """One training step of ``lowres_clip.train.train``'s loop: forward under the project's autocast
    helper, task loss, backward, AdamW step. Returns a closure giving the loss."""
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


def count_flops(step: Callable[[], float]) -> int:
    """FLOPs of one call of ``step`` (matrix products, convolutions, attention; forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def time_step(step: Callable[[], float], device: torch.device, warmup: int, steps: int,
              desc: str) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of ``steps`` calls of ``step`` after ``warmup`` untimed calls."""
    wall, cpu = [], []
    for i in tqdm(range(warmup + steps), desc=desc, leave=False):
        synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        synchronize(device)
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


# ------------------------------------------------------------------------------------ profile
def op_category(name: str, shapes: list) -> str:
    """Coarse category of a profiled aten op (see :func:`profile_step`)."""
    if name in ("aten::mm", "aten::addmm", "aten::bmm"):
        dims = [d for s in shapes if isinstance(s, list) for d in s]
        return "LoRA side matmuls (a dim <= 8)" if dims and min(dims) <= 8 else "matrix products"
    if "scaled_dot_product" in name:
        return "attention (SDPA)"
    if name in ("aten::bernoulli_", "aten::native_dropout", "aten::div_"):
        return "dropout masks"
    if name in ("aten::copy_", "aten::_to_copy"):
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
def run_model(model_name: str, device: torch.device, args: argparse.Namespace) -> list[Result]:
    """Build one model, count one step's FLOPs, time every mode."""
    seed_everything(args.seed)
    adapted = build_lora(model_name, device, args.classes, args.seed)
    size = adapted.model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, size, size, generator=gen).to(device)
    labels = torch.randint(0, args.classes, (args.batch,), generator=gen).to(device)
    print(f"\n{model_name}: {size}px, {check_fast_path(adapted)}, "
          f"{adapted.parameter_counts()['lora']:,} trainable LoRA parameters")
    flops = 0
    results = []
    for mode in modes_for(device):
        step = make_step(adapted, mode.images(images), labels, mode.dtype)
        if not flops:
            flops = count_flops(step)  # doubles as the first warm-up step
        res = Result(model_name, mode, flops, args.batch)
        res.seconds, res.cpu_seconds = time_step(step, device, args.warmup, args.steps, f"{model_name} {mode.name}")
        results.append(res)
        print(f"  {mode.name:5s} ({mode.describe()}): best {res.best:7.2f} s/step, median {res.median:7.2f}, "
              f"{res.images_per_s:6.2f} images/s, {res.gflops:6.1f} GFLOP/s (load {load_average()})")
    if args.profile and model_name == args.models[-1]:
        fast = modes_for(device)[-1]
        breakdown = profile_step(make_step(adapted, fast.images(images), labels, fast.dtype))
        total = sum(s for _, s in breakdown) or 1.0
        print(f"  profile of one {fast.name} step of {model_name} (self CPU time by category):")
        for cat, s in breakdown:
            print(f"    {cat:34s} {s:7.2f} s  {100 * s / total:5.1f}%")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16"], help="open_clip model names")
    ap.add_argument("--batch", type=int, default=32, help="images per step")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed steps per mode (the FLOP-counting step comes on top)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode (the best is reported)")
    ap.add_argument("--classes", type=int, default=10, help="class prompts re-encoded every step")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="profile one fast step of the last model")
    args = ap.parse_args()
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        ap.error("--steps and --batch must be >= 1 and --warmup >= 0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    print(f"device: {describe_device(device)}; load average {load_average()}")
    print(f"batch {args.batch}, {args.classes} class prompts, LoRA rank 2 on q/k/v of both encoders, "
          f"{args.warmup} warm-up + {args.steps} timed steps per mode")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    mm_start = {k: matmul_rate(dt, device) for k, dt in dtypes.items()}
    results = [r for name in args.models for r in run_model(name, device, args)]
    mm_end = {k: matmul_rate(dt, device) for k, dt in dtypes.items()}
    print(f"\n{MATMUL_N}^3 matrix product, GFLOP/s (start / end of run): "
          + ", ".join(f"{k} {mm_start[k].wall:.1f} / {mm_end[k].wall:.1f}" for k in dtypes)
          + "; per process CPU-second: " + ", ".join(f"{k} {mm_end[k].best_of(mm_start[k]).cpu:.1f}" for k in dtypes))
    mm = {k: mm_start[k].best_of(mm_end[k]) for k in dtypes}
    print_table(results, mm, cpu_clock=device.type == "cpu")
    print(summary_line(results, mm, load_average(), cpu_clock=device.type == "cpu"))
    return 0


def print_table(results: list[Result], mm: dict[str, MatmulRate], cpu_clock: bool) -> None:
    """The results table; FLOP-rate fractions are relative to the best matrix-product rates ``mm``."""
    print(f"\n{'model':10s} {'mode':5s} {'s/step':>7s} {'images/s':>9s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} "
          f"{'%fp32 mm':>9s} {'%bf16 mm':>9s} {'%bf16 mm CPU-time':>18s} {'vs fp32':>8s}")
    base = {r.model: r for r in results if r.mode.name == "fp32"}
    for r in results:
        cpu = f"{100 * r.cpu_gflops / mm['bf16'].cpu:17.1f}%" if cpu_clock else f"{'n/a':>18s}"
        print(f"{r.model:10s} {r.mode.name:5s} {r.best:7.2f} {r.images_per_s:9.2f} {r.flops / 1e9:11.1f} "
              f"{r.gflops:8.1f} {100 * r.gflops / mm['fp32'].wall:8.1f}% {100 * r.gflops / mm['bf16'].wall:8.1f}% "
              f"{cpu} {base[r.model].best / r.best:7.2f}x")
    if cpu_clock:
        print("(CPU-time column: FLOPs per process CPU-second of the step over the same for the bf16 matmul; "
              "unlike wall time it does not count time other processes hold the CPUs.)")


def summary_line(results: list[Result], mm: dict[str, MatmulRate], load: str, cpu_clock: bool) -> str:
    """The one ``SUMMARY`` line: the goal verdict (wall clock) for ViT-B/16 in the fast mode."""
    goal = next((r for r in results if r.model == GOAL_MODEL and r.mode.name == "fast"), None)
    others = "; ".join(f"{r.model} fast {r.images_per_s:.2f} images/s" for r in results
                       if r.mode.name == "fast" and r is not goal)
    if goal is None:
        return f"SUMMARY lora-throughput: {GOAL_MODEL} not measured (see --models); {others}"
    base = next(r for r in results if r.model == GOAL_MODEL and r.mode.name == "fp32")
    frac = goal.gflops / mm["bf16"].wall
    verdict = "MET" if frac >= GOAL_FRACTION else "MISSED"
    cpu = f" ({100 * goal.cpu_gflops / mm['bf16'].cpu:.0f}% by CPU time, load {load})" if cpu_clock else ""
    return (f"SUMMARY lora-throughput: {GOAL_MODEL} fast ({goal.mode.describe()}) {goal.images_per_s:.2f} images/s, "
            f"{goal.gflops:.1f} GFLOP/s = {100 * frac:.0f}% of the bf16 {MATMUL_N}^3 matmul rate{cpu} "
            f"(goal >= {100 * GOAL_FRACTION:.0f}%): {verdict}; {base.best / goal.best:.2f}x fp32"
            + (f"; {others}" if others else ""))


if __name__ == "__main__":
    sys.exit(main())
