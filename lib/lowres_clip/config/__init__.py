"""Typed, strict run configuration and study profiles.

A *run* is fully described by one :class:`RunConfig`. Its nested method configurations are the
dataclasses of :mod:`lowres_clip.settings` (:class:`~lowres_clip.settings.LoraConfig`,
:class:`~lowres_clip.settings.BitFitConfig`, :class:`~lowres_clip.settings.MetaAdapterConfig`,
:class:`~lowres_clip.settings.TrainConfig`); this module only nests them, so every field is
documented exactly once.

A *profile* (``lib/lowres_clip/profiles/{name}.yaml``) is ``defaults`` (values of
:class:`RunConfig` fields, nested configs as mappings) plus a ``grid`` (datasets, shots, seeds,
methods and the failure-analysis pairs) that :mod:`lowres_clip.study` runs::

    description: one line
    defaults:
      model: ViT-B-16
      weights: openai
      train: {iterations: 500, lr: 2.0e-4}
    grid:
      datasets: [eurosat]
      shots: [1, 2, 4, 8, 16]
      seeds: [1, 2, 3]
      methods: [zero_shot, linear_probe, lora, lora+aug-classic]
      failure_pairs: [[zero_shot, lora]]

Everything is validated eagerly: an unknown key anywhere (top level, ``defaults``, a nested
method config, ``grid``, notebook parameters) raises :class:`ConfigError` naming the key and its
path (e.g. ``defaults.train.iterationz``) with the accepted keys; so do unknown method names and
values of the wrong type. The study runner resolves every run of the grid before starting any.

Method labels in the grid may carry an augmentation suffix, ``{method}+aug-{kind}[-{use}]``
(``lora+aug-classic``); their grammar is owned by :mod:`lowres_clip.registry`. A grid entry may
also carry settings of its own, ``meta_adapter[meta_adapter.budget=run]`` (:class:`GridEntry`), so
one label can run twice with different settings. What a run *is* (its
key, settings hash and paths) is owned by :class:`lowres_clip.spec.RunSpec`, built from a resolved
:class:`RunConfig`. Fields marked ``runtime`` (paths, device, workers, progress bars) do not change
a result and are left out of the run's identity.

This module imports nothing heavy (no torch, no open_clip): the method settings live in
:mod:`lowres_clip.settings`.

Notebook parameters override profile values: :func:`resolve_config`.
"""

from __future__ import annotations

from .run import (
    AugmentConfig, DEVICES, RunConfig, _jsonable, build_config, coerce_meta_train, generator_config_class,
)
from .grid import ENTRY_AXES, GRID_KEYS, Grid, GridEntry, parse_entry
from .profiles import (
    PROFILES_DIR, PROFILE_KEYS, Profile, available_profiles, load_profile, parse_profile, profile_path,
    resolve_config,
)
from ..settings import ConfigError  # noqa: F401 (the configuration's error)

__all__ = [
    "ConfigError",
    "_jsonable", "AugmentConfig", "available_profiles", "build_config", "coerce_meta_train", "DEVICES",
    "ENTRY_AXES", "generator_config_class", "Grid", "GRID_KEYS", "GridEntry", "load_profile", "parse_entry",
    "parse_profile", "Profile", "PROFILE_KEYS", "profile_path", "PROFILES_DIR", "resolve_config",
    "RunConfig",
]
