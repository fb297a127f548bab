"""``benchmarks/lora_throughput.py --quick`` runs end to end (tiny model), so the script cannot rot:
both steps train, the CLIP-LoRA-style baseline computes the project's logits, a SUMMARY line."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lora_throughput.py"


@pytest.fixture(scope="module")
def quick_output() -> str:
    """stdout of ``lora_throughput.py --quick --devices cpu`` (one thread, as the tiny tests run)."""
    spec = importlib.util.spec_from_file_location("lora_throughput_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec.loader.exec_module(module)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert module.main(["--quick", "--devices", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop(spec.name, None)
    return out.getvalue()


def test_quick_mode_checks_both_steps_compute_the_same_logits(quick_output):
    same = re.search(r"max \|logit difference\| project vs baseline \(fp32, no dropout\) = (\S+)", quick_output)
    assert same and float(same.group(1)) < 1e-3


def test_quick_mode_times_both_steps_and_prints_one_summary(quick_output):
    assert re.search(r"project\s+\(\w+\): best\s+[\d.]+ s/step", quick_output)
    assert re.search(r"baseline\s+\(\w+\): best\s+[\d.]+ s/step", quick_output)
    summary = [line for line in quick_output.splitlines() if line.startswith("SUMMARY lora-throughput:")]
    assert len(summary) == 1
    assert re.search(r"cpu tiny-vit \w+: [\d.]+ s/step = [\d.]+x the CLIP-LoRA-style baseline", summary[0])
    assert "% of the bf16 256^3 matmul rate" in summary[0]


def test_baseline_counts_more_flops_than_the_project(quick_output):
    """The baseline forms B A and multiplies by it at full size, and encodes the padded prompts."""
    flops = dict(re.findall(r"(baseline|project)\s+\(\w+\): best .*?([\d.]+) GFLOP counted", quick_output))
    assert float(flops["baseline"]) > float(flops["project"]) > 0
