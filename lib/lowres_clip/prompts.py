"""Prompt templates per dataset, kept as data in ``resources/prompts.yaml``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import yaml

PROMPTS_FILE = Path(__file__).resolve().parent / "resources" / "prompts.yaml"


@lru_cache(maxsize=None)
def _table() -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load(PROMPTS_FILE.read_text())


def get_templates(dataset: str, ensemble: bool = False) -> list[str]:
    """Templates for ``dataset`` (``default`` for unknown/ImageFolder datasets).

    Args:
        dataset: dataset name (``eurosat``, ``circuits``...); ``imagefolder:...`` maps to ``default``.
        ensemble: return the ensemble list instead of the single default template.
    """
    table = _table()
    entry = table.get(dataset.split(":", 1)[0], table["default"])
    if dataset.startswith("imagefolder"):
        entry = table["default"]
    return list(entry["ensemble" if ensemble else "templates"])


def format_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """``[[template.format(name) for template in templates] for name in classnames]``."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"Every template needs one '{{}}' placeholder for the class name, got {list(templates)}")
    return [[t.format(name) for t in templates] for name in classnames]
