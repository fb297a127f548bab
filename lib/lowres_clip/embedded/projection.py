"""The text projection: pooled MiniLM embeddings of class prompts and the ridge regression (penalty by
class-wise cross-validation) that maps them onto the ImageNet classifier rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .recipe import EmbeddedBuildConfig, EmbeddedBuildError


@dataclass
class TextProjection:
    """A fitted text projection.

    Attributes:
        weight: ``(embed_dim, text_width)`` float32 weight of ``text.proj``.
        alpha: the ridge penalty used.
        cv_top1: mean cross-validated held-out-class top-1 retrieval per penalty tried.
    """

    weight: torch.Tensor
    alpha: float
    cv_top1: dict[float, float] = field(default_factory=dict)


def pooled_text_features(
    model: torch.nn.Module,
    tokenizer: Callable,
    texts: Sequence[str],
    batch_size: int = 256,
    desc: str = "MiniLM prompts",
) -> torch.Tensor:
    """Mean-pooled MiniLM embeddings (the input of ``model.text.proj``) of ``texts``, float32 on CPU.

    Prompts are sorted by token count and each batch is cut to its longest prompt: padding is masked,
    so this equals the model's own encoding and is several times faster than padding to 64.
    """
    max_tokens = 64
    ids = tokenizer(list(texts), context_length=max_tokens)
    pad_id = int(getattr(model.text.config, "pad_token_id", 0) or 0)
    lengths = (ids != pad_id).sum(1)
    if int(lengths.max()) >= max_tokens:
        raise EmbeddedBuildError(f"A prompt is longer than {max_tokens} tokens; shorten the templates.")
    order = torch.argsort(lengths, stable=True)
    captured: list[torch.Tensor] = []
    hook = model.text.proj.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().float().cpu()))
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False):
                idx = order[start : start + batch_size]
                model.encode_text(ids[idx, : int(lengths[idx].max())].to(device))
    finally:
        hook.remove()
    out = torch.empty(len(texts), captured[0].shape[1])
    out[order] = torch.cat(captured)
    return out


def class_text_embeddings(
    model: torch.nn.Module,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Template-ensembled pooled MiniLM embeddings, one row per class: ``(len(classnames), width)``."""
    prompts = [t.format(c) for c in classnames for t in templates]
    feats = pooled_text_features(model, tokenizer, prompts, batch_size, desc=f"MiniLM x {len(prompts)} prompts")
    return feats.view(len(classnames), len(templates), -1).mean(1)


def _retrieval_top1(estimator: Any, X: np.ndarray, Y: np.ndarray) -> float:
    """scikit-learn scorer: top-1 of predicted text vectors against the (unit) prototypes of the same rows."""
    pred = estimator.predict(X)
    sims = (pred / np.linalg.norm(pred, axis=1, keepdims=True)) @ Y.T
    return float((sims.argmax(1) == np.arange(len(Y))).mean())


def fit_text_projection(
    text_emb: torch.Tensor | np.ndarray,
    prototypes: torch.Tensor | np.ndarray,
    config: EmbeddedBuildConfig | None = None,
) -> TextProjection:
    """Ridge regression (no intercept) of unit prototypes on text embeddings, penalty by class-wise CV.

    The penalty is chosen by ``GridSearchCV`` over ``config.alphas`` with ``KFold`` over classes, scored
    by top-1 retrieval of each held-out class's prototype among the held-out prototypes (efficient
    leave-one-out is no substitute: a left-out class is then ranked against 999 *fitted* prototypes and
    almost never wins, whatever the penalty).

    Args:
        text_emb: ``(classes, text_width)`` pooled MiniLM embeddings (template ensembles).
        prototypes: ``(classes, embed_dim)`` L2-normalised classifier rows of the same classes.
        config: penalties, folds and seed (default :class:`EmbeddedBuildConfig`).
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold

    config = config or EmbeddedBuildConfig()
    X = np.asarray(text_emb, dtype=np.float32)
    Y = np.asarray(prototypes, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise EmbeddedBuildError(f"Need matching 2-d arrays, got text {X.shape} and prototypes {Y.shape}.")
    if len(config.alphas) == 1:
        ridge = Ridge(alpha=config.alphas[0], fit_intercept=False, solver="cholesky").fit(X, Y)
        return TextProjection(weight=torch.from_numpy(ridge.coef_.astype(np.float32)), alpha=config.alphas[0])
    search = GridSearchCV(
        Ridge(fit_intercept=False, solver="cholesky"),
        {"alpha": list(config.alphas)},
        scoring=_retrieval_top1,
        cv=KFold(config.cv_folds, shuffle=True, random_state=config.seed),
    )
    search.fit(X, Y)
    cv = {float(a): float(s) for a, s in zip(search.cv_results_["param_alpha"], search.cv_results_["mean_test_score"])}
    weight = torch.from_numpy(search.best_estimator_.coef_.astype(np.float32))
    return TextProjection(weight=weight, alpha=float(search.best_params_["alpha"]), cv_top1=cv)
