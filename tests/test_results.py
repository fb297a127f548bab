"""Committed results: publish, render (tables + README block), stale records, reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lowres_clip import pipeline, results
from lowres_clip.config import load_profile
from lowres_clip.runs import load_records
from lowres_clip.spec import resolve_run

README = """# Title

<!-- results:eurosat:begin -->
old text
<!-- results:eurosat:end -->

Tail.
"""


@pytest.fixture
def study(tmp_path: Path):
    """Three smoke runs (zero-shot, linear probe, LoRA) under a profile file of the test's own."""
    raw = yaml.safe_load(load_profile("smoke").path.read_text())
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump(raw))
    roots = {"runs_root": str(tmp_path / "runs"), "figures_root": str(tmp_path / "figures"),
             "cache_root": str(tmp_path / "cache")}
    for method in ("zero_shot", "linear_probe", "lora"):
        pipeline.run_method(resolve_run(str(profile), None, method=method, **roots))
    return {"profile": profile, "roots": roots, "tmp": tmp_path}


def test_publish_render_readme_block_and_tables(study):
    tmp = study["tmp"]
    written = results.publish("eurosat", tmp / "runs", tmp / "records")
    assert len(written) == 3 and all(p.name == "record.json" for p in written)
    assert not list((tmp / "records").rglob("*.npz"))  # records only, no predictions
    readme = tmp / "README.md"
    readme.write_text(README)
    done = results.render("eurosat", tmp / "records", readme, tmp / "figures")
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# Title") and text.endswith("Tail.\n")
    assert "| 2 | linear_probe |" in text and "| 2 | lora |" in text and "vs the linear probe" in text
    assert "python -m lowres_clip.results render --dataset eurosat" in text and done["stale"] == []
    assert (tmp / "figures" / "eurosat" / "tables" / "results.md").is_file()
    assert (tmp / "figures" / "eurosat" / "tables" / "top1_vs_shots.html").is_file()
    # rendering twice gives the same README (the block is a function of the records)
    results.render("eurosat", tmp / "records", readme, tmp / "figures")
    assert readme.read_text() == text


def test_stale_when_the_command_resolves_to_other_settings(study):
    tmp = study["tmp"]
    results.publish("eurosat", tmp / "runs", tmp / "records")
    records = load_records(tmp / "records", "eurosat")
    assert results.stale_records(records) == []
    raw = yaml.safe_load(study["profile"].read_text())
    raw["defaults"]["train"]["lr"] = 0.123  # the profile changed after the records were made
    study["profile"].write_text(yaml.safe_dump(raw))
    stale = results.stale_records(records)
    assert [s.run_id.split("/")[2] for s in stale] == ["lora"]  # zero-shot and the probe do not train
    assert "settings changed" in stale[0].reason
    assert results.main(["stale", "--records-root", str(tmp / "records")]) == 1
    report = pipeline.report_tables(resolve_run(str(study["profile"]), None, **study["roots"]))
    assert [s.run_id for s in report.stale] == [stale[0].run_id]  # the report notebook says so too


def test_reproduce_reruns_and_compares(study, capsys):
    tmp = study["tmp"]
    results.publish("eurosat", tmp / "runs", tmp / "records")
    records = load_records(tmp / "records", "eurosat")
    reps = results.reproduce(results.select(records, ["lora", "zero_shot"]), tmp / "again")
    assert len(reps) == 2 and all(r.ok for r in reps), [r.line() for r in reps]
    assert all(r.tolerance == results.EXACT_TOLERANCE for r in reps)  # the smoke profile runs in fp32
    record = json.loads(records[0].to_json())
    record["metrics"]["top1"] += 0.25  # a drifted number is reported with both values
    bad = results.Reproduction(records[0].run_id, {"top1": record["metrics"]["top1"]}, {"top1": 0.0}, 0.005)
    assert not bad.ok and bad.line().startswith("DIFF") and "->" in bad.line()
