"""Encoding images and prompts, with an on-disk feature cache.

Image features are cached per (model, weights, dataset, split, sample ids, transform); text
classifier weights per (model, weights, class names, templates); the decoded, resized pixels of an
evaluation split per (dataset, split, sample ids, deterministic part of the transform)
(:func:`prepared_images`: every adapted run evaluates the same 8,100 EuroSAT test images, decoded
and resized once instead of once per run). Entries are written atomically
(temporary file + ``os.replace``), so an interrupted run never leaves a half-written entry, and any
change of a key part gives a new entry (the old one is simply not used).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .atomic import atomic_write
from .datasets import ImageDataset, Sample, SplitDataset, ids_fingerprint
from .prompts import format_prompts
from .spec import default_cache_root



def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:60]


class FeatureCache:
    """A folder of ``torch.save``-d dicts keyed by a hash of their key parts.

    Args:
        root: cache folder (default :func:`default_cache_root` ``/ "features"``).
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_root() / "features"
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        """Stable hash of the key parts."""
        return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def path(self, kind: str, parts: dict[str, Any]) -> Path:
        label = "-".join(_safe(str(parts[p])) for p in ("model", "weights", "dataset", "split") if p in parts)
        return self.root / kind / f"{label}-{self.key(parts)}.pt"

    def get(self, kind: str, parts: dict[str, Any]) -> dict | None:
        p = self.path(kind, parts)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt entry (should not happen: writes are atomic) is recomputed
            return None

    def put(self, kind: str, parts: dict[str, Any], value: dict) -> Path:
        return atomic_write(self.path(kind, parts), lambda tmp: torch.save(value, tmp))

    def get_or_compute(self, kind: str, parts: dict[str, Any], compute: Callable[[], dict]) -> dict:
        """Return the cached dict for ``parts`` or compute, store and return it."""
        hit = self.get(kind, parts)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        value = compute()
        self.put(kind, parts, value)
        return value


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    dataset: ImageDataset,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    desc: str = "encoding images",
    num_workers: int = 0,
) -> torch.Tensor:
    """L2-normalised image features ``[N, D]`` (float32, on CPU) of every item of ``dataset``."""
    device = torch.device(device) if device is not None else model_device(model)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    out = []
    for images, _, _ in tqdm(loader, desc=desc, leave=False):
        feats = model.encode_image(images.to(device))
        out.append(F.normalize(feats.float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def _trimmable_text_tower(model: torch.nn.Module) -> bool:
    """True for an open_clip ``CLIP`` text tower whose outputs at a position depend only on earlier
    tokens (causal mask) and whose pooled token is found from the token ids (``argmax``/``eos``)."""
    try:
        from open_clip.model import CLIP
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return False
    mask = getattr(model, "attn_mask", None)
    if type(model).encode_text is not CLIP.encode_text or not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return False
    if getattr(model, "text_pool_type", None) not in ("argmax", "eos"):
        return False
    causal = torch.full(mask.shape, float("-inf"), device=mask.device).triu(1)
    return bool(torch.equal(mask.float(), causal))


def encode_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, skipping the padding columns after the last real token.

    In an open_clip ``CLIP`` text tower the mask is causal and the feature is read at the end-of-text
    token, so the padding after the longest prompt changes nothing: it is cut off, and the
    positional embedding and causal mask are sliced to the kept length (CLIP prompts use ~10 of the
    77 positions, so this divides the text tower's work several-fold, forward and backward). Other
    text towers get ``model.encode_text(tokens)`` unchanged.
    """
    if tokens.dim() != 2 or not _trimmable_text_tower(model):
        return model.encode_text(tokens)
    used = (tokens != 0).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else tokens.shape[1]
    if length >= tokens.shape[1]:
        return model.encode_text(tokens)
    from open_clip.transformer import text_global_pool

    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def encode_text_classifier(
    model: torch.nn.Module,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Class text embeddings ``[C, D]``: per class, encode each template, L2-normalise, average,
    L2-normalise (CLIP's prompt ensembling). Keeps the autograd graph when gradients are enabled
    (text-tower training); wrap in ``torch.no_grad()`` otherwise."""
    device = torch.device(device) if device is not None else model_device(model)
    prompts = format_prompts(classnames, templates)
    flat = [p for per_class in prompts for p in per_class]
    tokens = tokenizer(flat).to(device)
    feats = F.normalize(encode_text(model, tokens).float(), dim=-1)
    feats = feats.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(feats, dim=-1)


def _transform_id(transform: Callable) -> str:
    return hashlib.sha1(repr(transform).encode()).hexdigest()[:12]


def image_features(
    bundle,
    ds: SplitDataset,
    split: str,
    samples: Sequence[Sample] | None = None,
    cache: FeatureCache | None = None,
    transform: Callable | None = None,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached, L2-normalised features and labels of ``samples`` (default: the whole ``split``).

    The cache key holds the model name, weights, dataset, split name, sample ids and the transform
    (default: the bundle's evaluation transform).
    """
    samples = list(ds.split(split) if samples is None else samples)
    transform = transform or bundle.preprocess_eval
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    parts = {
        "model": bundle.model_name,
        "weights": bundle.weights_id,
        "dataset": ds.name,
        "split": split,
        "ids": ids_fingerprint(samples),
        "transform": _transform_id(transform),
    }

    def compute() -> dict:
        data = ImageDataset(ds.image_root, samples, transform)
        return {"features": encode_images(bundle.model, data, batch_size, bundle.device, f"{ds.name}/{split}")}

    value = compute() if cache is None else cache.get_or_compute("image", parts, compute)
    return value["features"], labels


def text_classifier(
    bundle,
    dataset_name: str,
    classnames: Sequence[str],
    templates: Sequence[str],
    cache: FeatureCache | None = None,
) -> torch.Tensor:
    """Cached zero-shot classifier weights ``[C, D]`` for the bundle's (frozen) text tower."""
    parts = {
        "model": bundle.model_name,
        "weights": bundle.weights_id,
        "dataset": dataset_name,
        "classnames": list(classnames),
        "templates": list(templates),
    }

    def compute() -> dict:
        with torch.no_grad():
            return {"weights": encode_text_classifier(bundle.model, bundle.tokenizer, classnames, templates).cpu()}

    value = compute() if cache is None else cache.get_or_compute("text", parts, compute)
    return value["weights"]


# ----------------------------------------------------------------------------- prepared test pixels
# Transforms that map a PIL image to a PIL image without randomness (torchvision's and open_clip's);
# anything else before the tensor conversion (a random crop...) makes a split uncacheable.
_DETERMINISTIC_PIL = ("Resize", "CenterCrop", "MaybeConvertMode", "ConvertMode")
_TO_TENSOR = ("ToTensor", "MaybeToTensor")


def split_transform(transform: Callable) -> tuple[Callable, list[Callable]] | None:
    """``(pil_part, tensor_part)`` of an evaluation transform, or ``None`` when it cannot be split.

    ``pil_part`` is the deterministic PIL -> PIL prefix (resize, centre crop, mode conversion) of a
    torchvision ``Compose``; ``tensor_part`` the ``Normalize`` steps after the tensor conversion.
    Applying ``to_tensor`` and then ``tensor_part`` to ``pil_part(image)`` is the transform itself.
    """
    from torchvision.transforms import Compose, Normalize

    if not isinstance(transform, Compose):
        return None
    names = [type(t).__name__ for t in transform.transforms]
    cut = next((i for i, n in enumerate(names) if n in _TO_TENSOR), None)
    if cut is None or not all(n in _DETERMINISTIC_PIL for n in names[:cut]):
        return None
    tail = list(transform.transforms[cut + 1:])
    if not all(isinstance(t, Normalize) for t in tail):
        return None
    return Compose(list(transform.transforms[:cut])), tail


class PreparedImages(torch.utils.data.Dataset):
    """``(image, label, index)`` items like :class:`~lowres_clip.datasets.ImageDataset` with its
    evaluation transform, read from pixels decoded and resized once.

    The tensor of item ``i`` is computed exactly as ``ToTensor`` + ``Normalize`` compute it from the
    PIL image (same operations in the same order), so it equals the transform's output bit for bit.

    Args:
        pixels: ``[N, H, W, C]`` uint8, the PIL part of the transform applied to each image.
        labels: ``[N]`` class labels.
        tail: the ``Normalize`` steps after the tensor conversion.
    """

    def __init__(self, pixels: torch.Tensor, labels: Sequence[int], tail: Sequence[Callable] = ()):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or len(pixels) != len(labels):
            raise ValueError(f"pixels must be uint8 [N, H, W, C] with one label per image; got "
                             f"{tuple(pixels.shape)} {pixels.dtype} and {len(labels)} labels.")
        self.pixels, self.labels, self.tail = pixels, [int(y) for y in labels], list(tail)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.pixels[i].permute(2, 0, 1).contiguous().to(dtype=torch.get_default_dtype()).div(255)
        for t in self.tail:
            x = t(x)
        return x, self.labels[i], i


def decode_pixels(image_root: str | Path, samples: Sequence[Sample], pil_part: Callable,
                  desc: str = "decode") -> torch.Tensor:
    """``[N, H, W, C]`` uint8: each image opened as :class:`ImageDataset` opens it, then ``pil_part``."""
    data = ImageDataset(image_root, samples)
    first = np.asarray(pil_part(data.load_image(0)), dtype=np.uint8) if len(data) else np.zeros((0, 0, 3), np.uint8)
    out = torch.empty((len(data), *first.shape), dtype=torch.uint8)
    for i in tqdm(range(len(data)), desc=desc, leave=False, disable=len(data) < 500):
        arr = first if i == 0 else np.asarray(pil_part(data.load_image(i)), dtype=np.uint8)
        if arr.shape != first.shape:
            raise ValueError(f"image {samples[i].path} gives {arr.shape} after {pil_part}, the first gave "
                             f"{first.shape}: the transform does not give one size.")
        out[i] = torch.from_numpy(arr.copy())
    return out


def prepared_images(
    ds: SplitDataset,
    split: str,
    samples: Sequence[Sample],
    transform: Callable,
    cache: FeatureCache | None = None,
) -> torch.utils.data.Dataset:
    """The evaluation dataset of ``samples``: a :class:`PreparedImages` whose pixels are decoded and
    resized once per (dataset, split, sample ids, transform) and kept in ``cache`` (kind ``pixels``),
    or a plain :class:`ImageDataset` when the transform has a random or unknown step before its tensor
    conversion. Both give identical tensors (``tests/test_features.py``)."""
    samples = list(samples)
    parts = split_transform(transform)
    if parts is None or not samples:
        return ImageDataset(ds.image_root, samples, transform)
    pil_part, tail = parts
    key = {"dataset": ds.name, "split": split, "ids": ids_fingerprint(samples), "transform": _transform_id(pil_part)}

    def compute() -> dict:
        return {"pixels": decode_pixels(ds.image_root, samples, pil_part, f"decode {ds.name}/{split}")}

    value = compute() if cache is None else cache.get_or_compute("pixels", key, compute)
    return PreparedImages(value["pixels"], [s.label for s in samples], tail)
