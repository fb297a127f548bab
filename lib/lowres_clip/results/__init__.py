"""Committed results: publish run records, regenerate tables and the README block, find stale
records, and rerun any committed record to compare old and new numbers.

``python -m lowres_clip.results publish --dataset eurosat``
    copies every record of the dataset from ``runs/`` to ``figures/records/{run id}/record.json``
    (committed; no predictions or checkpoints), with the log of the study that made them.
``python -m lowres_clip.results render --dataset eurosat``
    regenerates ``figures/{dataset}/tables/`` and the README's results block (between the markers
    ``<!-- results:{dataset}:begin -->`` and ``<!-- results:{dataset}:end -->``) from the committed
    records alone; nothing in that block is typed by hand.
``python -m lowres_clip.results stale``
    lists committed records whose settings hash differs from what the current code resolves for the
    same command (profile, parameters, overrides), i.e. numbers this code would not produce.
``python -m lowres_clip.results reproduce [--methods zero_shot linear_probe ...]``
    reruns committed records into a temporary folder and prints old vs new; exits 1 on a
    difference beyond the tolerance: exact where this process has the record's numerics (CPU, ISA,
    threads, libraries; each rerun uses the recorded thread count), else the noise floor measured by
    ``benchmarks/noise_floor.py`` for the precision the run used. ``make reproduce`` reruns them all.
"""

from __future__ import annotations

from .publishing import RECORDS_ROOT, UnloggedRecords, publish, study_logs
from .rendering import GOAL_POINTS, README, README_SHOTS, longtail_block, render, replace_block, results_block
from .reproduction import (
    BF16_TOLERANCE, COMPARED, EXACT_TOLERANCE, NOISE_FLOOR, Reproduction, noise_floor, precision_used,
    reproduce, select, tolerance_of,
)
from .cli import main
from ..runs import Stale, stale_records  # noqa: F401 (re-exported)

__all__ = [
    "Stale", "stale_records",
    "BF16_TOLERANCE", "COMPARED", "EXACT_TOLERANCE", "GOAL_POINTS", "main", "NOISE_FLOOR", "noise_floor",
    "precision_used", "publish", "README", "README_SHOTS", "RECORDS_ROOT", "render", "replace_block",
    "longtail_block", "reproduce", "Reproduction", "results_block", "select", "study_logs", "tolerance_of", "UnloggedRecords",
]
