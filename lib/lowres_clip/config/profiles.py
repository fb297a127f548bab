"""Profiles (YAML files of defaults + grid + cluster): discovery, strict parsing, caching, and resolving a run's config from one.

A profile may ``extends: <profile>``: it then starts from that profile's defaults and cluster (its
own merged over them, key by key) and grid (replaced as a whole when it has one), so a second grid
over the same settings (``cpu-longtail`` over ``cpu``) states only what differs.
"""

from __future__ import annotations

import dataclasses
import functools
import yaml
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..cluster import parse_cluster
from ..strict import from_dict
from ..settings import ConfigError
from .grid import Grid
from .run import RunConfig, _merge, _nest, build_config

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
PROFILE_KEYS = ("description", "extends", "defaults", "grid", "cluster")


@dataclass
class Profile:
    """A named set of defaults plus the study grid.

    Attributes:
        name: profile name (file stem).
        description: one line saying what the profile is for.
        defaults: the (validated) mapping of :class:`RunConfig` values the profile sets.
        grid: what the study runs.
        path: the YAML file it was read from.
        cluster: the (validated) ``cluster:`` mapping: executor defaults (:mod:`lowres_clip.cluster`).
    """

    name: str
    description: str
    defaults: dict[str, Any]
    grid: Grid
    path: Path | None = None
    cluster: dict[str, Any] = field(default_factory=dict)

    def config(self, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """The profile's defaults with ``overrides`` (possibly dotted keys) applied."""
        values = _merge(self.defaults, _nest(dict(overrides or {}), "parameters"))
        values.setdefault("profile", self.name)
        return build_config(values)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``lib/lowres_clip/profiles``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(name: str | Path) -> Path:
    """The YAML file of a profile name (or a path to a YAML file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"profile file '{p}' does not exist.")
        return p
    p = PROFILES_DIR / f"{name}.yaml"
    if not p.is_file():
        raise ConfigError(f"unknown profile {str(name)!r}; available: {available_profiles()} (or a path to a .yaml file).")
    return p


def parse_profile(raw: Mapping[str, Any], name: str, path: Path | None = None) -> Profile:
    """Validate a profile mapping (strict: unknown keys anywhere are errors)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"profile {name!r}: expected a mapping with keys {PROFILE_KEYS}, got {type(raw).__name__}.")
    for key in raw:
        if key not in PROFILE_KEYS:
            raise ConfigError(f"profile {name!r}: unknown key '{key}'; accepted keys: {', '.join(PROFILE_KEYS)}.")
    defaults = dict(raw.get("defaults") or {})
    try:
        build_config({**defaults, "profile": name}, "defaults")  # every key and value checked
    except ConfigError as exc:
        raise ConfigError(f"profile {name!r}: {exc}") from exc
    try:
        grid = from_dict(Grid, raw.get("grid") or {}, "grid")
        grid.validate()
        for i, entry in enumerate(grid.entries()):  # an entry's settings are checked like --set values
            if entry.settings:
                build_config(_merge({**defaults, "profile": name, "method": entry.label},
                                    _nest(entry.overrides, f"grid.methods[{i}]")), f"grid.methods[{i}]")
    except ConfigError as exc:
        raise ConfigError(f"profile {name!r}: {exc}") from exc
    cluster = dict(raw.get("cluster") or {})
    try:

        parse_cluster(cluster)
    except ConfigError as exc:
        raise ConfigError(f"profile {name!r}: {exc}") from exc
    return Profile(name, str(raw.get("description", "")), defaults, grid, path, cluster)


def _read_raw(p: Path, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A profile file's mapping with its ``extends:`` chain resolved (see the module docstring)."""
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile file '{p}' is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping) or "extends" not in raw:
        return raw
    raw = dict(raw)
    base_name = raw.pop("extends")
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"profile {p.stem!r}: extends: expected a profile name, got {base_name!r}.")
    base_path = profile_path(base_name)
    here = chain + (str(p.resolve()),)
    if str(base_path.resolve()) in here:
        names = [Path(c).stem for c in here] + [base_path.stem]
        raise ConfigError(f"profile {p.stem!r}: extends: a cycle ({' -> '.join(names)}).")
    base = _read_raw(base_path, here)
    out = {k: v for k, v in base.items() if k != "description"}
    for key in ("defaults", "cluster"):
        if key in raw or key in base:
            out[key] = _merge(base.get(key) or {}, raw.get(key) or {})
    for key in ("description", "grid"):
        if key in raw:
            out[key] = raw[key]
    return out


@functools.lru_cache(maxsize=32)
def _load_profile_cached(path: str, mtimes: tuple[float, ...]) -> Profile:
    """The parsed profile; ``mtimes`` (of the file and the profiles it extends) key the cache, so an
    edit to any of them reloads it."""
    p = Path(path)
    return parse_profile(_read_raw(p), p.stem, p)


@functools.lru_cache(maxsize=64)
def _extends(path: str, mtime: float) -> Path | None:
    """The file a profile file extends (``None``: none, or unreadable: parsing says why)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        return profile_path(raw["extends"]) if isinstance(raw, Mapping) and isinstance(raw.get("extends"), str) else None
    except (yaml.YAMLError, ConfigError):
        return None


def _chain_mtimes(p: Path) -> tuple[float, ...]:
    """The modification times of ``p`` and of every profile it extends, in order (a cycle stops it)."""
    seen, out = set(), []
    while p is not None and str(p.resolve()) not in seen:
        seen.add(str(p.resolve()))
        mtime = p.stat().st_mtime
        out.append(mtime)
        p = _extends(str(p.resolve()), mtime)
    return tuple(out)


def load_profile(name: str | Path | Profile) -> Profile:
    """Load and validate a profile by name (``paper``, ``cpu``, ``cpu-longtail``, ``smoke``) or YAML path."""
    if isinstance(name, Profile):
        return name
    p = profile_path(name)
    prof = _load_profile_cached(str(p.resolve()), _chain_mtimes(p))
    return dataclasses.replace(prof, defaults=dict(prof.defaults), grid=dataclasses.replace(prof.grid))


def resolve_config(
    profile: str | Path | Profile = "cpu",
    overrides: Mapping[str, Any] | None = None,
    **params: Any,
) -> RunConfig:
    """The run configuration of a notebook: profile defaults, then parameters, then ``overrides``.

    Args:
        profile: profile name, YAML path or :class:`Profile`.
        overrides: values applied verbatim (``None`` included), nested or dotted
            (``{"train.iterations": 5}`` or ``{"train": {"iterations": 5}}``).
        **params: notebook parameters; ``None`` means "keep the profile's value".

    Raises:
        ConfigError: unknown profile, unknown parameter or key (named), unknown method, bad value.
    """
    prof = load_profile(profile)
    given = {k: v for k, v in params.items() if v is not None}
    merged = _merge(_nest(given, "parameters"), _nest(dict(overrides or {}), "overrides"))
    return prof.config(merged)
