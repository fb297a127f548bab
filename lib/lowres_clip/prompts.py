"""Prompt templates, kept as data in ``resources/prompts.yaml``.

The file names templates (``clip`` = ``"a photo of a {}."``, ``coop_eurosat`` = ``"a centered
satellite photo of {}."``, ``circuit_diagram`` = ``"a circuit diagram of {}."``) and gives each
dataset a default template and an ensemble. A run picks its templates with
:func:`resolve_templates` (``RunConfig.template`` / ``RunConfig.ensemble``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import yaml

PROMPTS_FILE = Path(__file__).resolve().parent / "resources" / "prompts.yaml"


class PromptError(ValueError):
    """An unknown template name, a template without ``{}``, or template and ensemble both chosen."""


@lru_cache(maxsize=None)
def _table() -> dict[str, Any]:
    return yaml.safe_load(PROMPTS_FILE.read_text())


def template_names() -> dict[str, str]:
    """``{name: template}`` of the named templates."""
    return dict(_table()["templates"])


def _dataset_entry(dataset: str) -> dict[str, Any]:
    """The ``datasets`` entry of ``dataset`` (``default`` for unknown and ``imagefolder:...`` datasets)."""
    table = _table()["datasets"]
    return table.get(dataset.split(":", 1)[0], table["default"]) if not dataset.startswith("imagefolder") else table["default"]


def template_text(template: str) -> str:
    """A template name's text, or ``template`` itself when it is a literal with ``{}``.

    Raises:
        PromptError: neither a known name nor a literal containing ``{}``.
    """
    names = template_names()
    if template in names:
        return names[template]
    if "{}" in template:
        return template
    raise PromptError(f"unknown template {template!r}: give a name ({', '.join(names)}) or a literal containing '{{}}'.")


def get_templates(dataset: str, ensemble: bool = False) -> list[str]:
    """The dataset's default template (one-element list) or its ensemble.

    Args:
        dataset: dataset name (``eurosat``, ``circuits``...); ``imagefolder:...`` maps to ``default``.
        ensemble: return the ensemble list instead of the single default template.
    """
    entry = _dataset_entry(dataset)
    return list(entry["ensemble"]) if ensemble else [template_text(entry["template"])]


def resolve_templates(dataset: str, template: str | None = None, ensemble: bool = False) -> list[str]:
    """The templates of a run: ``[template]`` (a name or a literal), else the dataset's default
    template, or the dataset's ensemble with ``ensemble``.

    Raises:
        PromptError: an unknown template, or both ``template`` and ``ensemble`` given.
    """
    if template is None:
        return get_templates(dataset, ensemble)
    if ensemble:
        raise PromptError(f"template {template!r} and ensemble=True both given; set template to null to use "
                          f"the {dataset!r} ensemble, or ensemble to false to use the template.")
    return [template_text(template)]


def format_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """``[[template.format(name) for template in templates] for name in classnames]``."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"Every template needs one '{{}}' placeholder for the class name, got {list(templates)}")
    return [[t.format(name) for t in templates] for name in classnames]
