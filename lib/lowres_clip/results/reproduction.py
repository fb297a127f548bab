"""Reproducing committed records: rerun each with its recorded thread count and compare, exactly on the same numerics, else within the measured noise floor."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import RunConfig, parse_entry
from ..spec import flatten, resolve_origin

BF16_TOLERANCE = 0.005  # absolute, on accuracies in [0, 1]: half a point (only without a measured floor)
NOISE_FLOOR = Path(__file__).resolve().parents[1] / "resources" / "noise_floor.json"
EXACT_TOLERANCE = 1e-9
COMPARED = ("top1", "balanced")


@dataclass
class Reproduction:
    """One committed record rerun: old and new metrics, tolerance (and why), verdict."""

    run_id: str
    old: dict[str, float]
    new: dict[str, float]
    tolerance: float
    reason: str = "exact"

    @property
    def ok(self) -> bool:
        return all(abs(self.new[m] - self.old[m]) <= self.tolerance for m in COMPARED if m in self.old)

    def line(self) -> str:
        parts = [f"{m} {100 * self.old[m]:.2f} -> {100 * self.new[m]:.2f}" for m in COMPARED if m in self.old]
        tol = "exact" if self.tolerance <= EXACT_TOLERANCE else f"tolerance {100 * self.tolerance:g} points"
        return f"{'ok  ' if self.ok else 'DIFF'} {self.run_id}: " + ", ".join(parts) + f" ({tol}: {self.reason})"


def precision_used(record) -> str:
    """``fp32``, ``bf16`` or ``fp16``: the lowest precision a record's run trained or evaluated in
    (``protocol["precision"]``; records without it: what the loop reported in ``extra["train"]``)."""
    used = record.protocol.get("precision")
    names = [v for v in used.values() if v] if isinstance(used, dict) else []
    if not names:
        names = [str(record.extra.get("train", {}).get("precision", "fp32"))]
    names = ["bf16" if n in ("bf16", "bfloat16") else "fp16" if n in ("fp16", "float16") else "fp32" for n in names]
    return "fp16" if "fp16" in names else "bf16" if "bf16" in names else "fp32"


def noise_floor() -> dict[str, Any]:
    """The measured reproduction tolerances (``resources/noise_floor.json``, written by
    ``benchmarks/noise_floor.py``): per precision, the largest top-1 / balanced difference seen
    between runs that differ only in thread count or instruction set."""
    return json.loads(NOISE_FLOOR.read_text()) if NOISE_FLOOR.is_file() else {}


def tolerance_of(record, current: dict[str, Any] | None = None) -> tuple[float, str]:
    """The tolerance a rerun of ``record`` is held to here, and why.

    Exact when this process has the record's numerics (CPU model, ISA flags, thread count, torch,
    oneDNN and MKL versions, ATen dispatch, numeric environment: :func:`lowres_clip.numerics.
    numerics_differences`); otherwise the noise floor measured for the precision the run used
    (:func:`noise_floor`), and :data:`BF16_TOLERANCE` for a precision the floor has no value for."""
    from ..numerics import numerics_differences

    differences = numerics_differences(record.machine, current)
    if not differences:
        return EXACT_TOLERANCE, "same machine, threads and libraries"
    precision = precision_used(record)
    floor = noise_floor().get(precision)
    where = "; ".join(differences)
    if floor:
        return float(floor["tolerance"]), f"{precision} noise floor of {floor['measured']} ({where})"
    return BF16_TOLERANCE, f"{precision}: no measured floor, default ({where})"


def reproduce(records, workdir: Path | None = None, log=print) -> list[Reproduction]:
    """Rerun each record's command with the current code into ``workdir`` and compare the metrics.

    Each rerun uses the thread count its record was made with, so a rerun on the machine that made
    the record is bit-identical; the tolerance is :func:`tolerance_of`."""
    from ..numerics import using_threads
    from ..pipeline import run_method

    workdir = Path(workdir or tempfile.mkdtemp(prefix="lowres-clip-reproduce-"))
    out = []
    for r in records:
        spec = resolve_origin(r.identity["origin"], runs_root=str(workdir / "runs"), figures_root=str(workdir / "figures"))
        with using_threads(r.machine.get("threads")):
            new, _ = run_method(spec)
            tolerance, reason = tolerance_of(r)
        rep = Reproduction(r.run_id, {m: r.metrics[m] for m in COMPARED if m in r.metrics},
                           {m: new.metrics[m] for m in COMPARED if m in new.metrics}, tolerance, reason)
        log(rep.line())
        out.append(rep)
    return out


def select(records, methods: Sequence[str] | None = None, shots: Sequence[int] | None = None,
           seeds: Sequence[int] | None = None):
    """Records of the given method labels or grid entries, K and seeds (all when ``None``).

    A plain label selects every record of that label; an entry with settings of its own
    (``meta_adapter[meta_adapter.budget=run]``) only the records whose config holds them (a key a
    record's config lacks reads as the current default: fields added later default to what the
    code did before them)."""
    entries = [parse_entry(m) for m in methods] if methods else None
    defaults = flatten(RunConfig().to_dict())

    def chosen(r) -> bool:
        if entries is None:
            return True
        config = {**defaults, **flatten(r.config)}
        return any(r.identity["method"] == e.label and all(config.get(k) == v for k, v in e.settings) for e in entries)

    return [r for r in records
            if chosen(r) and (shots is None or r.identity["shots"] in shots) and (seeds is None or r.identity["seed"] in seeds)]
