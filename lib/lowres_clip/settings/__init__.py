"""Settings of the methods, the training loop and the image generators, as plain dataclasses.

This module is the configuration layer's vocabulary: :mod:`lowres_clip.config` nests these classes
into one :class:`~lowres_clip.config.RunConfig`, and the heavy modules that act on them (``methods``,
``train``, ``augment``) import them from here. It imports nothing heavy (no torch, no open_clip), so
a profile can be read and validated without loading a model.
"""

from __future__ import annotations

from .base import (
    AdaptationError, AugmentError, ConfigError, EMBEDDED_MODEL, ENCODER_CHOICES, KINDS, PRECISIONS, TOWERS,
    added_field, check_encoders, runtime_field,
)
from .lora import CNN_TARGETS, LORA_PARAMS, LoraConfig, POSITIONS, POSITION_ALIASES, SCALINGS
from .bitfit import BIAS_GROUPS, BitFitConfig
from .meta_adapter import META_BUDGETS, MetaAdapterConfig
from .remedies import DecoupleConfig, LogitAdjustConfig, ResampleConfig, ReweightConfig
from .training import (
    AUGMENT_PROTOCOLS, AUGMENT_VARIANTS, AugmentProtocol, PAIRINGS, PRESERVING_MODES, REWEIGHT_KINDS,
    SELECTIONS, SELECT_METRICS, TrainConfig, check_variant,
)
from .generators import (
    ClassicConfig, DEFAULT_MODEL_ID, DEFAULT_PROMPT, DIFFUSION_PROMPTS, DiffusionConfig, GeneratorConfig,
    check_kind,
)

__all__ = [
    "AdaptationError", "added_field", "AUGMENT_PROTOCOLS", "AUGMENT_VARIANTS", "AugmentError",
    "AugmentProtocol", "BIAS_GROUPS", "BitFitConfig", "check_encoders", "check_kind", "check_variant",
    "ClassicConfig", "CNN_TARGETS", "ConfigError", "DecoupleConfig", "DEFAULT_MODEL_ID", "DEFAULT_PROMPT",
    "DIFFUSION_PROMPTS", "DiffusionConfig", "EMBEDDED_MODEL", "ENCODER_CHOICES", "GeneratorConfig", "KINDS",
    "LogitAdjustConfig", "LORA_PARAMS", "LoraConfig", "META_BUDGETS", "MetaAdapterConfig", "PAIRINGS",
    "POSITION_ALIASES", "POSITIONS", "PRECISIONS", "PRESERVING_MODES", "ResampleConfig", "REWEIGHT_KINDS",
    "ReweightConfig", "runtime_field", "SCALINGS", "SELECT_METRICS", "SELECTIONS", "TOWERS", "TrainConfig",
]
