"""The pipeline steps and the papermill study runner: tables, skipping, forcing, failures, validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from lowres_clip import pipeline, preflight, study
from lowres_clip.config import ConfigError, load_profile
from lowres_clip.runs import Predictions, RunRecord
from lowres_clip.smoke import make_smoke_dataset
from lowres_clip.spec import RunSpec, resolve_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, str]:
    return {name: str(tmp_path / name.split("_")[0]) for name in ("runs_root", "figures_root", "cache_root")}


def smoke_spec(roots: dict[str, str], overrides=None, **params) -> RunSpec:
    return resolve_run("smoke", overrides, **roots, **params)


def fake_record(spec: RunSpec, top1: float = 0.5) -> None:
    """A record as a finished run of ``spec`` writes it."""
    RunRecord.for_run(spec, {"top1": top1, "balanced": top1 / 2}, timings={"total": 1.0}).save(spec.record_path)


# ----------------------------------------------------------------------------- aggregated tables
def test_shots_curves_for_balanced_and_groups_with_hover_values(roots):
    """Over K {1, 2} x seeds {1, 2} the report draws top-1, balanced and, for runs with head / medium
    / tail numbers, one curve per group (PNG + HTML); the plotly hover carries the table's std and
    n_seeds."""
    from lowres_clip import plots

    for k in (1, 2):
        for seed in (1, 2):
            top1 = 0.4 + 0.1 * k + 0.02 * seed
            metrics = {"top1": top1, "balanced": top1 - 0.05, "top1_head": top1 + 0.1, "top1_medium": top1,
                       "top1_tail": top1 - 0.2}
            spec = smoke_spec(roots, method="lora", shots=k, seed=seed)
            RunRecord.for_run(spec, metrics, timings={"total": 1.0}).save(spec.record_path)
    tables = pipeline.report_tables(smoke_spec(roots))
    for name in ("top1", "balanced", "top1_head", "top1_medium", "top1_tail"):
        assert (tables_dir := smoke_spec(roots).tables_dir / f"{name}_vs_shots.png").is_file(), name
        assert tables_dir.with_suffix(".html").is_file(), name
    assert not (smoke_spec(roots).tables_dir / "balanced_head_vs_shots.png").exists()  # no balanced group numbers
    line = next(t for t in plots.accuracy_vs_shots_plotly(tables.table, "top1").data if t.mode == "lines+markers")
    assert list(line.x) == [1, 2]
    assert np.allclose(line.y, [53.0, 63.0])  # mean of seeds 1 and 2, in %
    assert np.allclose(line.customdata[:, 0], 100 * np.std([0.02, 0.04], ddof=1))  # std, in points
    assert list(line.customdata[:, 1]) == [2, 2]  # n_seeds


def test_report_tables_mean_and_std_over_seeds(roots):
    spec = smoke_spec(roots)
    crafted = {("lora", 1): 0.5, ("lora", 2): 0.6, ("lora", 3): 0.8, ("zero_shot", 1): 0.25}
    for (method, seed), top1 in crafted.items():
        fake_record(smoke_spec(roots, method=method, seed=seed, shots=2), top1)
    tables = pipeline.report_tables(spec)
    csv = pd.read_csv(spec.table_paths()[0])
    lora = csv[csv["method"] == "lora"].iloc[0]
    values = np.array([0.5, 0.6, 0.8])
    assert lora["n_seeds"] == 3
    assert lora["top1_mean"] == pytest.approx(values.mean())
    assert lora["top1_std"] == pytest.approx(values.std(ddof=1))
    assert lora["balanced_std"] == pytest.approx((values / 2).std(ddof=1))
    zs = csv[csv["method"] == "zero_shot"].iloc[0]
    assert (zs["n_seeds"], zs["top1_mean"], zs["top1_std"]) == (1, 0.25, 0.0)
    md = spec.table_paths()[1].read_text()
    assert "63.33 ± 15.28" in md and "25.00 ± 0.00" in md
    assert r"63.33 $\pm$ 15.28" in spec.table_paths()[2].read_text()
    assert len(tables.runs) == 4 and (spec.tables_dir / "methods_by_shots.png").is_file()
    assert (spec.tables_dir / "top1_vs_shots.png").is_file() and (spec.tables_dir / "top1_vs_shots.html").is_file()
    assert "n_seeds" in (spec.tables_dir / "top1_vs_shots.html").read_text()


def test_tables_never_average_runs_with_other_settings(roots):
    """Runs differing in a training setting, long_tail_ratio or test_subset are separate rows, named."""
    variants = [{}, {"overrides": {"lora.rank": 4}}, {"long_tail_ratio": 2.0}, {"test_subset": 8}]
    specs = [smoke_spec(roots, method="lora", seed=seed, shots=2, **v) for v in variants for seed in (1, 2)]
    assert len({s.run_dir for s in specs}) == len(specs)  # never one folder for two settings
    for i, s in enumerate(specs):
        fake_record(s, 0.1 * (i + 1))
    report = pipeline.report_tables(smoke_spec(roots))
    table = report.table  # the long-tailed runs are reported apart, by imbalance ratio
    assert len(table) == 3 and set(table["n_seeds"]) == {2}
    assert set(table["row"]) == {"lora", "lora (lora.rank=4)", "lora (test_subset=8)"}
    means = dict(zip(table["row"], table["top1_mean"]))
    assert means["lora (lora.rank=4)"] == pytest.approx(0.35) and means["lora"] == pytest.approx(0.15)
    lt = report.longtail  # ratio 2, and ratio 1 from the balanced runs of the method at the same K
    got = {(row, ratio): mean for row, ratio, mean in zip(lt["row"], lt["long_tail_ratio"], lt["top1_mean"])}
    assert got == {("lora", 1.0): pytest.approx(0.15), ("lora (lora.rank=4)", 1.0): pytest.approx(0.35),
                   ("lora (test_subset=8)", 1.0): pytest.approx(0.75), ("lora", 2.0): pytest.approx(0.55)}
    assert (smoke_spec(roots).tables_dir / "longtail_vs_ratio.png").is_file()
    assert "imbalance ratio" in (smoke_spec(roots).tables_dir / "longtail.md").read_text()


def test_a_long_tailed_study_alone_reports_its_long_tail_table(roots):
    """No balanced run (e.g. profile cpu-longtail's own report): the long-tail table is the report."""
    for i, ratio in enumerate((2.0, 4.0)):
        for seed in (1, 2):
            fake_record(smoke_spec(roots, method="lora", seed=seed, shots=2, long_tail_ratio=ratio), 0.2 * (i + 1) + 0.1 * seed)
    report = pipeline.report_tables(smoke_spec(roots))
    assert report.longtail is report.table and list(report.table["long_tail_ratio"]) == [2.0, 4.0]
    assert list(report.table["top1_mean"]) == pytest.approx([0.35, 0.55]) and set(report.table["row"]) == {"lora"}
    assert "imbalance ratio" in report.display.columns and not (smoke_spec(roots).tables_dir / "results.md").exists()
    assert (smoke_spec(roots).tables_dir / "longtail_vs_ratio.png").is_file()


# ----------------------------------------------------------------------------- runs
def test_run_method_writes_record_last_with_timings(roots):
    spec = smoke_spec(roots, method="linear_probe")
    record, preds = pipeline.run_method(spec)
    assert spec.is_finished()
    assert {"data", "model", "features", "train", "eval", "figures", "total"} <= set(record.timings)
    assert {"top1", "balanced", "val_top1"} <= set(record.metrics)
    assert record.config["method"] == "linear_probe" and record.identity["seed"] == spec.config.seed
    assert record.config_hash == spec.config_hash and record.settings == spec.settings
    assert record.protocol["selection"].startswith("best_val") and record.machine["cores"] >= 1
    again = Predictions.load(spec.predictions_path)
    np.testing.assert_array_equal(again.logits, preds.logits)
    fig_dir = spec.figure_dir
    assert (fig_dir / "confusion_normalized.png").is_file() and (fig_dir / "per_class_accuracy.png").is_file()


def test_test_subset_is_fixed_and_stratified(roots):
    spec = smoke_spec(roots, method="zero_shot", test_subset=8)
    ds, _ = pipeline.prepare_data(spec)
    subset = pipeline.test_samples(spec, ds)
    assert len(subset) == 8 and np.bincount([s.label for s in subset]).tolist() == [2, 2, 2, 2]
    assert subset == pipeline.test_samples(smoke_spec(roots, method="lora", seed=2, test_subset=8), ds)
    _, preds = pipeline.run_method(spec)
    assert preds.paths == [s.path for s in subset] and preds.logits.shape == (8, 4)
    assert len(pipeline.test_samples(smoke_spec(roots), ds)) == len(ds.split("test"))


def test_combined_method_saves_its_checkpoint(roots):
    spec = smoke_spec(roots, method="lora+bitfit+meta_adapter")
    record, _ = pipeline.run_method(spec)
    assert spec.checkpoint_path.is_file()
    assert record.extra["parameter_counts"]["lora"] > 0 and record.extra["parameter_counts"]["meta_adapter"] > 0
    assert record.extra["train"]["steps"] == spec.config.train.iterations
    assert record.protocol["selected_step"] == record.extra["train"]["selected_step"] and record.protocol["template"]
    assert record.protocol["selection"] == "last" and record.protocol["selected_step"] == spec.config.train.iterations


def test_interrupted_run_leaves_no_finished_record(roots, monkeypatch):
    spec = smoke_spec(roots, method="zero_shot")
    pipeline.run_method(spec)
    assert spec.is_finished()

    def killed(self, path):
        raise KeyboardInterrupt  # the process dies right before the record is written

    monkeypatch.setattr(RunRecord, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_method(spec)  # a forced rerun, interrupted
    assert spec.predictions_path.is_file()
    assert not spec.is_finished()  # the old record was removed first


def test_a_failed_first_run_leaves_no_folder(roots, monkeypatch):
    spec = smoke_spec(roots, method="zero_shot")

    def broken(*args, **kwargs):
        raise RuntimeError("encoding failed")

    monkeypatch.setattr(pipeline.run, "run_adapted", broken)
    with pytest.raises(RuntimeError):
        pipeline.run_method(spec)
    assert not spec.run_dir.exists()


def test_same_seed_same_numbers_and_a_changed_setting_is_a_new_run(roots):
    """A rerun with the same settings gives identical metrics and identical test predictions (the
    saved ``predictions.npz``: logits, hence argmax); changing a training setting makes a new run
    beside the default one, whose record stays untouched."""
    spec = smoke_spec(roots, method="lora")
    first, _ = pipeline.run_method(spec)
    mtime = spec.record_path.stat().st_mtime_ns
    again = RunSpec(spec.config.replace(runs_root=roots["runs_root"] + "-again"))
    assert again.config_hash == spec.config_hash  # paths are not settings
    second, _ = pipeline.run_method(again)
    assert second.metrics == first.metrics
    a, b = Predictions.load(spec.predictions_path), Predictions.load(again.predictions_path)
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.logits, b.logits)  # same process, same threads: bit-identical
    rank4 = smoke_spec(roots, {"lora.rank": 4}, method="lora")
    assert rank4.key == spec.key and rank4.variant != spec.variant and not rank4.is_finished()
    pipeline.run_method(rank4)
    assert spec.record_path.stat().st_mtime_ns == mtime and spec.is_finished() and rank4.is_finished()


# ----------------------------------------------------------------------------- study logic
class FakeExecutor:
    """Stands in for papermill: notes the jobs and writes what their notebooks would write."""

    def __init__(self, runs_root: str, fail: str | None = None):
        self.runs_root, self.fail, self.calls = runs_root, fail, []

    def __call__(self, job: study.Job) -> None:
        self.calls.append(job.name)
        if self.fail and self.fail in job.name:
            raise RuntimeError("boom")
        for spec in job.specs:
            fake_record(spec)
        for p in job.outputs:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("done")


def grid(roots, executor, **kw):
    kw.setdefault("methods", ["zero_shot", "lora"])
    kw.setdefault("jobs_per", "run")
    return study.run_study("smoke", "eurosat", shots=[1], seeds=[1], executor=executor, progress=False, **roots, **kw)


def test_rerun_skips_finished_runs_and_force_redoes_them(roots):
    specs = {m: smoke_spec(roots, method=m, shots=1, seed=1) for m in ("zero_shot", "lora")}
    keys = {m: s.id for m, s in specs.items()}
    first = FakeExecutor(roots["runs_root"])
    result = grid(roots, first)
    assert result.ok and first.calls == ["eurosat/data/k1-s1", keys["lora"], keys["zero_shot"],  # longest first
                                         "eurosat/failure/k1-s1/zero_shot-vs-lora", "eurosat/report"]
    again = FakeExecutor(roots["runs_root"])
    result = grid(roots, again)
    assert again.calls == []  # the same command twice: everything is skipped the second time
    assert set(result.skipped) == set(first.calls)
    forced = FakeExecutor(roots["runs_root"])
    grid(roots, forced, force=True)
    assert forced.calls == first.calls
    specs["lora"].record_path.unlink()
    partial = FakeExecutor(roots["runs_root"])
    grid(roots, partial)  # the split is still needed by lora; the failure analysis sees a new lora run
    assert partial.calls == ["eurosat/data/k1-s1", keys["lora"], "eurosat/failure/k1-s1/zero_shot-vs-lora",
                             "eurosat/report"]
    changed = FakeExecutor(roots["runs_root"])
    grid(roots, changed, overrides={"lora.rank": 4})  # a result-affecting setting: only lora reruns
    rank4 = smoke_spec(roots, {"lora.rank": 4}, method="lora", shots=1, seed=1)
    assert changed.calls == ["eurosat/data/k1-s1", rank4.id, "eurosat/failure/k1-s1/zero_shot-vs-lora", "eurosat/report"]
    assert specs["lora"].is_finished() and rank4.is_finished()


def test_per_method_notebooks_run_the_grid_slice_in_one_kernel(roots):
    """One notebook execution per method over every K and seed, one data notebook for the grid;
    the failure analysis runs for the profile's cells; a rerun skips everything; --force redoes all."""
    ex = FakeExecutor(roots["runs_root"])
    result = study.run_study("smoke", "eurosat", executor=ex, progress=False, methods=["zero_shot", "lora"],
                             jobs_per="method", **roots)
    assert result.ok
    assert ex.calls == ["eurosat/data/grid", "eurosat/tiny-vit-random/lora", "eurosat/tiny-vit-random/zero_shot",
                        "eurosat/failure/k1-s1/zero_shot-vs-lora", "eurosat/failure/k1-s2/zero_shot-vs-lora",
                        "eurosat/failure/k2-s1/zero_shot-vs-lora", "eurosat/failure/k2-s2/zero_shot-vs-lora",
                        "eurosat/report"]
    jobs = study.plan_study("smoke", "eurosat", methods=["lora"], **roots)
    lora = next(j for j in jobs if j.notebook == study.NB_LORA)
    assert lora.parameters["shots"] == [1, 2] and lora.parameters["seed"] == [1, 2] and len(lora.specs) == 4
    assert all(s.is_finished() for s in lora.specs)
    again = FakeExecutor(roots["runs_root"])
    study.run_study("smoke", "eurosat", executor=again, progress=False, methods=["zero_shot", "lora"], **roots)
    assert again.calls == []
    mtimes = [s.record_path.stat().st_mtime_ns for s in lora.specs]
    forced = FakeExecutor(roots["runs_root"])
    study.run_study("smoke", "eurosat", executor=forced, progress=False, methods=["lora"], force=True, **roots)
    assert "eurosat/tiny-vit-random/lora" in forced.calls
    assert all(s.record_path.stat().st_mtime_ns != m for s, m in zip(lora.specs, mtimes))


def test_jobs_per_method_and_seed_cut_the_grid_evenly_longest_first(roots):
    """--jobs-per method-seed (the local workers' default): one notebook per method and seed over
    every K, one data notebook per seed; the plan lists the data jobs, then the runs longest first
    (image-tower training before the cheap methods, over every seed); the failure analysis waits for
    its two method-seed jobs."""
    jobs = study.plan_study("smoke", "eurosat", methods=["zero_shot", "lora"], jobs_per="method-seed", **roots)
    names = [j.name for j in jobs]
    m = "eurosat/tiny-vit-random"
    assert names[:6] == ["eurosat/data/s1", "eurosat/data/s2", f"{m}/lora/s1", f"{m}/lora/s2",
                         f"{m}/zero_shot/s1", f"{m}/zero_shot/s2"]
    lora = jobs[2]
    assert lora.parameters["shots"] == [1, 2] and lora.parameters["seed"] == [1]
    assert [(s.config.shots, s.config.seed) for s in lora.specs] == [(1, 1), (2, 1)]
    failure = next(j for j in jobs if j.name == "eurosat/failure/k2-s2/zero_shot-vs-lora")
    assert sorted(failure.depends) == [f"{m}/lora/s2", f"{m}/zero_shot/s2"]
    assert study.DEFAULT_JOBS_PER == {"sequential": "method", "local": "method-seed", "slurm": "run"}
    with pytest.raises(ConfigError, match="jobs_per"):
        study.plan_study("smoke", "eurosat", jobs_per="cell", **roots)


def test_a_grid_entry_with_settings_runs_beside_the_plain_label(roots, tmp_path):
    """``meta_adapter[meta_adapter.budget=run]`` beside ``meta_adapter``: its own jobs (named with the
    entry), notebooks that get its settings as overrides, runs under the same key in another folder,
    a second table row named by its setting; ``results.select`` picks either; an entry whose settings
    change nothing is an error."""
    from lowres_clip import results
    from lowres_clip.runs import load_records

    raw = yaml.safe_load((study.PROFILES_DIR / "smoke.yaml").read_text())
    raw["grid"] = {"datasets": ["eurosat"], "shots": [1], "seeds": [1, 2],
                   "methods": ["meta_adapter", "meta_adapter[meta_adapter.budget=run]"]}
    profile = tmp_path / "entries.yaml"
    profile.write_text(yaml.safe_dump(raw))
    ex = FakeExecutor(roots["runs_root"])
    result = study.run_study(profile, "eurosat", executor=ex, progress=False, jobs_per="method-seed",
                             overrides={"train.lr": 0.5}, **roots)
    m = "eurosat/tiny-vit-random/meta_adapter"
    assert result.ok and ex.calls == ["eurosat/data/s1", "eurosat/data/s2", f"{m}/s1",
                                      f"{m}[meta_adapter.budget=run]/s1", f"{m}/s2",
                                      f"{m}[meta_adapter.budget=run]/s2", "eurosat/report"]
    jobs = study.plan_study(profile, "eurosat", methods=["meta_adapter[meta_adapter.budget=run]"],
                            overrides={"train.lr": 0.5}, **roots)
    run_job = next(j for j in jobs if j.specs)
    assert run_job.parameters["method"] == "meta_adapter"
    assert run_job.parameters["overrides"] == {"train.lr": 0.5, "meta_adapter.budget": "run"}
    assert all(s.config.meta_adapter.budget == "run" and s.config.train.lr == 0.5 for s in run_job.specs)
    plain = smoke_spec(roots, {"train.lr": 0.5}, method="meta_adapter", shots=1, seed=1)
    assert plain.is_finished() and run_job.specs[0].key == plain.key and run_job.specs[0].id != plain.id
    table = pipeline.report_tables(plain).table
    assert sorted(table["row"]) == ["meta_adapter", "meta_adapter (meta_adapter.budget=run)"]
    records = load_records(roots["runs_root"], "eurosat")
    assert len(results.select(records, ["meta_adapter"])) == 4
    chosen = results.select(records, ["meta_adapter[meta_adapter.budget=run]"])
    assert len(chosen) == 2 and all(r.config["meta_adapter"]["budget"] == "run" for r in chosen)
    assert len(results.select(records, ["meta_adapter[meta_adapter.budget=reference]"])) == 2

    raw["grid"]["methods"] = ["meta_adapter", "meta_adapter[lora.rank=4]"]  # lora is not part of meta_adapter
    profile.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="make the same runs"):
        study.plan_study(profile, "eurosat", **roots)


def test_a_failed_run_is_reported_and_the_others_go_on(roots):
    specs = {m: smoke_spec(roots, method=m, shots=1, seed=1) for m in ("zero_shot", "lora")}
    keys = {m: s.id for m, s in specs.items()}
    ex = FakeExecutor(roots["runs_root"], fail="/lora/")
    result = grid(roots, ex)
    assert not result.ok
    assert "RuntimeError: boom" in result.failed[keys["lora"]]
    assert result.failed["eurosat/failure/k1-s1/zero_shot-vs-lora"].startswith(f"not run: {keys['lora']} failed")
    assert specs["zero_shot"].is_finished() and "eurosat/report" in ex.calls
    assert "FAILED" in result.summary()


def test_bad_profile_key_method_or_override_fails_before_any_run(roots, tmp_path):
    ex = FakeExecutor(roots["runs_root"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  model: tiny-vit\n  train: {iterationz: 3}\ngrid:\n  datasets: [eurosat]\n")
    with pytest.raises(ConfigError, match="defaults.train.iterationz"):
        study.run_study(bad, "eurosat", executor=ex, **roots)
    bad.write_text("defaults:\n  model: tiny-vit\ngrid:\n  datasets: [eurosat]\n  methods: [zero_shot, lora+bitfitt]\n")
    with pytest.raises(ConfigError, match="bitfitt"):
        study.run_study(bad, "eurosat", executor=ex, **roots)
    with pytest.raises(ConfigError, match="train.iterationz"):
        grid(roots, ex, overrides={"train.iterationz": 3})
    with pytest.raises(ConfigError, match="lorra"):
        grid(roots, ex, methods=["lorra"])
    assert ex.calls == [] and not Path(roots["runs_root"]).exists()


def test_unknown_notebook_parameter_fails_before_any_run(roots, tmp_path):
    nb_dir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, nb_dir)
    path = nb_dir / study.NB_ZERO_SHOT
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("method ="))
    nbformat.write(nb, path)
    ex = FakeExecutor(roots["runs_root"])
    with pytest.raises(ConfigError, match="unknown parameter 'method' for 01_zero_shot.ipynb"):
        grid(roots, ex, notebooks_dir=nb_dir)
    assert ex.calls == []


def test_cli_reports_config_errors(roots, capsys):
    rc = study.main(["--profile", "smoke", "--dataset", "eurosat", "--set", "train.iterationz=3",
                     "--runs-root", roots["runs_root"]])
    assert rc == 2 and "train.iterationz" in capsys.readouterr().err
    rc = study.main(["--profile", "smoke", "--dataset", "imagenet"])
    assert rc == 2 and "imagenet" in capsys.readouterr().err


def test_notebook_for_method_labels():
    assert study.notebook_for("linear_probe") == study.NB_ZERO_SHOT
    assert study.notebook_for("bitfit+lora+meta_adapter") == study.NB_LORA
    assert study.notebook_for("bitfit+meta_adapter") == study.NB_BITFIT
    assert study.notebook_for("meta_adapter") == study.NB_META
    assert study.notebook_for("lora+aug-classic") == study.NB_AUG_TRAIN


# ----------------------------------------------------------------------------- papermill end to end
def test_study_end_to_end_with_papermill(roots, tmp_path, capsys, monkeypatch):
    """Real notebooks on the python3 kernel: zero-shot runs, diffusion augmentation fails offline
    (no weights) inside its notebook, the failure is reported, the rest goes on; a rerun skips the
    finished run. (The preflight would stop the study for the weights first: its check is off here.)"""
    monkeypatch.setattr(preflight, "generator_problems", lambda cfg, probe=True: [])
    data_root = make_smoke_dataset(tmp_path / "data")
    raw = yaml.safe_load(load_profile("smoke").path.read_text())
    raw["grid"] = {"datasets": ["eurosat"], "shots": [1], "seeds": [1], "methods": ["zero_shot", "lora+aug-diffusion"]}
    profile = tmp_path / "offline.yaml"
    profile.write_text(yaml.safe_dump(raw))
    args = ["--profile", str(profile), "--dataset", "eurosat", "--data-root", str(data_root)]
    for name, value in roots.items():
        args += [f"--{name.replace('_', '-')}", value]
    rc = study.main(args)
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 1, out + captured.err
    assert "FAILED eurosat/augment-diffusion/grid" in out and "not run" in out
    zs = resolve_run(profile, None, method="zero_shot", shots=1, seed=1, data_root=str(data_root), **roots)
    assert zs.is_finished()
    executed = Path(roots["runs_root"]) / "notebooks" / "eurosat/tiny-vit-random/zero_shot" / study.NB_ZERO_SHOT
    assert executed.is_file() and any(c.get("outputs") for c in nbformat.read(executed, 4).cells)
    assert all(p.is_file() for p in zs.table_paths())
    record = zs.record_path
    mtime = record.stat().st_mtime_ns

    result = study.run_study(profile, "eurosat", data_root=data_root, methods=["zero_shot"], progress=False, **roots)
    assert result.ok, result.summary()
    assert "eurosat/tiny-vit-random/zero_shot" in result.skipped and result.ran == []
    assert record.stat().st_mtime_ns == mtime


def test_report_tables_separation_per_method(roots):
    """Runs that recorded their separation numbers get a separation table (mean ± std over seeds) and
    one bar chart per number; records without them are left out of it, not counted as zeros."""
    gaps = {("lora", 1): 0.30, ("lora", 2): 0.34, ("bitfit", 1): 0.20}
    for (method, seed), gap in gaps.items():
        spec = smoke_spec(roots, method=method, seed=seed, shots=2)
        metrics = {"top1": 0.5, "balanced": 0.4, "gap_matched_mean": gap, "gap_centroid": 1 - gap,
                   "silhouette_in_full_set_all": gap / 3, "v_measure": 0.5, "collapse_top_share": 0.2}
        RunRecord.for_run(spec, metrics, timings={"total": 1.0}).save(spec.record_path)
    fake_record(smoke_spec(roots, method="zero_shot", seed=1, shots=2), 0.25)  # an older record: no separation
    spec = smoke_spec(roots)
    pipeline.report_tables(spec)
    sep = pd.read_csv(spec.tables_dir / "separation.csv")
    assert set(sep["method"]) == {"lora", "bitfit"}
    lora = sep[sep["method"] == "lora"].iloc[0]
    assert lora["gap_matched_mean_mean"] == pytest.approx(0.32) and lora["n_seeds"] == 2
    assert lora["gap_matched_mean_std"] == pytest.approx(np.std([0.30, 0.34], ddof=1))
    for name in ("gap_matched_mean", "silhouette_in_full_set_all", "collapse_top_share"):
        assert (spec.tables_dir / f"{name}_by_method.png").is_file(), name
