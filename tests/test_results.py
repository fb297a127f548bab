"""Committed results: publish, render (tables + README block), stale records, reproduce."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lowres_clip import pipeline, results
from lowres_clip.config import load_profile
from lowres_clip.runs import load_records
from lowres_clip.spec import STUDY_LOG, STUDY_LOGS, resolve_run
from lowres_clip.study import StudyResult, write_log

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
    specs = [resolve_run(str(profile), None, method=method, **roots) for method in ("zero_shot", "linear_probe", "lora")]
    for spec in specs:
        pipeline.run_method(spec)
    log(specs, ran=["three runs"], made=[s.id for s in specs])
    return {"profile": profile, "roots": roots, "tmp": tmp_path, "specs": specs}


def log(specs, ran, made):
    """Log one study invocation over ``specs`` (as ``run_study`` does) that made ``made``."""
    return write_log(specs[0], StudyResult(ran=list(ran), seconds=1.0), "python -m lowres_clip.study (test)", made=made)


def test_publish_refuses_records_no_logged_invocation_made(study):
    tmp = study["tmp"]
    extra = resolve_run(str(study["profile"]), None, method="bitfit", **study["roots"])
    pipeline.run_method(extra)  # made by hand, outside any study invocation
    with pytest.raises(results.UnloggedRecords, match="1 of 4 records"):
        results.publish("eurosat", tmp / "runs", tmp / "records")
    assert not (tmp / "records").exists()  # nothing published
    log(study["specs"] + [extra], ran=[], made=[])  # a rerun that skipped everything: it made nothing
    with pytest.raises(results.UnloggedRecords):
        results.publish("eurosat", tmp / "runs", tmp / "records")
    log([extra], ran=["bitfit"], made=[extra.id])
    assert len(results.publish("eurosat", tmp / "runs", tmp / "records")) == 4
    logs = results.study_logs(tmp / "records" / "eurosat")
    assert [sorted(lg["runs"]) for lg in logs] == [sorted(s.id for s in study["specs"]), [extra.id]]  # not the no-op


def test_a_rerun_that_skipped_everything_keeps_the_last_real_log(study):
    runs = Path(study["roots"]["runs_root"]) / "eurosat"
    before = (runs / STUDY_LOG).read_text()
    log(study["specs"], ran=[], made=[])
    assert (runs / STUDY_LOG).read_text() == before
    assert len(list((runs / STUDY_LOGS).glob("*.json"))) == 2  # both invocations are kept in the history


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
    drifted = next(r for r in load_records(tmp / "records", "eurosat") if r.identity["method"] == "zero_shot")
    drifted.metrics["top1"] += 0.25  # a committed number the code no longer gives
    drifted.save(tmp / "records" / drifted.run_id / "record.json")
    records = load_records(tmp / "records", "eurosat")
    reps = {r.run_id.split("/")[2]: r for r in results.reproduce(results.select(records, ["lora", "zero_shot"]),
                                                                  tmp / "again")}
    assert sorted(reps) == ["lora", "zero_shot"]
    assert all(r.tolerance == results.EXACT_TOLERANCE for r in reps.values())  # the smoke profile runs in fp32
    assert reps["lora"].ok, reps["lora"].line()
    bad = reps["zero_shot"]  # reported with both values
    assert not bad.ok and bad.line().startswith("DIFF") and "->" in bad.line()


def test_results_block_of_a_grid_shows_the_readme_shots_the_figure_and_computed_readings():
    """Over a K x seed grid the block shows K in README_SHOTS (every K in results.md), embeds the
    shots curve, names the best method per K and the widest seed spread, and judges every comparison
    with the linear probe by its paired 95 % interval over seeds (computed here with scipy)."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd
    from scipy import stats as sps

    seeds = (1, 2, 3)
    base = {"zero_shot": 0.14, "linear_probe": 0.60, "lora": 0.50, "bitfit": 0.595}
    noise = {"zero_shot": (0, 0, 0), "linear_probe": (0.0, 0.01, -0.01), "lora": (0.0, 0.02, -0.01),
             "bitfit": (0.01, 0.03, -0.04)}
    rows, records = [], []
    for k in (1, 2, 4, 8, 16):
        for m, a in base.items():
            top1 = [a + (0.015 * k if m != "zero_shot" else 0) + e for e in noise[m]]
            if (m, k) == ("lora", 2):
                top1 = [top1[0] - 0.08, top1[1] + 0.08, top1[2]]
            rows.append({"shots": k, "method": m, "setting": "", "row": m, "top1_mean": np.mean(top1),
                         "top1_std": np.std(top1, ddof=1), "balanced_mean": np.mean(top1),
                         "balanced_std": np.std(top1, ddof=1), "n_seeds": 3, "selection": "last",
                         "group_hash": f"{m}{k}"})
            trained = {"train": {"history": [{"step": 0, "loss": float("nan"), "val": 0.5},
                                             {"step": 10, "loss": 0.25, "val": 0.7}]},
                       "parameter_counts": {"total": 1234}} if m == "lora" else {}
            for seed, t in zip(seeds, top1):
                records.append(SimpleNamespace(commit="abc1234567", created=0.0, machine={"cpu": "X", "cores": 2},
                                               identity={"group_hash": f"{m}{k}", "seed": seed, "run_id": f"{m}{k}/{seed}"},
                                               timings={"train": 1.0, "eval": 2.0}, extra=trained,
                                               metrics={"val_top1": 0.75, "top1": t}))

    def interval(m, k):  # paired t interval over seeds of m minus the probe, in points
        d = 100 * (np.array([r.metrics["top1"] for r in records if r.identity["group_hash"] == f"{m}{k}"])
                   - np.array([r.metrics["top1"] for r in records if r.identity["group_hash"] == f"linear_probe{k}"]))
        h = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        return d.mean(), d.mean() - h, d.mean() + h

    logs = [{"seconds": 3000, "executor": "local (2 workers)", "file": "x.json", "runs": [r.identity["run_id"] for r in records]},
            {"seconds": 10, "executor": "slurm", "file": "y.json", "runs": ["another/study"]}]  # made none of them: not named
    block = results.results_block("eurosat", records, pd.DataFrame(rows), logs,
                                  [], figure="figures/eurosat/tables/top1_vs_shots.png")
    assert "![test top-1 against shots" in block and "(figures/eurosat/tables/top1_vs_shots.png)" in block
    table_ks = {line.split("|")[1].strip() for line in block.splitlines() if line.startswith("| ") and "K |" not in line}
    assert table_ks == {"1", "4", "16"} and "every K in `figures/eurosat/tables/results.md`" in block
    mean, low, high = interval("bitfit", 2)  # bitfit is the best adapted method at K=2
    assert low < 0 < high
    assert (f"* K=2: best linear_probe 63.00 ± 1.00; best adapted method bitfit "
            f"{np.mean([r.metrics['top1'] for r in records if r.identity['group_hash'] == 'bitfit2']) * 100:.2f}") in block
    assert f"({mean:+.2f} [{low:+.2f}, {high:+.2f}] (3 seeds) vs the linear probe: no difference shown)" in block
    assert "* Largest seed spread: lora at K=2" in block
    mean, low, high = interval("lora", 16)
    assert high < -2  # the whole interval is more than 2 points below the probe
    assert f"* lora: {mean:+.2f} [{low:+.2f}, {high:+.2f}] (3 seeds) points vs the linear probe: misses the goal" in block
    mean, low, high = interval("bitfit", 16)
    assert low < -2 < high  # the interval straddles the goal's margin: nothing is shown either way
    assert (f"* bitfit: {mean:+.2f} [{low:+.2f}, {high:+.2f}] (3 seeds) points vs the linear probe: neither reaching "
            "nor missing the goal is shown") in block
    assert block.count("misses the goal") == 1 and "local (2 workers)" in block and "Made 60 of them" in block
    assert "y.json" not in block
    assert ("* lora: 1,234 trained parameters, last training loss 0.250, validation 50.0% before training and "
            "75.0% after") in block


README_LT = README + """
<!-- results:eurosat-longtail:begin -->
old long tail
<!-- results:eurosat-longtail:end -->
"""


def test_long_tailed_records_get_their_own_block_and_figure(study):
    """Runs with an imbalance ratio leave the balanced block and get the long-tail block: one row per
    method and ratio (ratio 1 from the balanced run), each remedy against plain LoRA."""
    tmp = study["tmp"]
    lt = [resolve_run(str(study["profile"]), {"long_tail_ratio": 2}, method=m, **study["roots"]) for m in ("lora", "lora+la")]
    for spec in lt:
        pipeline.run_method(spec)
    log(lt, ran=["two long-tailed runs"], made=[s.id for s in lt])
    results.publish("eurosat", tmp / "runs", tmp / "records")
    readme = tmp / "README.md"
    readme.write_text(README_LT)
    done = results.render("eurosat", tmp / "records", readme, tmp / "figures")
    balanced, longtail = done["block"], done["longtail_block"]
    assert "from the 3 committed records" in balanced and "long_tail_ratio" not in balanced
    assert "from the 2 committed records" in longtail and "old long tail" not in readme.read_text()
    rows = [line.split("|")[1:3] for line in longtail.splitlines() if line.startswith("| ") and "ratio |" not in line]
    assert [(r.strip(), m.strip()) for r, m in rows] == [("1", "lora"), ("2", "lora"), ("2", "lora+la")]
    assert "* ratio 2, lora+la vs lora: top-1 " in longtail and "(images, 1 seed)" in longtail
    assert "(longtail_vs_ratio.png)" not in longtail and "figures/eurosat/tables/longtail_vs_ratio.png)" in longtail
    assert (tmp / "figures" / "eurosat" / "tables" / "longtail_vs_ratio.png").is_file()
    assert (tmp / "figures" / "eurosat" / "tables" / "recall_vs_training_shots.png").is_file()
    assert (tmp / "figures" / "eurosat" / "tables" / "longtail_gap_matched_mean_by_method.png").is_file()  # gap per method
    assert "| lora+la " in (tmp / "figures" / "eurosat" / "tables" / "longtail_separation.md").read_text()
    # each record's per-class numbers, recomputed from its saved predictions and split
    import numpy as np

    from lowres_clip.runs import Predictions
    from lowres_clip.sampling import FewShotSplit

    for spec in lt:
        rec = [r for r in load_records(tmp / "records", "eurosat") if r.run_id == spec.id][0].extra["per_class"]
        pred = Predictions.load(spec.predictions_path)
        split = FewShotSplit.load(next(spec.split_dir.glob(f"*{spec.cell}.json")))
        c = len(pred.classnames)
        assert rec["shots"] == [sum(s.label == k for s in split.train) for k in range(c)]
        assert len(set(rec["shots"])) > 1  # long-tailed: the classes got different numbers of images
        hits = pred.logits.argmax(1) == pred.labels
        assert rec["recall"] == pytest.approx([hits[pred.labels == k].mean() for k in range(c)])
        assert rec["predicted"] == np.bincount(pred.logits.argmax(1), minlength=c).tolist()


def test_longtail_block_judges_each_remedy_by_its_interval():
    """The remedy readings: paired t interval over seeds (computed here with scipy) of the remedy
    minus plain LoRA at the same ratio, on top-1 and tail top-1; "better" only when it excludes 0."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd
    from scipy import stats as sps

    top1 = {("lora", 4): [0.70, 0.72, 0.69], ("lora+la", 4): [0.74, 0.77, 0.73],
            ("lora+resample", 4): [0.71, 0.70, 0.72], ("zero_shot", 4): [0.1, 0.1, 0.1]}
    tail = {k: [v - 0.2 for v in vals] for k, vals in top1.items()}
    tail[("lora+la", 4)] = [0.55, 0.58, 0.53]
    records, rows = [], []
    for (m, ratio), vals in top1.items():
        g = f"{m}-{ratio}"
        for seed, t, tt in zip((1, 2, 3), vals, tail[(m, ratio)]):
            records.append(SimpleNamespace(commit="abc1234567", created=0.0, machine={"cpu": "X", "cores": 2},
                                           identity={"group_hash": g, "seed": seed, "run_id": f"{g}/{seed}"},
                                           metrics={"top1": t, "top1_tail": tt}, extra={}))
        rows.append({"long_tail_ratio": float(ratio), "shots": 16, "method": m, "setting": "", "row": m, "group_hash": g, "n_seeds": 3,
                     "balanced_mean": np.mean(vals), "balanced_std": np.std(vals, ddof=1),
                     "top1_tail_mean": np.mean(tail[(m, ratio)]), "top1_tail_std": np.std(tail[(m, ratio)], ddof=1)})

    def interval(metric, a, b):
        d = 100 * (np.array([r.metrics[metric] for r in records if r.identity["group_hash"] == a])
                   - np.array([r.metrics[metric] for r in records if r.identity["group_hash"] == b]))
        h = sps.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
        return f"{d.mean():+.2f} [{d.mean() - h:+.2f}, {d.mean() + h:+.2f}] (3 seeds)"

    block = results.longtail_block("eurosat", records, [], pd.DataFrame(rows), [])
    assert "| 4 | lora+la | 74.67 ± 2.08 | - | - | 55.33 ± 2.52 | - | - | 3 |" in block and "head K=16 shots" in block
    assert (f"* ratio 4, lora+la vs lora: top-1 {interval('top1', 'lora+la-4', 'lora-4')}: better; "
            f"tail top-1 {interval('top1_tail', 'lora+la-4', 'lora-4')}: better") in block
    assert f"* ratio 4, lora+resample vs lora: top-1 {interval('top1', 'lora+resample-4', 'lora-4')}: no difference shown" in block
    assert "zero_shot vs" not in block
    assert "* ratio 4: best balanced accuracy lora+la 74.67 ± 2.08; head minus tail top-1 (points): " not in block  # no head column
    rows = [{**row, "top1_head_mean": row["balanced_mean"] + 0.1, "top1_head_std": 0.0} for row in rows]
    block = results.longtail_block("eurosat", records, [], pd.DataFrame(rows), [])
    assert ("* ratio 4: best balanced accuracy lora+la 74.67 ± 2.08; head minus tail top-1 (points): lora 30.0, "
            "lora+la 29.3, lora+resample 30.0, zero_shot 30.0") in block
