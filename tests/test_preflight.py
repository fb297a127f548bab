"""Bad input fails fast, in one line, before any notebook: data, images, model, weights, generator
weights, grid, Ctrl-C.

Every case uses small generated data and prints the line(s) a user would see (``pytest -s``).
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import class_image, make_circuits, write_image
from lowres_clip import datasets, imagecheck, interrupt, preflight
from lowres_clip.config import ConfigError, resolve_config
from lowres_clip.datasets import DatasetError, load_dataset


@pytest.fixture(autouse=True)
def _restore_loggers():
    """An interrupt mutes the kernel-shutdown loggers for the rest of the process; not across tests."""
    import logging

    levels = {n: logging.getLogger(n).level for n in interrupt.SHUTDOWN_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _run_study(args: list[str], roots: dict[str, str], capsys) -> tuple[int, list[str], float]:
    """``study.main`` with the test's roots; its exit code, stderr lines (shown) and start time."""
    from lowres_clip import study

    for name, value in roots.items():
        args = [*args, f"--{name.replace('_', '-')}", value]
    t0 = time.perf_counter()
    rc = study.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    _show(err, t0)
    return rc, err, t0


def _show(lines, t0: float) -> None:
    print(f"\n[{time.perf_counter() - t0:.2f} s] " + "\n".join(lines))


# ----------------------------------------------------------------------------- images
def test_truncated_jpeg_is_named_with_both_ways_out_and_exclude_works(eurosat_root, tmp_path):
    ds = load_dataset("eurosat", eurosat_root)
    victim = ds.split("test")[0].path
    data = (ds.image_root / victim).read_bytes()
    (ds.image_root / victim).write_bytes(data[: len(data) // 2])  # a truncated JPEG still opens
    t0 = time.perf_counter()
    check = preflight.check_dataset("eurosat", eurosat_root, cache_root=tmp_path / "cache", progress=False)
    _show(check.problems, t0)
    assert len(check.problems) == 1
    line = check.problems[0]
    assert victim in line and "truncated" in line and "Replace it" in line and f"exclude=[\"{victim}\"]" in line
    ok = preflight.check_dataset("eurosat", eurosat_root, exclude=[victim], cache_root=tmp_path / "cache", progress=False)
    assert ok.problems == [] and victim not in {s.path for s in ok.dataset.split("test")}
    assert ok.dataset.excluded == (victim,)
    # an absolute path (as the message prints it) is accepted too; a typo is an error, not a no-op
    assert load_dataset("eurosat", eurosat_root, exclude=[str(ds.image_root / victim)]).excluded == (victim,)
    with pytest.raises(DatasetError, match="in no split"):
        load_dataset("eurosat", eurosat_root, exclude=["Forest/nope.jpg"])
    # the study's way: --set 'exclude=[...]' reaches RunConfig.exclude, which the preflight honours
    base = dict(dataset="eurosat", data_root=str(eurosat_root), cache_root=str(tmp_path / "cache"))
    assert preflight.preflight([resolve_config("smoke", None, **base)], progress=False)[0].startswith("data: eurosat: image")
    assert preflight.preflight([resolve_config("smoke", {"exclude": [victim]}, **base)], progress=False) == []


def test_verified_images_are_remembered_by_size_and_mtime(eurosat_root, tmp_path, monkeypatch):
    ds = load_dataset("eurosat", eurosat_root)
    paths = [s.path for ss in ds.splits.values() for s in ss]
    assert imagecheck.verify_images(ds.image_root, paths, tmp_path, progress=False) == []
    calls = []
    real = imagecheck.decode_error
    monkeypatch.setattr(imagecheck, "decode_error", lambda p: calls.append(p) or real(p))
    assert imagecheck.verify_images(ds.image_root, paths, tmp_path, progress=False) == []
    assert calls == []  # nothing decoded on the rerun
    changed = ds.image_root / paths[3]
    changed.write_bytes(b"<html>not found</html>")  # other size: decoded again, and bad
    bad = imagecheck.verify_images(ds.image_root, paths, tmp_path, progress=False)
    assert [b.path for b in bad] == [paths[3]] and len(calls) == 1


def test_notebook_loader_names_a_corrupt_file(eurosat_root):
    from lowres_clip.datasets import ImageDataset

    ds = load_dataset("eurosat", eurosat_root)
    bad = ds.image_root / ds.split("val")[0].path
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DatasetError, match="Cannot read image.*" + bad.name):
        ImageDataset(ds.image_root, ds.split("val"))[0]


# ----------------------------------------------------------------------------- class folders
def test_missing_class_folder_is_reported_as_such(eurosat_root):
    shutil.rmtree(eurosat_root / "eurosat" / "2750" / "Forest")
    t0 = time.perf_counter()
    check = preflight.check_dataset("eurosat", eurosat_root, verify=False)
    _show(check.problems, t0)
    assert check.problems == [next(p for p in check.problems if "class 'Forest' has no folder" in p)]
    assert "16 split entries point there" in check.problems[0]
    with pytest.raises(DatasetError, match="class 'Forest' has no folder"):
        load_dataset("eurosat", eurosat_root)


def _imagefolder(root: Path, classes=("cat", "dog"), n: int = 6) -> Path:
    for c in classes:
        for i in range(n):
            write_image(root / c / f"{i}.png", class_image(ord(c[0]) % 7, i, size=8))
    return root


def test_added_class_folder_refuses_the_saved_split_until_resplit(tmp_path):
    root = _imagefolder(tmp_path / "folder")
    first = load_dataset(f"imagefolder:{root}")
    saved = json.loads((root / "split_lowres_clip_s1.json").read_text())
    assert saved["lowres_clip"]["classnames"] == ["cat", "dog"] and saved["lowres_clip"]["listing_sha1"]
    _imagefolder(root, classes=("bee",))  # 'bee' sorts first: every old label would now point elsewhere
    t0 = time.perf_counter()
    check = preflight.check_dataset(f"imagefolder:{root}", verify=False)
    _show(check.problems, t0)
    assert len(check.problems) == 1
    assert "class folders added: ['bee']" in check.problems[0] and "--resplit" in check.problems[0]
    again = load_dataset(f"imagefolder:{root}", resplit=True)
    assert again.classnames == ["bee", "cat", "dog"] and first.classnames == ["cat", "dog"]
    label_of = {s.path: again.classnames[s.label] for ss in again.splits.values() for s in ss}
    assert all(label_of[p].startswith(p.split("/")[0]) for p in label_of)
    assert load_dataset(f"imagefolder:{root}").splits == again.splits  # the new split is reused


def test_removed_file_and_legacy_split_without_fingerprint(tmp_path):
    root = _imagefolder(tmp_path / "folder")
    ds = load_dataset(f"imagefolder:{root}")
    split_file = root / "split_lowres_clip_s1.json"
    raw = json.loads(split_file.read_text())
    raw.pop("lowres_clip")  # a split saved by the previous version: still reused while the folder matches
    split_file.write_text(json.dumps(raw))
    assert load_dataset(f"imagefolder:{root}").splits == ds.splits
    (root / "dog" / "3.png").unlink()
    with pytest.raises(DatasetError, match=r"1 files removed \(e.g. dog/3.png\)"):
        load_dataset(f"imagefolder:{root}")


# ----------------------------------------------------------------------------- Circuits
def _official_circuits(root: Path, header: bool = True, names: str = "{split}.csv") -> Path:
    """The paper's release: ``circuits/data/<file>``, ``label_map.csv``, per-split CSVs."""
    base = make_circuits(root, form="csv", num_classes=4, size=8)
    (base / "images").rename(base / "data")
    for split in ("train", "val", "test"):
        rows = list(csv.reader((base / f"{split}.csv").open()))
        (base / f"{split}.csv").unlink()
        with (base / names.format(split=split)).open("w", newline="") as f:
            csv.writer(f).writerows(rows if header else rows[1:])
    if not header:
        rows = list(csv.reader((base / "label_map.csv").open()))[1:]
        with (base / "label_map.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return base


@pytest.mark.parametrize("header,names", [(True, "{split}.csv"), (False, "{split}_5_shots.csv")])
def test_circuits_official_layout_loads(tmp_path, header, names):
    base = _official_circuits(tmp_path, header, names)
    t0 = time.perf_counter()
    check = preflight.check_dataset("circuits", tmp_path, cache_root=tmp_path / "cache", progress=False)
    _show(check.problems + check.notes, t0)
    assert check.problems == []
    ds = check.dataset
    assert ds.image_root == base / "data" and ds.classnames == ["others", "audio amplifier/amplifier", "LED", "timer"]
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [12, 8, 8]
    assert load_dataset("circuits", base).splits == ds.splits  # the circuits folder itself works too


def test_circuits_groups_follow_its_frequencies_and_partial_val_is_noted(tmp_path):
    from lowres_clip.sampling import few_shot

    base = tmp_path / "circuits"
    base.mkdir()
    (base / "label_map.json").write_text(json.dumps({"0": "LED", "1": "timer", "2": "relay", "3": "fan"}))
    totals = [150, 40, 12, 5]  # head, medium, tail, tail
    split = {"train": [], "val": [], "test": []}
    n = 0
    for label, total in enumerate(totals):
        for i in range(total):
            n += 1
            part = "train" if i < 5 else "val" if (i < 7 and label < 2) else "test"
            split[part].append([f"{n}.png", label, str(label)])
    (base / "split_config.json").write_text(json.dumps(split))
    ds = datasets.load_circuits(tmp_path, check_files=False)
    assert ds.total_counts() == totals
    assert ds.natural_groups() == ["head", "medium", "tail", "tail"]
    assert datasets.frequency_groups([101, 100, 20, 19]) == ["head", "medium", "medium", "tail"]
    note = datasets.val_coverage_note(ds)
    assert note.startswith("circuits: the validation split has images of only 2 of 4 classes")
    with pytest.warns(UserWarning, match="only 2 of 4 classes"):
        fs = few_shot(ds, 2, seed=1)
    assert fs.groups == ["head", "medium", "tail", "tail"] and note in fs.report
    with pytest.warns(UserWarning):
        lt = few_shot(ds, 4, seed=3, long_tail_ratio=4)
    assert lt.shots_per_class == [4, 3, 2, 1]  # most frequent class gets the head shots, whatever the seed
    assert load_dataset("eurosat", _eurosat_fixture(tmp_path)).natural_groups() is None


def _eurosat_fixture(tmp_path: Path) -> Path:
    from conftest import make_eurosat

    make_eurosat(tmp_path / "e", per_split=(1, 1, 1), size=8)
    return tmp_path / "e"


# ----------------------------------------------------------------------------- messages
def test_no_eurosat_says_data_eurosat_2750_and_download_does_not_nest(tmp_path, monkeypatch):
    with pytest.raises(DatasetError) as err:
        load_dataset("eurosat", tmp_path / "data")
    msg = str(err.value)
    assert f"'{tmp_path / 'data' / 'eurosat' / '2750'}/<Class>" in msg
    assert f"download eurosat --root {tmp_path / 'data'}`" in msg
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as err:
        datasets.download_eurosat(tmp_path / "data")
    assert f"--root {tmp_path / 'data'}`" in str(err.value) and "eurosat/eurosat" not in str(err.value)
    assert not (tmp_path / "data" / "eurosat").exists()  # no empty folder left behind


def test_check_data_cli_one_line_per_problem(eurosat_root, capsys):
    from lowres_clip import cli

    shutil.rmtree(eurosat_root / "eurosat" / "2750" / "Highway")
    t0 = time.perf_counter()
    rc = cli.main(["check-data", "eurosat", "--root", str(eurosat_root)])
    err = capsys.readouterr().err.strip().splitlines()
    _show(err, t0)
    assert rc == 2 and len(err) == 1 and "class 'Highway or Road' has no folder" in err[0]


def test_check_data_cli_resplits_an_imagefolder(tmp_path, capsys):
    from lowres_clip import cli

    root = _imagefolder(tmp_path / "folder")
    assert cli.main(["check-data", f"imagefolder:{root}"]) == 0
    _imagefolder(root, classes=("eel",))
    assert cli.main(["check-data", f"imagefolder:{root}"]) == 2
    assert "class folders added: ['eel']" in capsys.readouterr().err
    assert cli.main(["check-data", f"imagefolder:{root}", "--resplit"]) == 0
    assert '"classes": 3' in capsys.readouterr().out


# ----------------------------------------------------------------------------- model and weights
def test_unknown_model_is_one_line_without_loading_anything():
    cfg = resolve_config("smoke", None, model="ViT-B-33", weights="openai")
    t0 = time.perf_counter()
    problems = preflight.preflight([cfg], verify_images=False)
    _show(problems, t0)
    assert problems == [next(p for p in problems if p.startswith("model: Unknown open_clip model 'ViT-B-33'"))]
    assert "ViT-B-32" in problems[0]


def test_offline_weights_give_the_advice_line_first(monkeypatch, caplog):
    import huggingface_hub

    from lowres_clip import models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "cached_weights", lambda *a, **k: None)

    def no_network(*a, **k):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    t0 = time.perf_counter()
    problems = preflight.model_problems("RN50", "openai")
    _show(problems, t0)
    assert len(problems) == 1 and problems[0].startswith("Weights 'openai' of model 'RN50' are not cached")
    assert "weights=/path/to/RN50-openai.bin" in problems[0] and "Name or service not known" in problems[0]
    assert preflight.model_problems("RN50", "nope")[0].startswith("Unknown weights tag 'nope'")
    assert preflight.model_problems("tiny-vit", "/no/such/file.pt")[0].startswith("Checkpoint file")
    assert preflight.model_problems("tiny-vit", "random") == []
    # the loader's own message opens with the same advice, no ERROR:root line before it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelUnavailableError) as err:
        models.load_clip("RN50", "openai", device="cpu")
    first = str(err.value).splitlines()[0]
    assert first.startswith("Weights 'openai' of model 'RN50'") and len(first) < 400
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# ----------------------------------------------------------------------------- the study
@pytest.fixture
def roots(tmp_path: Path) -> dict[str, str]:
    return {name: str(tmp_path / name.split("_")[0]) for name in ("runs_root", "figures_root", "cache_root")}


def test_study_stops_before_any_notebook_with_one_line_per_problem(roots, tmp_path, capsys):
    args = ["--profile", "smoke", "--dataset", "eurosat", "--data-root", str(tmp_path / "nowhere"),
            "--methods", "zero_shot", "lora", "--shots", "1", "--seeds", "1"]
    rc, err, _ = _run_study(args, roots, capsys)
    assert rc == 2 and len(err) == 2
    assert err[0] == "error: preflight: 1 problem, nothing ran:" and "EuroSAT folder not found" in err[1]
    assert not Path(roots["runs_root"]).exists()  # no run folder, empty or not


def test_missing_diffusion_weights_stop_the_study_before_any_notebook(roots, eurosat_root, tmp_path, capsys, monkeypatch):
    """The paper profile's lora+aug-diffusion on a machine without the Stable Diffusion weights: one
    preflight line with the local-folder advice, nothing runs (it used to fail inside its notebook)."""
    import yaml

    from lowres_clip.config import load_profile

    raw = yaml.safe_load(load_profile("smoke").path.read_text())
    raw["grid"] = {"datasets": ["eurosat"], "shots": [1], "seeds": [1], "methods": ["zero_shot", "lora+aug-diffusion"]}
    profile = tmp_path / "diffusion.yaml"
    profile.write_text(yaml.safe_dump(raw))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = "no-such-org/no-such-sd"
    cfg = resolve_config("smoke", {"augmentation.generator.model_id": missing}, method="lora+aug-diffusion")
    assert preflight.generator_problems(cfg, probe=False)[0].startswith(f"Stable Diffusion weights '{missing}'")
    assert preflight.generator_problems(resolve_config("smoke", None, method="lora+aug-classic")) == []
    args = ["--profile", str(profile), "--dataset", "eurosat", "--data-root", str(eurosat_root),
            "--methods", "zero_shot", "lora+aug-diffusion", "--shots", "1", "--seeds", "1",
            "--set", f"augmentation.generator.model_id={missing}"]
    rc, err, _ = _run_study(args, roots, capsys)
    assert rc == 2 and "error: preflight: 1 problem, nothing ran:" in err  # after the images' progress bar
    line = err[err.index("error: preflight: 1 problem, nothing ran:") + 1:]
    assert len(line) == 1 and line[0].strip().startswith(f"augmentation: Stable Diffusion weights '{missing}'")
    assert "--set augmentation.generator.model_id=/path/to/folder" in line[0]
    assert not Path(roots["runs_root"]).exists()  # no notebook ran, no run folder


def test_any_profile_runs_any_dataset(roots, tmp_path):
    from lowres_clip import study

    jobs = study.plan_study("cpu", "circuits", methods=["zero_shot"], **roots)
    assert jobs[0].name == "circuits/data/grid" and jobs[0].parameters["dataset"] == "circuits"
    root = _imagefolder(tmp_path / "folder")
    jobs = study.plan_study("cpu", f"imagefolder:{root}", methods=["zero_shot"], **roots)
    assert jobs[0].name == "folder/data/grid"
    with pytest.raises(ConfigError, match="Unknown dataset 'imagenet'"):
        study.plan_study("cpu", "imagenet", **roots)


def test_grid_axes_in_set_become_the_grid_or_fail_naming_the_flag(roots):
    from lowres_clip import study

    assert preflight.grid_overrides({"shots": 2, "seed": [1, 2], "train.lr": 0.1}, None, None) == \
        ({"train.lr": 0.1}, [2], [1, 2], None)
    jobs = study.plan_study("smoke", "eurosat", overrides={"shots": 2, "seed": 2}, methods=["zero_shot"], **roots,
                            jobs_per="run")
    names = [j.name for j in jobs]
    assert names[0] == "eurosat/data/k2-s2" and "/zero_shot/k2-s2/" in names[1] and len(names) == 3
    assert jobs[1].parameters["shots"] == 2 and "overrides" not in jobs[1].parameters
    with pytest.raises(ConfigError, match=r"--set shots=4 and --shots 1 2 disagree.*--shots 4"):
        study.plan_study("smoke", "eurosat", overrides={"shots": 4}, shots=[1, 2], **roots)
    with pytest.raises(ConfigError, match="--dataset circuits"):
        preflight.grid_overrides({"dataset": "circuits"})
    with pytest.raises(ConfigError, match="lora\\+aug-classic"):
        preflight.grid_overrides({"augmentation.kind": "classic"})


class _Stop:
    """An executor that finishes the first job, then gets Ctrl-C (as the parent or through the kernel)."""

    def __init__(self, runs_root: str, through_kernel: bool = False):
        self.runs_root, self.through_kernel, self.calls = runs_root, through_kernel, []

    def __call__(self, job) -> None:
        from lowres_clip.runs import RunRecord

        self.calls.append(job.name)
        if len(self.calls) == 2:
            if self.through_kernel:  # papermill reports the kernel's KeyboardInterrupt as a cell error
                exc = RuntimeError("cell failed")
                exc.ename = "KeyboardInterrupt"
                raise exc
            raise KeyboardInterrupt
        for spec in job.specs:
            RunRecord.for_run(spec, {"top1": 0.5}).save(spec.record_path)
        for p in job.outputs:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("done")


@pytest.mark.parametrize("through_kernel", [False, True])
def test_ctrl_c_prints_one_line_with_what_finished_and_the_rerun(roots, capsys, monkeypatch, through_kernel):
    from lowres_clip import study

    stop = _Stop(roots["runs_root"], through_kernel)
    real = study.run_study
    monkeypatch.setattr(study.cli, "run_study", lambda *a, **k: real(*a, **{**k, "executor": stop, "progress": False}))
    args = ["--profile", "smoke", "--dataset", "eurosat", "--methods", "zero_shot", "lora", "--shots", "1", "--seeds", "1"]
    for name, value in roots.items():
        args += [f"--{name.replace('_', '-')}", value]
    t0 = time.perf_counter()
    rc = study.main(args)
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    _show(lines, t0)
    assert rc == interrupt.EXIT_CODE and len(lines) == 1 and "Traceback" not in out.err + out.out
    line = lines[0]
    assert line.startswith(f"interrupted during {stop.calls[1]}: 1 ran, 0 already done; 4 not finished (first: {stop.calls[1]})")
    assert "python -m lowres_clip.study --profile smoke --dataset eurosat" in line and "finished runs are skipped" in line
    import json

    (log_path,) = (Path(roots["runs_root"]) / "eurosat" / "study-logs").glob("*.json")  # the stopped invocation is logged
    log = json.loads(log_path.read_text())
    from lowres_clip.runs import load_records

    made = sorted(r.run_id for r in load_records(roots["runs_root"], "eurosat"))
    assert log["interrupted"] is True and log["ran"] == 1 and log["runs"] == made  # with the runs it finished


def test_interrupt_guard_without_a_study():
    ran, skipped, failed = [], [], {}
    with pytest.raises(interrupt.Interrupted) as err:
        with interrupt.guard(["a", "b", "c"], ran, skipped, failed) as g:
            for name in ["a", "b", "c"]:
                g.current = name
                if name == "b":
                    raise KeyboardInterrupt
                ran.append(name)
    assert err.value.remaining == ["b", "c"] and err.value.__cause__ is None
    assert err.value.summary("make study").endswith("Rerun `make study` to finish: finished runs are skipped.")


@pytest.mark.shared_data
def test_real_circuits_groups_and_partial_validation(shared_data):
    ds = datasets.load_circuits(shared_data, check_files=False)
    groups = ds.natural_groups()
    assert [groups.count(g) for g in ("head", "medium", "tail")] == [4, 10, 18]
    assert groups[ds.classnames.index("LED")] == "head" and groups[ds.classnames.index("UPS")] == "tail"
    assert "only 16 of 32 classes" in datasets.val_coverage_note(ds)
    check = preflight.check_dataset("circuits", shared_data, verify=False)
    assert len(check.problems) == 1 and "none of the 1332 split entries exists" in check.problems[0]


def test_a_real_sigint_inside_the_guard_is_one_interrupt_and_mutes_shutdown_noise():
    import logging
    import os
    import signal

    ran = []
    # a process started in the background (as CI may start the suite) inherits SIGINT ignored;
    # Ctrl-C in a terminal has Python's own handler, which is what this test is about
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(interrupt.Interrupted) as err:
            with interrupt.guard(["a", "b"], ran, [], []) as g:
                g.current = "a"
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the signal arrives here
        assert err.value.remaining == ["a", "b"]
        assert logging.getLogger("asyncio").level == logging.CRITICAL  # no "Task exception was never retrieved"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_common_model_checks_do_not_import_open_clip_and_agree_with_it():
    import subprocess
    import sys

    code = ("import sys; from lowres_clip import preflight; "
            "assert preflight.model_problems('tiny-vit', 'random') == []; "
            "assert preflight.model_problems('EffLite0-MiniLM', 'embedded') == []; "
            "assert 'open_clip' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    import open_clip

    from lowres_clip.settings import EMBEDDED_MODEL

    assert preflight._light_model_names() == set(open_clip.list_models()) | {EMBEDDED_MODEL}


def test_device_problems_name_cuda_and_fp16_on_a_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine
    assert "no CUDA device" in preflight.device_problem("cuda", "fp32")
    line = preflight.device_problem("cpu", "fp16")  # the paper profile (CLIP-LoRA's fp16) with --set device=cpu
    assert line.startswith("train.precision 'fp16'") and "--set train.precision=fp32" in line
    assert preflight.device_problem("cpu", "fp32") is None and preflight.device_problem("auto", "bf16") is None
    cfg = resolve_config("paper", {"device": "cpu", "weights": "random", "dataset": "eurosat"})
    report = preflight.run_preflight([cfg], verify_images=False, probe_weights=False, progress=False)
    assert any(p.startswith("device: train.precision 'fp16'") for p in report.problems)
