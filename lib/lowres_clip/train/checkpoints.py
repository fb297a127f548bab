"""Trained-checkpoint files: only the trained parameters (plus the Meta-Adapter's support features),
the method configuration and the base model's identity; rebuilt on a freshly loaded base model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import registry
from ..atomic import atomic_write
from ..methods.adapted import AdaptedCLIP, SupportFeatures, build_adapted, adapter_parts
from ..settings import BitFitConfig, LoraConfig, MetaAdapterConfig
from ..spec import weights_id
from ..utils import AdaptationError

CHECKPOINT_FORMAT = "lowres_clip.trained/1"


class CheckpointMismatchError(AdaptationError):
    """A trained checkpoint does not belong to the given base model or method."""


def save_trained(adapted: AdaptedCLIP, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the trained parameters, method configuration and base-model identity to ``path``.

    Args:
        adapted: the trained model.
        path: output file (``.pt``); written atomically.
        meta: anything else to keep, e.g. ``{"train_config": asdict(cfg), "seed": cfg.seed, "run_key": key}``.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": adapted.config(),
        "weights_id": weights_id(adapted.weights),
        "base_fingerprint": adapted.base_fingerprint,
        "params": {n: t.cpu() for n, t in adapted.trainable_state().items()},
        "support": None,
        "meta": dict(meta or {}),
    }
    if adapted.meta_adapter is not None:
        payload["support"] = {"features": adapted.support_features.cpu(), "labels": adapted.support_labels.cpu()}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_trained(bundle, path: str | Path, method: str | None = None) -> AdaptedCLIP:
    """Rebuild a trained model from :func:`save_trained`'s file on a freshly loaded base model.

    Args:
        bundle: the base model the checkpoint was trained from (same name and weights).
        path: the checkpoint file.
        method: if given, the method the checkpoint must hold.

    Returns:
        the :class:`AdaptedCLIP` in eval mode; the checkpoint's ``meta`` is in ``.checkpoint_meta``.

    Raises:
        CheckpointMismatchError: not a checkpoint of this format, another base model or weights,
            or another method.
    """
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # missing file, not a torch file, unpickling refused...
        raise CheckpointMismatchError(f"Cannot read trained checkpoint '{path}': {type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"'{path}' is not a lowres_clip trained checkpoint ({CHECKPOINT_FORMAT}).")
    c = ckpt["config"]
    if c["model_name"] != bundle.model_name or ckpt["weights_id"] != bundle.weights_id:
        raise CheckpointMismatchError(
            f"'{path}' was trained on {c['model_name']} ({ckpt['weights_id']}), not on the given "
            f"{bundle.model_name} ({bundle.weights_id}); load that base model first."
        )
    if method is not None and adapter_parts(method) != adapter_parts(c["method"]):
        raise CheckpointMismatchError(f"'{path}' holds method {c['method']!r}, not {method!r}.")
    support = None
    if ckpt.get("support") is not None:
        support = SupportFeatures(ckpt["support"]["features"], ckpt["support"]["labels"])
    settings = {name: registry.get(name).config_class(**values)
                for name, values in (c.get("settings") or {}).items() if values is not None}
    adapted = build_adapted(
        bundle, c["classnames"], c["templates"], c["method"],
        lora_cfg=LoraConfig(**c["lora_cfg"]) if c["lora_cfg"] else None,
        bitfit_cfg=BitFitConfig(**c["bitfit_cfg"]) if c["bitfit_cfg"] else None,
        meta_cfg=MetaAdapterConfig(**c["meta_cfg"]) if c["meta_cfg"] else None,
        support=support, seed=c["seed"], settings=settings,
    )
    saved_fp, fresh_fp = ckpt.get("base_fingerprint"), adapted.base_fingerprint
    if saved_fp is not None and (saved_fp.shape != fresh_fp.shape or not torch.allclose(saved_fp, fresh_fp, rtol=1e-6, atol=1e-8)):
        raise CheckpointMismatchError(
            f"'{path}' was trained on {c['model_name']} ({ckpt['weights_id']}) with other base weights than the "
            "given bundle's (e.g. another random initialisation or checkpoint file); load the same base weights."
        )
    try:
        adapted.load_trainable_state(ckpt["params"])
    except AdaptationError as exc:
        raise CheckpointMismatchError(f"'{path}': {exc}") from exc
    adapted.eval()
    adapted.checkpoint_meta = ckpt["meta"]
    return adapted
