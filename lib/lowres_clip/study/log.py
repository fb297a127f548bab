"""The study log: which invocation made which runs (``runs/{dataset}/study-logs/{date}.json``)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_write_text
from ..jobs import StudyResult
from ..spec import STUDY_LOG, STUDY_LOGS, RunSpec


def made_runs(specs: Sequence[RunSpec], started: float) -> list[str]:
    """Ids of the runs among ``specs`` whose record was written at or after ``started`` (UNIX time):
    the runs this invocation made, not the ones it found finished."""
    made = set()
    for spec in specs:
        try:
            created = json.loads(spec.record_path.read_text()).get("created", 0)
        except (OSError, ValueError):
            continue
        if created >= started:
            made.add(spec.id)
    return sorted(made)


def write_log(base: RunSpec, result: StudyResult, command: str | None, executor: str | None = None,
              workers: int = 1, made: Sequence[str] = (), interrupted: bool = False) -> Path:
    """Log what one study invocation did, how long it took and where, naming the runs it made.

    Every invocation is kept as ``runs/{dataset}/study-logs/{date}.json``. ``runs/{dataset}/
    study-log.json`` is the log of the last invocation that ran or failed something: a rerun that
    only skipped finished work never replaces it (its timing would describe a study that did nothing).
    An invocation stopped by Ctrl-C is logged with ``interrupted: true`` and the runs it finished.
    """
    from ..runs import machine

    now = dt.datetime.now(dt.timezone.utc)
    log = {"command": command or "run_study(...)", "date": now.isoformat(timespec="seconds"),
           "seconds": round(result.seconds, 1), "ran": len(result.ran), "skipped": len(result.skipped),
           "failed": len(result.failed), "executor": executor, "workers": workers, "machine": machine(),
           "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
           "runs": list(made), "interrupted": interrupted}
    folder = base.runs_root / base.dataset
    history = folder / STUDY_LOGS / f"{now.strftime('%Y%m%dT%H%M%S.%f')}.json"
    atomic_write_text(history, json.dumps(log, indent=1))
    latest = folder / STUDY_LOG
    if result.ran or result.failed or not latest.exists():
        atomic_write_text(latest, json.dumps(log, indent=1))
    return history
