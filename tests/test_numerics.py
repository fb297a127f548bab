"""Reproducibility: a run is bit-identical in any process on one machine and thread count; records
carry what can change their numbers; reproduction is exact where those facts match and held to the
measured noise floor where they do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import papermill
import pytest

from lowres_clip import numerics, results, study
from lowres_clip.runs import Predictions
from lowres_clip.spec import resolve_run

from conftest import make_eurosat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_host_facts_name_what_changes_numbers():
    import torch

    facts = numerics.host_facts()
    assert facts["threads"] == torch.get_num_threads() and facts["torch"] == torch.__version__
    assert set(numerics.EXACT_KEYS) <= set(facts) and facts["cpu"] and facts["platform"]
    assert numerics.numerics_differences(facts, dict(facts)) == []
    other = {**facts, "threads": facts["threads"] + 1, "isa": facts["isa"] + ["amx_bf16"]}
    changed = numerics.numerics_differences(facts, other)
    assert [line.split(":")[0] for line in changed] == ["isa", "threads"]
    assert numerics.numerics_differences({}, facts) == ["no recorded numerics"]
    with numerics.using_threads(1):
        assert numerics.threads() == 1
    assert numerics.threads() == facts["threads"]


def _record(machine, precision):
    return SimpleNamespace(machine=machine, protocol={"precision": {"train": precision, "eval": precision}}, extra={})


def test_tolerance_is_exact_on_the_same_numerics_and_the_measured_floor_elsewhere(monkeypatch):
    facts = numerics.host_facts()
    monkeypatch.setattr(results.reproduction, "noise_floor", lambda: {"fp32": {"tolerance": 0.004, "measured": "0.4 points (test)"}})
    assert results.tolerance_of(_record(facts, "fp32"), facts)[0] == results.EXACT_TOLERANCE
    tol, why = results.tolerance_of(_record(facts, "fp32"), {**facts, "threads": 7})
    assert tol == 0.004 and "fp32 noise floor" in why and "threads" in why
    tol, why = results.tolerance_of(_record(facts, "bf16"), {**facts, "cpu": "another"})
    assert tol == results.BF16_TOLERANCE and "no measured floor" in why
    # the precision a run used, read from what it recorded (not from the configured "auto")
    assert results.precision_used(_record(facts, "bf16")) == "bf16"
    assert results.precision_used(SimpleNamespace(protocol={}, extra={"train": {"precision": "bfloat16"}})) == "bf16"
    assert results.precision_used(SimpleNamespace(protocol={"precision": {"train": None, "eval": "fp32"}}, extra={})) == "fp32"


def test_the_committed_noise_floor_is_a_measurement():
    floor = results.noise_floor()
    assert "fp32" in floor, "run: python benchmarks/noise_floor.py --write"
    entry = floor["fp32"]
    assert entry["command"].startswith("python benchmarks/noise_floor.py") and entry["rows"]
    worst = max(max(abs(r["d_top1"]), abs(r["d_balanced"])) for r in entry["rows"])
    assert worst <= entry["tolerance"] < worst + 0.0011  # the largest difference seen, rounded up to 0.1 points


@pytest.mark.slow
def test_bf16_lora_of_the_embedded_model_is_identical_in_two_processes_one_through_papermill(tmp_path):
    """The same run (embedded model, bf16 autocast, 24 LoRA steps, generated images) in a plain Python
    process and in the LoRA notebook under papermill, both on one thread: identical predictions."""
    make_eurosat(tmp_path / "data", per_split=(6, 2, 6))
    cache = str(tmp_path / "cache")
    overrides = {"train.precision": "bf16", "train.iterations": 24, "train.batch_size": 8, "train.eval_every": 12,
                 "train.progress": False}
    common = {"method": "lora", "shots": 4, "seed": 1, "dataset": "eurosat", "data_root": str(tmp_path / "data"),
              "cache_root": cache}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOWRES_CLIP_CACHE": cache}
    script = ("import sys, json; from lowres_clip.spec import resolve_run; from lowres_clip.pipeline import run_method; "
              "spec = resolve_run('cpu', json.loads(sys.argv[1]), runs_root=sys.argv[2], figures_root=sys.argv[2], "
              "**json.loads(sys.argv[3])); run_method(spec)")
    import json

    subprocess.run([sys.executable, "-c", script, json.dumps(overrides), str(tmp_path / "python"), json.dumps(common)],
                   env=env, check=True, capture_output=True, timeout=600)
    old = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "LOWRES_CLIP_CACHE")}
    os.environ.update(OMP_NUM_THREADS="1", LOWRES_CLIP_CACHE=cache)  # the kernel inherits them
    try:
        papermill.execute_notebook(str(NOTEBOOKS / "02_lora.ipynb"), str(tmp_path / "02_lora.ipynb"),
                                   parameters={"profile": "cpu", "overrides": overrides, **common,
                                               "runs_root": str(tmp_path / "papermill"),
                                               "figures_root": str(tmp_path / "papermill")},
                                   kernel_name=study.KERNEL_NAME, progress_bar=False, cwd=str(NOTEBOOKS))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    spec = lambda root: resolve_run("cpu", overrides, runs_root=str(tmp_path / root), figures_root=str(tmp_path / root), **common)  # noqa: E731
    a, b = spec("python"), spec("papermill")
    assert a.id == b.id and a.is_finished() and b.is_finished()
    pa, pb = Predictions.load(a.predictions_path), Predictions.load(b.predictions_path)
    assert pa.logits.dtype == np.float32 and len(pa.logits) == 24
    assert np.array_equal(pa.logits, pb.logits), "bf16 LoRA differs between two processes with one thread"
    from lowres_clip.runs import RunRecord

    ra, rb = RunRecord.load(a.record_path), RunRecord.load(b.record_path)
    assert ra.protocol["precision"] == {"train": "bf16", "eval": "bf16"} and ra.machine["threads"] == rb.machine["threads"] == 1
    assert ra.extra["train"]["history"][-1]["loss"] == rb.extra["train"]["history"][-1]["loss"]
