"""What on a machine can change a run's numbers, recorded with every run and compared on reproduction.

The same code, seed and settings give bit-identical numbers in any process (papermill kernel, pytest,
local worker, Slurm job) on one machine with one thread count. Across thread counts and machines
they need not: matrix products and convolutions split their sums by thread and by instruction set
(oneDNN / MKL pick kernels by ISA and cache sizes), and a short, high-learning-rate training run
amplifies last-bit differences into a few flipped test predictions. So every record stores
:func:`host_facts`, ``results reproduce`` reruns with the recorded thread count
(:func:`threads`), compares exactly when :func:`numerics_differences` finds nothing, and uses the
noise floor measured by ``benchmarks/noise_floor.py`` otherwise.

Light module: imports torch only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path
from typing import Any, Iterator

# CPU flags that decide which kernels oneDNN / MKL / ATen run (and so the rounding of their sums)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile")
# environment variables that change kernels or thread counts
NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
               "DNNL_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "CUBLAS_WORKSPACE_CONFIG")
# facts that must be equal for a rerun to be bit-identical
EXACT_KEYS = ("cpu", "isa", "threads", "torch", "onednn", "mkl", "aten_capability", "env", "gpu")
PRECISION_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def precision_name(dtype: Any) -> str:
    """``fp32`` | ``bf16`` | ``fp16`` for an autocast dtype (``None`` = no autocast = fp32) or a name."""
    if dtype is None:
        return "fp32"
    name = str(dtype).replace("torch.", "")
    return PRECISION_NAMES.get(name, name)


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU model name and its flags (``/proc/cpuinfo``; no flags elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def _caches() -> dict[str, str]:
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (d / "level").read_text().strip()
            kind = (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        out[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    return out


def _library_versions() -> dict[str, str]:
    import torch

    config = torch.__config__.show()
    onednn = re.search(r"(?:oneDNN|MKL-DNN)[^\n]*? v(\d+\.\d+(?:\.\d+)?)", config)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - older torch
        capability = "unknown"
    return {"torch": torch.__version__, "onednn": onednn.group(1) if onednn else "absent",
            "mkl": mkl.group(1) if mkl else "absent", "aten_capability": capability}


def threads() -> int:
    """The intra-op thread count torch uses now."""
    import torch

    return torch.get_num_threads()


@contextlib.contextmanager
def using_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (``None``: unchanged), then restore the count."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def host_facts() -> dict[str, Any]:
    """Everything of this process and machine that can change a run's numbers.

    ``cpu`` model, the ``isa`` flags among :data:`ISA_FLAGS`, cache sizes, ``threads`` (torch's
    intra-op count) and interop threads, kernel / platform, torch, oneDNN and MKL versions, ATen's
    CPU dispatch level, the :data:`NUMERIC_ENV` variables that are set, and the GPU if any.
    """
    import torch

    model, flags = cpu_model_and_flags()
    out: dict[str, Any] = {
        "cpu": model, "isa": sorted(f for f in ISA_FLAGS if f in flags), "caches": _caches(),
        "cores": os.cpu_count(), "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(), **_library_versions(),
        "env": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ and k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return out


def numerics_differences(recorded: dict[str, Any] | None, current: dict[str, Any] | None = None) -> list[str]:
    """The :data:`EXACT_KEYS` whose values differ between a record's facts and ``current`` (this
    process when ``None``), as ``key: recorded -> current`` lines; a record without facts differs in
    everything (``["no recorded numerics"]``)."""
    if not recorded:
        return ["no recorded numerics"]
    current = current if current is not None else host_facts()
    return [f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in EXACT_KEYS if recorded.get(k) != current.get(k)]
