"""Publishing run records: copy the records a logged study invocation made (and its logs) into ``figures/records/{dataset}/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..runs import load_records
from ..spec import FIGURES_ROOT, RECORD_FILE, RUNS_ROOT, STUDY_LOGS

RECORDS_ROOT = FIGURES_ROOT / "records"


class UnloggedRecords(ValueError):
    """Records that no logged study invocation made: publishing them would name the wrong study."""


def study_logs(folder: Path) -> list[dict[str, Any]]:
    """The study logs under ``folder`` (``study-logs/*.json``, oldest first), each with its ``file``."""
    out = []
    for path in sorted((folder / STUDY_LOGS).glob("*.json")):
        log = json.loads(path.read_text())
        log["file"] = path.name
        out.append(log)
    return out


def publish(dataset: str, runs_root: Path = RUNS_ROOT, dest: Path = RECORDS_ROOT) -> list[Path]:
    """Replace the committed records of ``dataset`` by the records under ``runs_root``, with the
    logs of the study invocations that made them.

    Raises:
        UnloggedRecords: a record that no logged study invocation made (e.g. made by a notebook
            run by hand, or before study logs named their runs): the published study would not be
            the study that ran. Rerun them through ``python -m lowres_clip.study`` (``--force``).
    """
    records = load_records(runs_root, dataset)
    if not records:
        raise FileNotFoundError(f"no records of {dataset!r} under {runs_root}; run the study first.")
    logs = study_logs(runs_root / dataset)
    maker = {run: log for log in logs for run in log.get("runs", [])}  # the latest invocation that made it
    unlogged = [r.run_id for r in records if r.run_id not in maker]
    if unlogged:
        raise UnloggedRecords(
            f"{len(unlogged)} of {len(records)} records were not made by a logged study invocation "
            f"(e.g. {unlogged[0]}); rerun them with `python -m lowres_clip.study ... --force` before publishing.")
    shutil.rmtree(dest / dataset, ignore_errors=True)
    written = []
    for r in records:
        path = dest / r.run_id / RECORD_FILE
        r.save(path)
        written.append(path)
    used = {log["file"] for log in maker.values()}
    (dest / dataset / STUDY_LOGS).mkdir(parents=True, exist_ok=True)
    for name in sorted(used):
        shutil.copy(runs_root / dataset / STUDY_LOGS / name, dest / dataset / STUDY_LOGS / name)
    return written
