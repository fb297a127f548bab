"""What a study runs: the grid (datasets, K, seeds, methods, failure pairs) and its entries (a label with settings of its own)."""

from __future__ import annotations

import json
import yaml
from dataclasses import dataclass, field
from typing import Any

from .. import registry
from ..settings import ConfigError

GRID_KEYS = ("datasets", "shots", "seeds", "methods", "failure_pairs")
ENTRY_AXES = ("method", "shots", "seed", "dataset", "augmentation.kind", "augmentation.use")
"""Settings a grid entry may not set: axes of the grid, or part of the method label."""


@dataclass(frozen=True)
class GridEntry:
    """One method of a study grid: a method label, optionally with settings of its own.

    Its text is ``label`` or ``label[key=value, ...]``: dotted :class:`RunConfig` keys, values read
    as YAML (as ``--set``), e.g. ``meta_adapter[meta_adapter.budget=run]``. An entry with settings
    runs the label with those settings on top of the profile's defaults and the study's ``--set``
    values (the entry's win), so the same label can appear twice in a grid with different settings:
    two sets of runs, two folders (another settings hash), two table rows named by what sets them
    apart (:func:`lowres_clip.spec.distinguishing`). Run keys and records keep the plain label.
    :func:`parse_entry` is the one parser, ``str(entry)`` the one (canonical) writer: keys sorted, no
    spaces (entries name the study's jobs, Slurm job names included).

    Attributes:
        label: the canonical method label.
        settings: ``(key, value)`` pairs, sorted by key.
    """

    label: str
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def overrides(self) -> dict[str, Any]:
        """The entry's settings as run overrides (dotted keys)."""
        return dict(self.settings)

    @property
    def suffix(self) -> str:
        """``[key=value,...]`` (``""`` without settings)."""
        if not self.settings:
            return ""
        return "[" + ",".join(f"{k}={_value_text(v)}" for k, v in self.settings) + "]"

    def __str__(self) -> str:
        return self.label + self.suffix


def _value_text(value: Any) -> str:
    """A value as an entry writes it, with no spaces but inside quoted strings (entries name jobs):
    scalars bare when they read back as themselves, lists as ``[a,b]``, anything else compact JSON."""
    if isinstance(value, list):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if not isinstance(value, dict) and yaml.safe_load(text) == value and not set(text) & set(",[]{}= "):
        return text
    return json.dumps(value, separators=(",", ":"))


def _split_items(text: str) -> list[str]:
    """``a=1, b=[1, 2]`` -> ``["a=1", "b=[1, 2]"]`` (commas inside brackets kept)."""
    items, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [i.strip() for i in items if i.strip()]


def parse_entry(text: str | GridEntry) -> GridEntry:
    """Parse a grid entry (``meta_adapter[meta_adapter.budget=run]``; see :class:`GridEntry`).

    Raises:
        ConfigError: a bad label, a malformed ``[...]`` part, a key given twice, or a key that is an
            axis of the grid (:data:`ENTRY_AXES`: use another label or the study's flags).
    """
    if isinstance(text, GridEntry):
        return text
    raw = str(text).strip()
    label, bracket, rest = raw.partition("[")
    if not bracket:
        return GridEntry(registry.canonical(raw))
    if not rest.endswith("]"):
        raise ConfigError(f"method entry {raw!r}: expected 'label[key=value, ...]' ending in ']'.")
    settings: dict[str, Any] = {}
    for item in _split_items(rest[:-1]):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"method entry {raw!r}: expected key=value, got {item!r}.")
        if key in settings:
            raise ConfigError(f"method entry {raw!r}: {key!r} given twice.")
        if key in ENTRY_AXES or key.split(".")[0] in ("method", "shots", "seed", "dataset"):
            raise ConfigError(f"method entry {raw!r}: {key!r} is an axis of the grid or part of the method label; "
                              "list another method label (e.g. lora+aug-classic) instead.")
        try:
            settings[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"method entry {raw!r}: the value of {key!r} is not valid YAML: {exc}") from exc
    if not settings:
        raise ConfigError(f"method entry {raw!r}: '[]' names no setting; write the label alone.")
    return GridEntry(registry.canonical(label.strip()), tuple(sorted(settings.items())))


@dataclass
class Grid:
    """What the study runs for a profile.

    Attributes:
        datasets: the datasets the profile runs by default (``make study``, the tests of every grid
            cell). Any other dataset (``circuits``, ``imagefolder:<path>``) runs with the same
            settings through ``--dataset``.
        shots: K values.
        seeds: seeds (tables report mean ± std over them).
        methods: grid entries (:class:`GridEntry`): method labels, optionally with an augmentation
            suffix (``lora+aug-classic``) and settings of their own
            (``meta_adapter[meta_adapter.budget=run]``).
        failure_pairs: ``[baseline, adapted]`` method labels compared by the failure analysis
            (07); entries without settings of their own; empty: none.
        failure_cells: ``[K, seed]`` cells the failure analysis runs for (``None``: every cell).
        long_tail_ratios: imbalance ratios (head / tail shots, each > 1) the grid runs every method
            at (``None``: balanced K-shot only). :meth:`validate` expands each entry into one entry
            per ratio with the setting ``long_tail_ratio`` (``lora[long_tail_ratio=16]``), so runs,
            job names and table rows come from the grid-entry machinery.
    """

    datasets: list[str] = field(default_factory=lambda: ["eurosat"])
    shots: list[int] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [1])
    methods: list[str] = field(default_factory=lambda: ["zero_shot"])
    failure_pairs: list[list[str]] = field(default_factory=list)
    failure_cells: list[list[int]] | None = None
    long_tail_ratios: list[float] | None = None

    def validate(self, path: str = "grid") -> None:
        """Raise :class:`ConfigError` for empty lists, bad K, unknown methods or pairs."""
        for name in ("datasets", "shots", "seeds", "methods"):
            if not getattr(self, name):
                raise ConfigError(f"{path}.{name}: must list at least one value.")
        from ..datasets import dataset_name_problem  # light: no torch

        for i, name in enumerate(self.datasets):
            problem = dataset_name_problem(name)
            if problem:
                raise ConfigError(f"{path}.datasets[{i}]: {problem}")
        for i, k in enumerate(self.shots):
            if k < 1:
                raise ConfigError(f"{path}.shots[{i}]: shots must be positive, got {k}.")
        labels = []
        for i, m in enumerate(self.methods):
            try:
                labels.append(str(parse_entry(m)))
            except ConfigError as exc:
                raise ConfigError(f"{path}.methods[{i}]: {exc}") from exc
        if self.long_tail_ratios is not None:
            labels = self._by_ratio(labels, path)
        self.methods = list(dict.fromkeys(labels))
        for i, pair in enumerate(self.failure_pairs):
            if len(pair) != 2:
                raise ConfigError(f"{path}.failure_pairs[{i}]: expected [baseline, adapted], got {pair!r}.")
            canon = []
            for m in pair:
                entry = parse_entry(m)
                if entry.settings:
                    raise ConfigError(f"{path}.failure_pairs[{i}]: {m!r} has settings of its own; the failure "
                                      "analysis compares plain method labels.")
                label = str(entry)
                if label not in self.methods:
                    raise ConfigError(f"{path}.failure_pairs[{i}]: {m!r} is not one of the grid's methods {self.methods}.")
                canon.append(label)
            self.failure_pairs[i] = canon
        for i, cell in enumerate(self.failure_cells or []):
            if len(cell) != 2 or cell[0] not in self.shots or cell[1] not in self.seeds:
                raise ConfigError(f"{path}.failure_cells[{i}]: expected [K, seed] of the grid, got {cell!r}.")

    def _by_ratio(self, labels: list[str], path: str) -> list[str]:
        """Each entry once per :attr:`long_tail_ratios` value, with ``long_tail_ratio`` set (an entry
        that sets it already is left as it is: validation runs again on a validated grid)."""
        if not self.long_tail_ratios:
            raise ConfigError(f"{path}.long_tail_ratios: must list at least one ratio (or be left out).")
        for i, r in enumerate(self.long_tail_ratios):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 1:
                raise ConfigError(f"{path}.long_tail_ratios[{i}]: an imbalance ratio > 1 (head / tail shots), "
                                  f"got {r!r}; ratio 1 is the balanced grid.")
        out = []
        for label in labels:
            entry = parse_entry(label)
            if "long_tail_ratio" in entry.overrides:
                out.append(label)
                continue
            for r in self.long_tail_ratios:
                r = int(r) if float(r).is_integer() else float(r)  # 16, not 16.0, in job names and rows
                out.append(str(GridEntry(entry.label, tuple(sorted(entry.settings + (("long_tail_ratio", r),))))))
        return out

    def entries(self) -> list[GridEntry]:
        """The parsed :attr:`methods`."""
        return [parse_entry(m) for m in self.methods]
