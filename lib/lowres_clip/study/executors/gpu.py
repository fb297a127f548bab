"""Worker slots of the ``local`` executor: the GPUs this process may use, one per slot, and the CPU
threads shared evenly.
"""

from __future__ import annotations

import os
from typing import Sequence


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch / no driver: no GPUs
        return []


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """CPU threads per worker: the CPUs shared evenly (at least 1). On 2 cores, two single-threaded
    notebooks do 1.19x the work of one notebook on both cores (small CNN batches scale poorly
    over threads; ``benchmarks/worker_threads.py``, 2026-12-02)."""
    return max(1, (cpus or os.cpu_count() or 1) // workers)


def slot_env(slot: int, gpus: Sequence[str], threads: int | None = None) -> dict[str, str]:
    """Environment of worker ``slot``: its GPU, round-robin over ``gpus`` (none without GPUs), and
    ``threads`` CPU threads (``OMP_NUM_THREADS``, read by torch) unless the caller's environment
    already sets them."""
    env = {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} if gpus else {}
    if threads is not None and not any(v in os.environ for v in THREAD_VARIABLES):
        env.update({v: str(threads) for v in THREAD_VARIABLES})
    return env
