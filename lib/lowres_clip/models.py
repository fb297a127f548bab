"""Model loading: any open_clip model by (name, weights), the tiny test models, the embedded CPU model.

``weights`` is one of:
  * ``"random"`` (or ``None``): random initialisation (tests, speed benchmarks);
  * an open_clip pretrained tag such as ``"openai"`` or ``"laion2b_s34b_b79k"``;
  * a path to a local checkpoint file (``.pt``/``.bin``/``.safetensors``);
  * ``"embedded"`` for the embedded CPU model (see :mod:`lowres_clip.embedded`).

Offline without cached weights, :func:`load_clip` raises :class:`ModelUnavailableError` naming
the model and tag and saying how to provide a local file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import open_clip
import torch

from .bundle import ClipBundle, ModelUnavailableError, default_device, resolve_device  # noqa: F401 (re-exported)
from .settings import EMBEDDED_MODEL
from .spec import RANDOM_WEIGHTS

RESOURCES = Path(__file__).resolve().parent / "resources"
TINY_MODELS = ("tiny-vit", "tiny-rn")

open_clip.add_model_config(RESOURCES / "model_configs")


def _check_name(model_name: str) -> None:
    if model_name == EMBEDDED_MODEL:
        return
    if model_name not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5)
        raise ModelUnavailableError(
            f"Unknown open_clip model {model_name!r}. Close matches: {close or 'none'}; "
            "see open_clip.list_models() for all names."
        )


def _offline_message(model_name: str, tag: str, exc: BaseException) -> str:
    return (
        f"Could not load weights '{tag}' for model '{model_name}' ({type(exc).__name__}: {exc}). "
        "The weights are fetched from the Hugging Face hub or the openai CDN and are not cached here. "
        "Either run once with internet access (they are cached under $HF_HOME / ~/.cache), or download "
        f"the checkpoint yourself and pass its path as weights, e.g. weights='/path/to/{model_name}-{tag}.bin'. "
        f"Available tags: {open_clip.list_pretrained_tags_by_model(model_name)}."
    )


def load_clip(
    model_name: str,
    weights: str | None = "random",
    device: str | torch.device | None = None,
    precision: str = "fp32",
    cache_dir: str | None = None,
    image_size: int | None = None,
) -> ClipBundle:
    """Load an open_clip model with its transforms and tokenizer.

    Args:
        model_name: open_clip architecture name (``ViT-B-16``, ``RN50``, ``tiny-vit``, the embedded name...).
        weights: pretrained tag, local checkpoint path, ``"random"`` or ``"embedded"``.
        device: defaults to CUDA when available, else CPU.
        precision: open_clip precision string (``fp32``, ``fp16``, ``bf16``, ``amp``...).
        cache_dir: where open_clip caches downloads (defaults to the hub cache).
        image_size: input resolution (``None``: the model's own). CNN towers accept any size; ViTs
            interpolate their position embeddings (open_clip's ``force_image_size``).

    Raises:
        ModelUnavailableError: unknown model name or tag, a missing checkpoint file, or weights that
            cannot be downloaded (offline).
    """
    from . import embedded

    device = torch.device(device) if device is not None else default_device()
    if model_name == EMBEDDED_MODEL or weights == "embedded":
        return embedded.load_embedded(device=device, image_size=image_size)
    _check_name(model_name)
    w = "random" if weights is None or str(weights).lower() in RANDOM_WEIGHTS else str(weights)
    pretrained: str | None = None
    if w != "random":
        if os.sep in w or Path(w).suffix in (".pt", ".pth", ".bin", ".safetensors"):
            if not Path(w).is_file():
                raise ModelUnavailableError(f"Checkpoint file '{w}' for model '{model_name}' does not exist.")
        elif w not in open_clip.list_pretrained_tags_by_model(model_name):
            raise ModelUnavailableError(
                f"Unknown weights tag {w!r} for model {model_name!r}; available tags: "
                f"{open_clip.list_pretrained_tags_by_model(model_name) or 'none (use random or a file)'}."
            )
        pretrained = w
    try:
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, precision=precision, device=device, cache_dir=cache_dir,
            force_image_size=image_size,
        )
    except ModelUnavailableError:
        raise
    except Exception as exc:  # hub/network errors come in many types
        if pretrained is None:
            raise
        raise ModelUnavailableError(_offline_message(model_name, w, exc)) from exc
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    return ClipBundle(model, preprocess_train, preprocess_eval, tokenizer, model_name, w, device)


def describe(bundle: ClipBundle) -> dict[str, Any]:
    """A small JSON-able description of a loaded model (for run records)."""
    n = sum(p.numel() for p in bundle.model.parameters())
    return {
        "model": bundle.model_name,
        "weights": bundle.weights,
        "weights_id": bundle.weights_id,
        "device": str(bundle.device),
        "parameters": n,
        "image_size": bundle.image_size,
    }
