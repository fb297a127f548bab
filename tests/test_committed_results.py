"""The committed results are what the committed code produces: the cheap committed runs are rerun on
the real EuroSAT (``../shared/data``) and compared with their records; every committed record is
checked for staleness. Skips without the data or without committed records."""

from __future__ import annotations

import pytest

from lowres_clip import results
from lowres_clip.runs import load_records, split_long_tail

CHEAP = ("zero_shot", "linear_probe", "meta_adapter", "lora")


def committed():
    records = load_records(results.RECORDS_ROOT, "eurosat") if (results.RECORDS_ROOT / "eurosat").is_dir() else []
    if not records:
        pytest.skip("no committed records under figures/records/eurosat")
    return records


def test_committed_records_are_not_stale():
    stale = results.stale_records(committed())
    assert not stale, "committed records the current code would not produce (regenerate them: make study && make results): " + \
        "; ".join(f"{s.run_id} ({s.reason})" for s in stale)


@pytest.mark.shared_data
@pytest.mark.timeout(2700)  # five real runs on the full test split (LoRA K=16: 160 steps); ~10 min quiet, 3x under load
def test_cheap_committed_runs_reproduce(shared_data, tmp_path):
    balanced, long_tailed = split_long_tail(committed())
    chosen = results.select(balanced, CHEAP, shots=[16], seeds=[1])
    assert {r.identity["method"] for r in chosen} == set(CHEAP), "the committed study lacks a cheap run"
    # the long-tailed grid's linear probes too (seconds each): its few-shot draws are reproduced
    lt_probes = results.select(long_tailed, ["linear_probe"], seeds=[1])
    assert lt_probes, "the committed long-tailed grid lacks its linear probes"
    chosen += lt_probes
    reps = results.reproduce(chosen, tmp_path)
    bad = [r.line() for r in reps if not r.ok]
    assert not bad, "committed numbers not reproduced:\n" + "\n".join(bad)
