"""Zero-shot CLIP (Radford et al., 2021): classify by cosine similarity to class-prompt embeddings.

The class embeddings come from :func:`lowres_clip.features.encode_text_classifier` (one template,
or an ensemble averaged in embedding space); logits are ``100 * cos(image, class)``, CLIP's
learned temperature at the end of pre-training, which every adapted method here uses as well.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..features import encode_text_classifier

LOGIT_SCALE = 100.0


def cosine_logits(image_features: torch.Tensor, class_embeddings: torch.Tensor,
                  scale: float = LOGIT_SCALE) -> torch.Tensor:
    """``scale * cos(image, class)`` in float32: ``[N, D] x [C, D] -> [N, C]``.

    ``class_embeddings`` may also be ``[N, C, D]``: one classifier per image (Meta-Adapter episodes).
    """
    img = F.normalize(image_features.float(), dim=-1)
    cls = F.normalize(class_embeddings.float(), dim=-1)
    if cls.dim() == 3:
        return scale * torch.einsum("nd,ncd->nc", img, cls)
    return scale * img @ cls.T


@torch.no_grad()
def zero_shot_classifier(bundle, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Class embeddings ``[C, D]`` (L2-normalised) of a bundle's frozen text tower."""
    was_training = bundle.model.training
    bundle.model.eval()
    try:
        return encode_text_classifier(bundle.model, bundle.tokenizer, classnames, templates, bundle.device)
    finally:
        bundle.model.train(was_training)

