"""What every settings class shares: the errors, the field helpers (``runtime_field``, ``added_field``), the precision and tower vocabularies."""

from __future__ import annotations

from dataclasses import field
from typing import Any

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
TOWERS = ("vision", "text")
ENCODER_CHOICES = ("vision", "text", "both")
KINDS = ("preserving", "breaking")
EMBEDDED_MODEL = "EffLite0-MiniLM"  # the embedded CPU model's open_clip name (lowres_clip.embedded)


class ConfigError(ValueError):
    """A configuration, profile or notebook parameter is invalid; the message names the key."""


class AdaptationError(ValueError):
    """Bad configuration or input for an adaptation method or the training loop.

    The message names the offending value and the accepted ones.
    """


class AugmentError(ValueError):
    """Augmentation settings, inputs or outputs are invalid; the message says how to fix it."""


def check_encoders(encoders: str) -> tuple[str, ...]:
    """``"vision" | "text" | "both"`` -> the tuple of towers; anything else is an error."""
    if encoders not in ENCODER_CHOICES:
        raise AdaptationError(f"Unknown encoders {encoders!r}; choose one of {ENCODER_CHOICES}.")
    return TOWERS if encoders == "both" else (encoders,)


def runtime_field(default: Any, doc: str = "") -> Any:
    """A config field that does not change a result (paths, device, batch size of inference...).

    Runtime fields are left out of a run's identity (:class:`lowres_clip.spec.RunSpec`) and of
    :meth:`GeneratorConfig.settings` (the generated images' identity).
    """
    return field(default=default, metadata={"runtime": True, "doc": doc})


def added_field(default: Any, absent_means: Any, doc: str = "") -> Any:
    """A result-affecting config field added after runs were recorded without it.

    ``absent_means`` is the value that reproduces what the code did before the field existed. A run
    whose field holds that value leaves the field out of its settings
    (:func:`lowres_clip.spec.result_settings`), so the settings hash of every run recorded before the
    field existed stays the same; any other value is a setting like the others (a new hash, a new
    folder). Tables read a setting absent from a run's settings as this value
    (:func:`lowres_clip.spec.distinguishing`).
    """
    return field(default=default, metadata={"absent_means": absent_means, "doc": doc})
