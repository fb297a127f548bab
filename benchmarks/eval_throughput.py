"""Benchmark: the embedded model's test evaluation and training step on one CPU thread (a study worker).

Measures in ONE run, on the same EuroSAT test images, the ``cpu`` profile's LoRA model (adapters
perturbed away from zero, so the merged weights differ from the base model's):

* **today's path** -- what a run did before: ``train.evaluate`` over an ``ImageDataset`` (each image
  opened, decoded, resized to 128 px and normalised by PIL / torchvision for every run);
* **prepared pixels** -- the run's path now: the same ``evaluate`` over
  :func:`lowres_clip.features.prepared_images` (the test split decoded and resized once per dataset
  and kept in the feature cache; the tensors are the transform's bit for bit, so the logits must be
  identical -- the script checks it); the one-time decoding is printed apart, with its share of a
  study that evaluates the split 60-90 times;
* **frozen graph** (shown, not used) -- ``torch.jit.freeze`` of the traced image tower, which folds
  each BatchNorm into its convolution: faster, but not the same arithmetic; the script prints the
  largest logit difference and how many predictions change, which is why the study does not use it
  (issue: results equal to today's path, exact in fp32);

and, for the share of the machine it reaches: multiply-accumulates of one image (``FlopCounterMode``),
the achieved GFLOP/s, and the single-thread fp32 and bf16 rates of a 1024^3 matrix product measured
in the same run. The LoRA, BitFit and LoRA+BitFit+Meta-Adapter training steps (batch 32) are timed
too; their path is unchanged (a step is 90 % image-tower forward and backward, 10 % text tower).

Ends with ``SUMMARY``: evaluation images/s of the run's path against today's, goal >= 3x.
Skips (``SKIP``, exit 0) without EuroSAT under ``--data-root`` / ``$LOWRES_CLIP_DATA`` / ``../shared/data``.

    python benchmarks/eval_throughput.py [--images 2048] [--rounds 2] [--no-train] [--no-frozen]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from lowres_clip.datasets import DatasetError, ImageDataset, default_data_root, load_dataset  # noqa: E402
from lowres_clip.features import FeatureCache, prepared_images  # noqa: E402
from lowres_clip.methods.adapted import build_adapted  # noqa: E402
from lowres_clip.methods.lora import merged_lora  # noqa: E402
from lowres_clip.pipeline.common import load_model  # noqa: E402
from lowres_clip.spec import resolve_run  # noqa: E402
from lowres_clip.train import evaluate  # noqa: E402

GOAL = 3.0


def _load(pct: float) -> str:
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs ({pct})"


def matmul_rate(dtype: torch.dtype, n: int = 1024, rounds: int = 3) -> float:
    """GFLOP/s of an n^3 matrix product in ``dtype`` on this thread (best of ``rounds``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def image_flops(visual: torch.nn.Module, size: int) -> float:
    """FLOPs (2 x multiply-accumulates) of one image through the image tower."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        visual(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def perturbed_lora(bundle, classnames, spec):
    cfg = spec.config
    adapted = build_adapted(bundle, classnames, spec.config.templates(), "lora", cfg.lora, seed=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return adapted


def timed_eval(adapted, data, rounds: int) -> tuple[float, dict]:
    best, out = float("inf"), None
    for _ in range(rounds):
        t = time.perf_counter()
        out = evaluate(adapted, data, 64, "fp32", progress=False)
        best = min(best, time.perf_counter() - t)
    return len(data) / best, out


def frozen_eval(adapted, data, rounds: int) -> tuple[float, torch.Tensor]:
    """Image features of ``data`` through a traced, frozen copy of the merged image tower."""
    x0 = torch.stack([data[i][0] for i in range(min(64, len(data)))])
    with torch.no_grad(), merged_lora(adapted.model):
        frozen = torch.jit.freeze(torch.jit.trace(adapted.model.visual.eval(), x0))
    best, feats = float("inf"), None
    with torch.no_grad():
        frozen(x0)
        for _ in range(rounds):
            t = time.perf_counter()
            out = []
            for i in range(0, len(data), 64):
                out.append(frozen(torch.stack([data[j][0] for j in range(i, min(i + 64, len(data)))])))
            best = min(best, time.perf_counter() - t)
            feats = torch.nn.functional.normalize(torch.cat(out), dim=-1)
    return len(data) / best, feats


def step_time(bundle, classnames, spec, method: str, rounds: int, support=None) -> float:
    """Seconds of one training step (batch 32, 128 px) of ``method``'s trainable parameters."""
    import torch.nn.functional as F

    from lowres_clip.train import LOGIT_SCALE, cosine_logits

    cfg = spec.config
    adapted = build_adapted(bundle, classnames, cfg.templates(), method, cfg.lora, cfg.bitfit, cfg.meta_adapter,
                            support=support if "meta_adapter" in method else None, seed=1)
    adapted.train()
    params = [p for p in adapted.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x, y = torch.rand(32, 3, 128, 128) * 2 - 1, torch.arange(32) % 10

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(cosine_logits(adapted.encode_images(x), adapted.classifier(), LOGIT_SCALE), y)
        loss.backward()
        opt.step()

    step()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048, help="test images evaluated (8100: the whole split)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per path (best kept)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--no-train", action="store_true", help="skip the training-step timings")
    ap.add_argument("--no-frozen", action="store_true", help="skip the frozen-graph comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = args.data_root or default_data_root()
    try:
        ds = load_dataset("eurosat", root)
    except DatasetError as exc:
        print(f"SKIP: EuroSAT not found ({str(exc).splitlines()[0]})")
        return 0
    spec = resolve_run("cpu", {}, dataset="eurosat", method="lora", shots=16, seed=1, data_root=str(root))
    bundle = load_model(spec)
    samples = ds.split("test")[: args.images]
    adapted = perturbed_lora(bundle, ds.classnames, spec)
    print(f"{len(samples)} EuroSAT test images, 128 px, batch 64, fp32, 1 thread; {_load('start')}")

    today_rate, today = timed_eval(adapted, ImageDataset(ds.image_root, samples, bundle.preprocess_eval), args.rounds)
    print(f"today's path (decode + resize per run): {today_rate:7.1f} images/s")

    cache = FeatureCache(os.path.join(os.environ.get("TMPDIR", "/tmp"), "eval_throughput_cache"))
    t = time.perf_counter()
    prepared = prepared_images(ds, "test", samples, bundle.preprocess_eval, cache)
    decode_s = time.perf_counter() - t
    new_rate, new = timed_eval(adapted, prepared, args.rounds)
    same = torch.equal(today["logits"], new["logits"])
    eval_s = len(samples) / new_rate
    print(f"prepared pixels:                        {new_rate:7.1f} images/s  ({new_rate / today_rate:.2f}x); "
          f"logits identical: {same}; one-time decoding {decode_s:.1f} s "
          f"(= {decode_s / eval_s:.2f} of one evaluation, paid once per study)")

    flops = image_flops(adapted.model.visual, 128)
    fp32, bf16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    gflops = flops * new_rate / 1e9
    print(f"image tower: {flops / 1e9:.3f} GFLOP per image -> {gflops:.1f} GFLOP/s; 1-thread matmul fp32 "
          f"{fp32:.1f}, bf16 {bf16:.1f} GFLOP/s: {gflops / fp32:.1%} of fp32, {gflops / bf16:.1%} of bf16")

    if not args.no_frozen:
        frozen_rate, feats = frozen_eval(adapted, prepared, args.rounds)
        with torch.no_grad():
            logits = 100.0 * feats @ adapted.classifier().T
        flips = int((logits.argmax(1) != new["logits"].argmax(1)).sum())
        diff = float((logits - new["logits"]).abs().max())
        print(f"frozen graph (BatchNorm folded; not used): {frozen_rate:7.1f} images/s ({frozen_rate / today_rate:.2f}x); "
              f"largest logit difference {diff:.2e}, {flips} of {len(samples)} predictions change")

    if not args.no_train:
        for method in ("lora", "bitfit", "lora+bitfit+meta_adapter"):
            seconds = step_time(bundle, ds.classnames, spec, method, args.rounds, prepared)
            print(f"training step {method:26s}: {seconds:.3f} s "
                  f"(path unchanged)")

    ratio = new_rate / today_rate
    verdict = "MET" if ratio >= GOAL and same else "MISSED"
    print(f"SUMMARY: evaluation {new_rate:.1f} vs {today_rate:.1f} images/s = {ratio:.2f}x today's path "
          f"(goal >= {GOAL:g}x, logits identical: {same}) -> {verdict}; {_load('end')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
