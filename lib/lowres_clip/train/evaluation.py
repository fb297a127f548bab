"""Evaluation: logits, labels and features of a dataset (or of cached features), and the validation
metric."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..methods.adapted import AdaptedCLIP
from ..methods.lora import merged_lora
from ..methods.zero_shot import LOGIT_SCALE, cosine_logits
from ..utils import AdaptationError, autocast, resolve_precision
from .loaders import _loader


def _metric(logits: torch.Tensor, labels: torch.Tensor, name: str) -> float:
    pred = logits.argmax(dim=1).cpu()
    labels = labels.cpu()
    correct = (pred == labels).float()
    if name == "accuracy":
        return float(correct.mean())
    per_class = [correct[labels == c].mean() for c in labels.unique()]
    return float(torch.stack(per_class).mean())


@torch.no_grad()
def evaluate(
    adapted: AdaptedCLIP,
    dataset: Dataset,
    batch_size: int = 64,
    precision: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[str, torch.Tensor]:
    """Logits, labels and (adapted, L2-normalised) image features of every item of ``dataset``.

    Returns:
        ``{"logits": [N, C], "labels": [N], "features": [N, D], "indices": [N], "text": [C, D]}``
        (float32, on CPU; ``text``: the class embeddings the logits compare with).
    """
    dtype = resolve_precision(precision, adapted.device)
    was_training = adapted.training
    adapted.eval()
    out: dict[str, list[torch.Tensor]] = {"logits": [], "labels": [], "features": [], "indices": []}
    loader = _loader(dataset, batch_size, False, num_workers, 0)
    with merged_lora(adapted.model):  # the same function, one product per adapted layer
        classifier = adapted.classifier()
        for images, labels, idx in tqdm(loader, desc=desc, disable=not progress, leave=False):
            with autocast(adapted.device, dtype):
                feats = adapted.encode_images(images)
            out["features"].append(feats.float().cpu())
            out["logits"].append(cosine_logits(feats, classifier, LOGIT_SCALE).cpu())
            out["labels"].append(torch.as_tensor(labels).long())
            out["indices"].append(torch.as_tensor(idx).long())
    adapted.train(was_training)
    result = {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}
    result["text"] = classifier.float().cpu()
    return result


def evaluate_features(adapted: AdaptedCLIP, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Like :func:`evaluate` from cached image features (only for frozen encoders: zero-shot, Meta-Adapter).

    Raises:
        AdaptationError: the adapted model changes an encoder, so cached base features do not apply.
    """
    if not adapted.encoders_frozen:
        raise AdaptationError(
            f"{adapted.method} adapts an encoder; cached base-model features cannot be used. Use evaluate()."
        )
    was_training = adapted.training
    adapted.eval()
    with torch.no_grad():
        logits = adapted.logits_from_features(features).cpu()
        text = adapted.classifier().float().cpu()
    adapted.train(was_training)
    return {"logits": logits, "labels": torch.as_tensor(labels).long(), "features": features.float().cpu(),
            "indices": torch.arange(len(features)), "text": text}
