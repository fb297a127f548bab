"""Study executors without a cluster: planning, the local worker pool (in-process runner), sbatch
parameters, the ``cluster:`` profile section and the command line (real Slurm: test_slurm.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from lowres_clip import study
from lowres_clip.study import executors
from lowres_clip.study.executors import slurm
from lowres_clip.cluster import ClusterConfig, SlurmSettings, merge_cluster, parse_cluster, time_minutes
from lowres_clip.config import ConfigError, load_profile
from lowres_clip.runs import RunRecord
from lowres_clip.spec import resolve_run


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, str]:
    return {name: str(tmp_path / name.split("_")[0]) for name in ("runs_root", "figures_root", "cache_root")}


def key(roots, method: str) -> str:
    return resolve_run("smoke", None, **roots, method=method, shots=1, seed=1).id


def is_finished(run_id: str, runs_root: str) -> bool:
    return (Path(runs_root) / run_id / "record.json").is_file()


DATA, FAILURE, REPORT = "eurosat/data/k1-s1", "eurosat/failure/k1-s1/zero_shot-vs-lora", "eurosat/report"


class SlotRecorder:
    """Stands in for a worker process: notes when each job starts and ends and the GPU it was given,
    and writes what the notebook would write."""

    def __init__(self, runs_root: str, fail: str | None = None, seconds: float = 0.05):
        self.runs_root, self.fail, self.seconds = runs_root, fail, seconds
        self.spans: dict[str, tuple[float, float, str | None]] = {}
        self.lock = threading.Lock()

    def __call__(self, job: study.Job, env) -> None:
        start = time.monotonic()
        time.sleep(self.seconds)
        try:
            if self.fail and self.fail in job.name:
                raise RuntimeError("boom")
            for spec in job.specs:
                RunRecord.for_run(spec, {"top1": 0.5}).save(spec.record_path)
            for p in job.outputs:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("done")
        finally:
            with self.lock:
                self.spans[job.name] = (start, time.monotonic(), env.get("CUDA_VISIBLE_DEVICES"))


def run_grid(roots, executor, **kw):
    return study.run_study("smoke", "eurosat", methods=["zero_shot", "lora"], shots=[1], seeds=[1],
                           executor=executor, progress=False, jobs_per="run", **roots, **kw)


# ----------------------------------------------------------------------------- planning
def test_plan_keeps_dependencies_on_started_jobs_and_puts_the_report_last(roots):
    jobs = study.plan_study("smoke", "eurosat", methods=["zero_shot", "lora"], shots=[1], seeds=[1], jobs_per="run",
                            **roots)
    zs, lora = key(roots, "zero_shot"), key(roots, "lora")
    planned, skipped = executors.plan_submissions(jobs, lambda job, ran: job.name == zs)
    by_name = {s.job.name: s for s in planned}
    assert skipped == [zs] and list(by_name) == [DATA, lora, FAILURE, REPORT]
    assert by_name[lora].after_ok == [DATA]
    assert by_name[FAILURE].after_ok == [lora]  # the finished zero-shot run is no dependency
    assert by_name[REPORT].after_all == [DATA, lora, FAILURE] and by_name[REPORT].after_ok == []
    seen: list[set[str]] = []
    executors.plan_submissions(jobs, lambda job, ran: seen.append(set(ran)) or False)
    assert seen[-1] == {DATA, zs, lora, FAILURE}  # later jobs see the planned ones as run


# ----------------------------------------------------------------------------- local workers
def test_local_workers_respect_the_graph_and_pin_one_gpu_per_worker(roots):
    rec = SlotRecorder(roots["runs_root"], seconds=0.3)
    ex = executors.LocalExecutor(2, gpus=["3", "5"], runner=rec)
    result = run_grid(roots, ex)
    zs, lora = key(roots, "zero_shot"), key(roots, "lora")
    assert result.ok and result.ran == [DATA, lora, zs, FAILURE, REPORT]  # reported in plan order (longest first)
    span = rec.spans
    for job, deps in {zs: [DATA], lora: [DATA], FAILURE: [zs, lora], REPORT: [DATA, zs, lora, FAILURE]}.items():
        assert all(span[job][0] >= span[d][1] for d in deps), job
    # zero-shot and LoRA ran at the same time, on different GPUs
    assert span[zs][0] < span[lora][1] and span[lora][0] < span[zs][1]
    assert {span[zs][2], span[lora][2]} == {"3", "5"}
    assert all(s[2] in ("3", "5") for s in span.values())
    again = SlotRecorder(roots["runs_root"])
    result = run_grid(roots, executors.LocalExecutor(2, gpus=[], runner=again))
    assert list(again.spans) == [] and set(result.skipped) == {DATA, zs, lora, FAILURE, REPORT}
    (Path(roots["runs_root"]) / zs / "record.json").unlink()
    again = SlotRecorder(roots["runs_root"])
    run_grid(roots, executors.LocalExecutor(2, gpus=[], runner=again))
    assert again.spans[REPORT][2] is None  # no GPUs: nothing pinned


def test_local_failure_stops_dependants_only(roots):
    rec = SlotRecorder(roots["runs_root"], fail="/lora/")
    result = run_grid(roots, executors.LocalExecutor(2, gpus=[], runner=rec))
    zs, lora = key(roots, "zero_shot"), key(roots, "lora")
    assert "RuntimeError: boom" in result.failed[lora]
    assert result.failed[FAILURE] == f"not run: {lora} failed" and FAILURE not in rec.spans
    assert is_finished(zs, roots["runs_root"]) and REPORT in result.ran
    rerun = SlotRecorder(roots["runs_root"])
    result = run_grid(roots, executors.LocalExecutor(2, gpus=[], runner=rerun))
    assert result.ok and set(rerun.spans) == {DATA, lora, FAILURE, REPORT}  # only what is missing
    forced = SlotRecorder(roots["runs_root"])
    run_grid(roots, executors.LocalExecutor(2, gpus=[], runner=forced), force=True)
    assert set(forced.spans) == {DATA, zs, lora, FAILURE, REPORT}


def test_ctrl_c_under_local_workers_says_what_finished(roots):
    """Ctrl-C while local workers run (the cpu profile's executor) ends the study with the one-line
    Interrupted summary, not with "nothing ran"."""
    from lowres_clip import interrupt

    lora = key(roots, "lora")

    def runner(job, env):
        if job.name == lora:
            raise KeyboardInterrupt
    with pytest.raises(interrupt.Interrupted) as err:
        run_grid(roots, executors.LocalExecutor(1, gpus=[], runner=runner))
    assert list(err.value.ran) == [DATA] and lora in err.value.remaining


def test_gpu_slots_round_robin_and_visible_gpus(monkeypatch):
    assert [executors.slot_env(i, ["0", "1"]) for i in range(3)] == [
        {"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}, {"CUDA_VISIBLE_DEVICES": "0"}]
    assert executors.slot_env(1, []) == {}
    for v in executors.THREAD_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    assert executors.slot_env(0, [], threads=1) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert [executors.worker_threads(w, cpus=2) for w in (1, 2, 4)] == [2, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the caller's choice wins
    assert executors.slot_env(0, [], threads=1) == {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    assert executors.visible_gpus() == ["2", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert executors.visible_gpus() == []


def test_child_process_environment_puts_these_sources_first(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = executors.source_env()
    assert env["PYTHONPATH"].split(":")[:2] == [str(executors.LIB_DIR), "/elsewhere"]
    assert (executors.LIB_DIR / "lowres_clip" / "study" / "executors" / "base.py").is_file()


# ----------------------------------------------------------------------------- slurm parameters
def test_sbatch_parameters_from_settings():
    s = SlurmSettings(partition="gpu", account="proj", time="1-02:00:00", gpus=2, cpus=4, mem="64G",
                      extra={"qos": "high", "exclusive": True}, setup=["module load cuda"])
    p = executors.sbatch_parameters(s, "eurosat/report", after_ok=["11", "12"], after_all=["13"])
    assert (p["partition"], p["account"], p["time"], p["gpus_per_node"], p["cpus_per_task"]) == ("gpu", "proj", 1560, 2, 4)
    assert p["dependency"] == "afterok:11:12,afterany:13"
    assert p["additional_parameters"] == {"qos": "high", "exclusive": True, "kill-on-invalid-dep": "yes", "mem": "64G"}
    assert p["setup"][0].startswith(f"export PYTHONPATH={executors.LIB_DIR}") and p["setup"][1] == "module load cuda"
    bare = executors.sbatch_parameters(SlurmSettings(gpus=0, mem=None), "x")
    assert "gpus_per_node" not in bare and "dependency" not in bare and "partition" not in bare
    assert bare["additional_parameters"] == {"kill-on-invalid-dep": "yes"}


def test_sbatch_script_rendered_by_submitit(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string  # what update_parameters validates against

    p = executors.sbatch_parameters(SlurmSettings(partition="gpu", gpus=1, mem="8G"), "eurosat/data/k1-s1", ["7"])
    text = _make_sbatch_string(command="python -m x", folder=tmp_path, **p)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --mem=8G",
                 "#SBATCH --dependency=afterok:7", "#SBATCH --kill-on-invalid-dep=yes", "#SBATCH --time=240",
                 "#SBATCH --cpus-per-task=8", f"#SBATCH --output={tmp_path}/%j_0_log.out"):
        assert line in text, line


# ----------------------------------------------------------------------------- cluster settings
def test_cluster_section_is_strict_and_defaults_fit_one_gpu():
    c = parse_cluster(None)
    assert (c.executor, c.workers, c.slurm.gpus, c.slurm.cpus, c.slurm.mem, c.slurm.time) == ("sequential", 1, 1, 8, "32G", "04:00:00")
    with pytest.raises(ConfigError, match=r"cluster\.slurm\.gpuz"):
        parse_cluster({"slurm": {"gpuz": 1}})
    with pytest.raises(ConfigError, match="--slurm-time"):
        parse_cluster({"slurm": {"time": "soon"}})
    with pytest.raises(ConfigError, match="--slurm-partition"):
        parse_cluster({"slurm": {"extra": {"partition": "gpu"}}})
    with pytest.raises(ConfigError, match="'k8s'"):
        parse_cluster({"executor": "k8s"})
    assert [time_minutes(t) for t in (90, "30:00", "04:00:00", "1-12", "00:00:30")] == [90, 30, 240, 2160, 1]
    merged = merge_cluster({"workers": 3, "slurm": {"extra": {"qos": "a"}, "gpus": 2}},
                           {"executor": "slurm", "workers": None, "slurm": {"gpus": 0, "extra": {"constraint": "b"}}})
    assert merged == ClusterConfig("slurm", 3, SlurmSettings(gpus=0, extra={"qos": "a", "constraint": "b"}))


def profile_with_cluster(tmp_path: Path, cluster) -> Path:
    raw = yaml.safe_load(load_profile("smoke").path.read_text())
    raw["cluster"] = cluster
    path = tmp_path / "clustered.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_profile_cluster_defaults_and_command_line_overrides(roots, tmp_path, capsys):
    bad = profile_with_cluster(tmp_path, {"slurm": {"partitio": "gpu"}})
    with pytest.raises(ConfigError, match=r"cluster\.slurm\.partitio"):
        load_profile(bad)
    prof = profile_with_cluster(tmp_path, {"executor": "slurm", "slurm": {"partition": "gpu", "extra": {"qos": "low"}}})
    base = ["--profile", str(prof), "--dataset", "eurosat", "--methods", "zero_shot", "lora", "--shots", "1",
            "--seeds", "1", "--runs-root", roots["runs_root"], "--dry-run"]
    assert study.main(base) == 0
    out = capsys.readouterr().out
    assert "executor: slurm" in out and "partition=gpu" in out and "qos=low" in out and "gpus=1" in out
    assert study.main(base + ["--slurm-partition", "a100", "--slurm-gpus", "0", "--slurm-extra", "qos=high"]) == 0
    out = capsys.readouterr().out
    assert "partition=a100" in out and "gpus=0" in out and "qos=high" in out
    assert study.main(base + ["--workers", "2"]) == 0  # --workers alone means local
    assert "executor: local (2 workers" in capsys.readouterr().out
    assert study.main(base + ["--slurm-time", "soon"]) == 2
    assert "--slurm-time" in capsys.readouterr().err


def test_dry_run_lists_what_would_be_submitted_and_skips_finished_runs(roots, capsys):
    zs, lora = key(roots, "zero_shot"), key(roots, "lora")
    spec = resolve_run("smoke", None, **roots, method="zero_shot", shots=1, seed=1)
    RunRecord.for_run(spec, {"top1": 0.5}).save(spec.record_path)
    args = ["--profile", "smoke", "--dataset", "eurosat", "--methods", "zero_shot", "lora", "--shots", "1",
            "--seeds", "1", "--executor", "slurm", "--slurm-partition", "gpu", "--dry-run", "--per-run"]
    for name, value in roots.items():
        args += [f"--{name.replace('_', '-')}", value]
    assert study.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("executor: slurm (one job per notebook; partition=gpu")
    assert f"{roots['runs_root']}/slurm/<job id>_0_log.out" in lines[0]
    assert any(l.split()[:3] == ["skip", study.NB_ZERO_SHOT, zs] for l in lines)
    assert any(l.split()[:3] == ["submit", study.NB_LORA, lora] and l.endswith(f"after {DATA}") for l in lines)
    assert any(l.split()[:3] == ["submit", study.NB_FAILURE, FAILURE] and l.endswith(f"after {lora}") for l in lines)
    assert lines[-1] == "4 to submit, 1 skipped"
    assert not (Path(roots["runs_root"]) / "slurm").exists()  # nothing submitted


def test_slurm_executor_without_slurm_says_what_to_do(roots, monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    with pytest.raises(study.StudyError, match="needs Slurm's sbatch and srun on PATH"):
        run_grid(roots, executors.SlurmStudyExecutor(SlurmSettings(), log_dir=Path(roots["runs_root"]) / "slurm"))
    assert not (Path(roots["runs_root"]) / "slurm").exists()
