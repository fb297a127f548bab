"""The study's grid on a real (single-node) Slurm and on local workers: the same records and test
predictions (``predictions.npz``: logits and argmax) as sequentially, failures reported with their
Slurm job id and log, dependants not run, resume after ``scancel``.

Slurm tests need ``sbatch`` and a controller that answers (``.ci/slurm.sh start`` sets one up); they
skip otherwise, or fail when ``LOWRES_CLIP_REQUIRE_SLURM=1`` (``.ci/run`` sets it). Grids are tiny
(zero-shot + LoRA, one K, one seed; the tiny random ViT on generated images): the point is the
executors, not the numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from lowres_clip import study
from lowres_clip.study import executors
from lowres_clip.config import load_profile
from lowres_clip.runs import Predictions, RunRecord
from lowres_clip.smoke import make_smoke_dataset
from lowres_clip.spec import PREDICTIONS_FILE, resolve_run

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
DATA, REPORT = "eurosat/data/k1-s1", "eurosat/report"
# one CPU, no GPU per notebook: two notebooks at once on a 2-core node; a short time limit
SLURM = {"slurm": {"gpus": 0, "cpus": 1, "mem": "1G", "time": "00:20:00", "poll_seconds": 1}}
LOGIT_ATOL = 1e-3  # logits are 100 x cosine
SLURM_FLAGS = ["--slurm-gpus", "0", "--slurm-cpus", "1", "--slurm-mem", "1G", "--slurm-time", "20"]


def slurm_problem() -> str | None:
    """Why the Slurm tests cannot run here (``None``: they can)."""
    if shutil.which("sbatch") is None:
        return "sbatch is absent (a single-node Slurm: sudo .ci/slurm.sh start)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%a %t"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 60 s; start a Slurm with .ci/slurm.sh start"
    if done.returncode != 0 or not done.stdout.strip():
        return f"no Slurm controller answers (sinfo: {done.stderr.strip()[:200]}); start one with .ci/slurm.sh start"
    if shutil.which("sacct") is None or subprocess.run(["sacct", "-n", "-X"], capture_output=True, timeout=60).returncode != 0:
        return "Slurm job accounting (sacct) does not answer; submitit reads job states with it"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = slurm_problem()
    if problem and os.environ.get("LOWRES_CLIP_REQUIRE_SLURM") == "1":
        pytest.fail(f"LOWRES_CLIP_REQUIRE_SLURM=1 but {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(make_smoke_dataset(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    """The smoke profile on a grid of two runs (no failure analysis: fewer notebooks)."""
    raw = yaml.safe_load(load_profile("smoke").path.read_text())
    raw["grid"] = {"datasets": ["eurosat"], "shots": [1], "seeds": [1], "methods": ["zero_shot", "lora"],
                   "failure_pairs": []}
    path = tmp_path_factory.mktemp("profile") / "two_runs.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def make_roots(base: Path) -> dict[str, str]:
    return {name: str(base / name.split("_")[0]) for name in ("runs_root", "figures_root", "cache_root")}


def keys(profile: Path, data_root: str, roots: dict[str, str]) -> dict[str, str]:
    return {m: resolve_run(profile, None, method=m, shots=1, seed=1, data_root=data_root, **roots).id
            for m in ("zero_shot", "lora")}


def outcomes(profile: Path, data_root: str, roots: dict[str, str]) -> dict[str, tuple[dict, Predictions]]:
    """Metrics and test predictions (``predictions.npz``) of the grid's two runs, by method."""
    out = {}
    for m, k in keys(profile, data_root, roots).items():
        run_dir = Path(roots["runs_root"]) / k
        out[m] = (RunRecord.load(run_dir / "record.json").metrics, Predictions.load(run_dir / PREDICTIONS_FILE))
    return out


def assert_same_runs(got: dict[str, tuple[dict, Predictions]], baseline: dict[str, tuple[dict, Predictions]]) -> None:
    """Each run gave the same metrics and the same test predictions: the same images in the same
    order, the same argmax, and logits equal up to the float noise of another CPU thread count
    (local workers and Slurm jobs run one thread per notebook, the sequential baseline both cores:
    measured differences ~2e-5 on logits of ~25, i.e. 100 x cosine; 1e-3 is 1e-5 in cosine). Metrics
    of the argmax are equal; those of the features themselves (silhouettes, modality gap) within 1e-5
    (measured: ~1e-7), NaN where the baseline has NaN."""
    assert set(got) == set(baseline)
    for method, (metrics, preds) in got.items():
        ref_metrics, ref = baseline[method]
        assert metrics.keys() == ref_metrics.keys(), method
        of_features = [k for k in metrics if k.startswith(("silhouette_", "gap_")) and k != "silhouette_images"]
        exact = [k for k in metrics if k not in of_features]
        assert [metrics[k] for k in exact] == [ref_metrics[k] for k in exact], method
        np.testing.assert_allclose([metrics[k] for k in of_features], [ref_metrics[k] for k in of_features],
                                   rtol=0, atol=1e-5, equal_nan=True, err_msg=method)
        assert preds.paths == ref.paths and np.array_equal(preds.labels, ref.labels), method
        np.testing.assert_array_equal(preds.preds, ref.preds, err_msg=f"{method}: other argmax predictions")
        np.testing.assert_allclose(preds.logits, ref.logits, rtol=0, atol=LOGIT_ATOL, err_msg=f"{method}: other logits")


def is_finished(run_id: str, roots: dict[str, str]) -> bool:
    return (Path(roots["runs_root"]) / run_id / "record.json").is_file()


def run(profile: Path, data_root: str, roots: dict[str, str], **kw) -> study.StudyResult:
    return study.run_study(profile, "eurosat", data_root=data_root, progress=False, **roots, **kw)


@pytest.fixture(scope="module")
def baseline(profile, data_root, tmp_path_factory) -> dict[str, tuple[dict, Predictions]]:
    """The grid run sequentially (the reference every executor must reproduce)."""
    roots = make_roots(tmp_path_factory.mktemp("sequential"))
    result = run(profile, data_root, roots, executor="sequential")
    assert result.ok, result.summary()
    got = outcomes(profile, data_root, roots)
    assert (got["lora"][1].preds != got["zero_shot"][1].preds).any(), "the smoke LoRA run did not train"
    return got


def sacct(job_ids) -> dict[str, dict[str, str]]:
    """Job id -> {State, Start, End} from Slurm accounting."""
    done = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Start,End", "-j", ",".join(job_ids)],
                          capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
    return {r[0]: {"State": r[1], "Start": r[2], "End": r[3]} for r in rows}


def slurm_job_named(name: str, timeout: float = 180) -> str:
    """The id of the queued Slurm job called ``name`` (waits until it is queued)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            jid, _, jname = line.partition("|")
            if jname == name:
                return jid
        time.sleep(0.5)
    raise AssertionError(f"no Slurm job named {name} within {timeout} s")


# ----------------------------------------------------------------------------- local workers
def test_local_workers_give_the_sequential_records(baseline, profile, data_root, tmp_path):
    roots = make_roots(tmp_path)
    result = run(profile, data_root, roots, executor="local", cluster={"workers": 2})
    assert result.ok, result.summary()
    method = "eurosat/tiny-vit-random/{}/s1"  # local workers: one notebook per method and seed, longest first
    assert result.ran == ["eurosat/data/s1", method.format("lora"), method.format("zero_shot"), REPORT]
    assert_same_runs(outcomes(profile, data_root, roots), baseline)
    log = Path(roots["runs_root"]) / "local" / f"{method.format('lora').replace('/', '__')}.log"
    assert f"lowres_clip {executors.LIB_DIR / 'lowres_clip'}" in log.read_text().splitlines()[0]
    assert all(p.is_file() for p in resolve_run(profile, None, **roots).table_paths())


# ----------------------------------------------------------------------------- slurm
@pytest.mark.slurm
def test_slurm_grid_gives_the_sequential_records(slurm, baseline, profile, data_root, tmp_path):
    roots = make_roots(tmp_path)
    result = run(profile, data_root, roots, executor="slurm", cluster=SLURM)
    k = keys(profile, data_root, roots)
    assert result.ok, result.summary()
    assert result.ran == [DATA, k["lora"], k["zero_shot"], REPORT]  # one job per run, longest first
    assert_same_runs(outcomes(profile, data_root, roots), baseline)
    ids = result.job_ids
    info = sacct(ids.values())
    assert {info[i]["State"] for i in ids.values()} == {"COMPLETED"}  # one Slurm job per notebook
    for run_name in (k["zero_shot"], k["lora"]):  # dependencies: the runs started after the data job
        assert info[ids[run_name]]["Start"] >= info[ids[DATA]]["End"]
    assert info[ids[REPORT]]["Start"] >= max(info[ids[n]]["End"] for n in (k["zero_shot"], k["lora"]))
    log = result.logs[k["lora"]]
    assert log == Path(roots["runs_root"]) / "slurm" / f"{ids[k['lora']]}_0_log.err"
    seen = log.with_suffix(".out").read_text()  # the job ran this interpreter on these sources
    assert f"python {sys.executable};" in seen and f"lowres_clip {executors.LIB_DIR / 'lowres_clip'}" in seen
    assert f"SLURM_JOB_ID={ids[k['lora']]}" in seen
    assert all(p.is_file() for p in resolve_run(profile, None, **roots).table_paths())


@pytest.mark.slurm
def test_failed_job_is_reported_with_id_and_log_and_its_dependants_do_not_run(slurm, profile, data_root, tmp_path):
    nb_dir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, nb_dir)
    nb = nbformat.read(nb_dir / study.NB_DATA, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell('raise RuntimeError("planned failure of the data notebook")'))
    nbformat.write(nb, nb_dir / study.NB_DATA)
    roots = make_roots(tmp_path)
    result = run(profile, data_root, roots, executor="slurm", cluster=SLURM, notebooks_dir=nb_dir)
    k = keys(profile, data_root, roots)
    jid, log = result.job_ids[DATA], result.logs[DATA]
    message = result.failed[DATA]
    assert "RuntimeError: planned failure of the data notebook" in message
    assert f"slurm job {jid}" in message and str(log) in message
    assert "planned failure of the data notebook" in log.read_text()
    info = sacct(result.job_ids.values())
    assert info[jid]["State"] == "FAILED"
    for run_key in k.values():  # dependants: cancelled by Slurm before they started
        assert result.failed[run_key].startswith(f"not run: {DATA} failed")
        assert info[result.job_ids[run_key]]["State"].startswith("CANCELLED")
        assert not is_finished(run_key, roots)
        assert not (Path(roots["runs_root"]) / "notebooks" / run_key).exists()
    # the report still ran (it waits for every job, however it ended) and found nothing to report
    assert "no finished runs" in result.failed[REPORT] and info[result.job_ids[REPORT]]["State"] == "FAILED"
    assert result.ran == [] and "FAILED" in result.summary()


@pytest.mark.slurm
def test_rerun_after_scancel_submits_only_what_is_missing(slurm, baseline, profile, data_root, tmp_path):
    roots = make_roots(tmp_path)
    k = keys(profile, data_root, roots)
    cmd = [sys.executable, "-m", "lowres_clip.study", "--profile", str(profile), "--dataset", "eurosat",
           "--data-root", data_root, "--executor", "slurm", *SLURM_FLAGS]
    for name, value in roots.items():
        cmd += [f"--{name.replace('_', '-')}", value]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=executors.source_env())
    try:
        lora_id = slurm_job_named(k["lora"])  # pending: it waits for the data job
        subprocess.run(["scancel", lora_id], check=True)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    line = next(l for l in out.splitlines() if l.startswith(f"  FAILED {k['lora']}:"))
    assert "CANCELLED" in line and f"slurm job {lora_id}" in line and f"{lora_id}_0_log.err" in line
    assert is_finished(k["zero_shot"], roots) and not is_finished(k["lora"], roots)

    result = run(profile, data_root, roots, executor="slurm", cluster=SLURM)
    assert result.ok, result.summary()
    assert result.ran == [DATA, k["lora"], REPORT] and result.skipped == [k["zero_shot"]]
    assert_same_runs(outcomes(profile, data_root, roots), baseline)


@pytest.mark.slurm
def test_refused_submission_stops_before_anything_is_submitted(slurm, profile, data_root, tmp_path, capsys):
    roots = make_roots(tmp_path)
    args = ["--profile", str(profile), "--dataset", "eurosat", "--data-root", data_root, "--executor", "slurm",
            "--slurm-partition", "no-such-partition", *SLURM_FLAGS]
    for name, value in roots.items():
        args += [f"--{name.replace('_', '-')}", value]
    assert study.main(args) == 2
    err = capsys.readouterr().err
    assert "sbatch refused the first job (eurosat/data/k1-s1); nothing was submitted" in err
    assert "partition" in err.lower()
    assert not any((Path(roots["runs_root"]) / "slurm").glob("*_submitted.pkl"))
