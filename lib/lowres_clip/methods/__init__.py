"""Adaptation methods: zero-shot CLIP, LoRA, BitFit, Meta-Adapter, their combinations, linear probe.

* :mod:`.zero_shot` - class-prompt classifier, ``100 * cos`` logits.
* :mod:`.lora` - CLIP-LoRA on q/k/v(/o) of the chosen blocks and encoders (peft).
* :mod:`.bitfit` - bias-only training.
* :mod:`.meta_adapter` - Meta-Adapter (gated cross-attention of class text over support images).
* :mod:`.adapted` - :class:`AdaptedCLIP`, one module combining the above; :func:`build_adapted`.
* :mod:`.linear_probe` - logistic regression on cached features (not an ``AdaptedCLIP``).

The training loop for every method is :func:`lowres_clip.train.train`.
"""

from ..utils import AdaptationError
from .adapted import AdaptedCLIP, SupportFeatures, UnknownMethodError, build_adapted, adapter_parts
from .bitfit import BitFitConfig, apply_bitfit, bitfit_parameters
from .linear_probe import LinearProbe, fit_linear_probe
from .lora import LoraConfig, apply_lora, merge_lora, separate_attention
from .meta_adapter import MetaAdapter, MetaAdapterConfig, pack_support
from .zero_shot import LOGIT_SCALE, cosine_logits, zero_shot_classifier

__all__ = [
    "AdaptationError", "AdaptedCLIP", "SupportFeatures", "UnknownMethodError", "build_adapted", "adapter_parts",
    "BitFitConfig", "apply_bitfit", "bitfit_parameters", "LinearProbe", "fit_linear_probe",
    "LoraConfig", "apply_lora", "merge_lora", "separate_attention",
    "MetaAdapter", "MetaAdapterConfig", "pack_support",
    "LOGIT_SCALE", "cosine_logits", "zero_shot_classifier",
]
