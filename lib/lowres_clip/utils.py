"""Small shared helpers: seeding, mixed-precision choice, parameter counting, encoder towers.

* :func:`seed_everything` seeds Python, NumPy and torch (CPU and CUDA); :func:`seeded` does the same
  for a block of code without touching the global random state afterwards.
* :func:`resolve_precision` turns ``"auto" | "fp32" | "fp16" | "bf16"`` into an autocast dtype for a
  device (bf16 on CPUs with ``avx512_bf16``/``amx_bf16``, see :func:`cpu_supports_bf16`), and
  :func:`autocast` is the matching context manager.
* :func:`count_parameters` and :func:`tower_of` (which encoder a parameter belongs to) are used by
  every adaptation method.
"""

from __future__ import annotations

import contextlib
import random
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch

from .settings import ENCODER_CHOICES, PRECISIONS, TOWERS, AdaptationError, check_encoders  # noqa: F401 (re-exported)


def seed_everything(seed: int) -> int:
    """Seed ``random``, NumPy and torch (all devices); returns ``seed``.

    cuDNN autotuning is left as configured; the training loop is deterministic on CPU and
    reproducible up to kernel non-determinism on GPU.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block under torch seed ``seed`` and restore the previous RNG state afterwards.

    Used for parameter initialisation (LoRA ``A`` matrices, Meta-Adapter weights) so that building
    the same method with the same seed gives the same initial weights. ``seed=None`` is a no-op.
    """
    if seed is None:
        yield
        return
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` flags, Linux).

    On such CPUs bf16 autocast speeds up matrix products; elsewhere it is emulated and slower.
    """
    from .numerics import cpu_model_and_flags

    _, flags = cpu_model_and_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` = full fp32, no autocast).

    Args:
        precision: ``"auto"`` (CUDA: bf16 where supported else fp16; CPU: bf16 when
            :func:`cpu_supports_bf16`, else fp32), ``"fp32"``, ``"fp16"`` (CUDA only) or ``"bf16"``.
        device: where the model runs.

    Raises:
        AdaptationError: unknown precision, or fp16 requested on a CPU.
    """
    if precision not in PRECISIONS:
        raise AdaptationError(f"Unknown precision {precision!r}; choose one of {PRECISIONS}.")
    dev = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "auto":
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if dev.type == "cpu" and cpu_supports_bf16():
            return torch.bfloat16
        return None
    if precision == "fp16":
        if dev.type != "cuda":
            raise AdaptationError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU.")
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` with ``dtype``; a no-op context when ``dtype`` is ``None``."""
    dev = torch.device(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameter elements of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def tower_of(param_name: str) -> str | None:
    """Which encoder a parameter (or module) name of a CLIP model belongs to.

    open_clip models keep the image tower under ``visual``; everything else except the logit
    scale/bias is the text tower (``transformer``, ``token_embedding``, ``ln_final``,
    ``text_projection`` for ``CLIP``; ``text.*`` for ``CustomTextCLIP``).

    Returns:
        ``"vision"``, ``"text"`` or ``None`` (``logit_scale`` / ``logit_bias`` / the root).
    """
    if param_name in ("", "logit_scale", "logit_bias"):
        return None
    if param_name == "visual" or param_name.startswith("visual."):
        return "vision"
    return "text"


