"""The method registry owns each method's behaviour; a method is added with one settings dataclass,
one module and one registry row (``tests/toy_method.py``), and runs through the study unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lowres_clip import registry, study
from lowres_clip.config import ConfigError, load_profile, resolve_config
from lowres_clip.runs import RunRecord
from lowres_clip.spec import resolve_run

TESTS = Path(__file__).resolve().parent
LIB = TESTS.parent / "lib"


@pytest.fixture
def toy(monkeypatch):
    """The toy method registered here and, through ``$LOWRES_CLIP_METHODS``, in every process
    started from here (notebook kernels included); unregistered afterwards."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv(registry.PLUGINS_ENV, "toy_method")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(LIB), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    sys.modules.pop("toy_method", None)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    assert "toy_bias" not in registry.METHODS
    registry.load_plugins()  # imports toy_method, which registers it
    yield registry.get("toy_bias")
    registry.unregister_method("toy_bias")
    sys.modules.pop("toy_method", None)


def test_every_method_has_its_behaviour_in_the_registry():
    m = registry.METHODS
    assert registry.references() == ("zero_shot", "linear_probe")
    assert {m[n].runner for n in registry.METHOD_ORDER} == {"adapted", "features"} and m["linear_probe"].runner == "features"
    for name in ("lora", "bitfit"):
        assert callable(registry.resolve(m[name].apply)) and callable(registry.resolve(m[name].parameter_group))
    assert callable(registry.resolve(m["meta_adapter"].head)) and m["meta_adapter"].apply is None
    assert m["meta_adapter"].train_protocol is not None and m["lora"].train_protocol is None
    assert {m[n].notebook for n in registry.METHOD_ORDER} <= set(registry.NOTEBOOKS)
    assert study.NOTEBOOKS is registry.NOTEBOOKS  # one definition of the notebook names


def test_registration_refuses_taken_names_and_bad_rows():
    with pytest.raises(ConfigError, match="already registered"):
        registry.register_method(registry.Method("lora", registry.NB_LORA, "again"))
    with pytest.raises(ConfigError, match="role"):
        registry.register_method(registry.Method("x", registry.NB_LORA, "x", role="contestant"))
    with pytest.raises(ConfigError, match="neither apply nor head"):
        registry.register_method(registry.Method("x", registry.NB_LORA, "x", trains=True))
    with pytest.raises(ConfigError, match="config_field 'lora' is taken"):
        registry.register_method(registry.Method("x", registry.NB_LORA, "x", "lora", dict, apply=print))
    assert "x" not in registry.METHODS


def test_validate_never_changes_the_config():
    cfg = resolve_config("smoke", {"train.seed": 9, "augmentation.variant": "seed"}, method="lora", seed=3)
    before = json.dumps(cfg.to_dict(), sort_keys=True)
    cfg.method = "bitfit+lora"  # a non-canonical spelling is accepted and kept
    cfg.validate()
    assert cfg.method == "bitfit+lora" and cfg.train.seed == 9 and cfg.train.augment_variant == "lrv"
    cfg.method = "lora"
    assert json.dumps(cfg.to_dict(), sort_keys=True) == before
    loop = cfg.train_settings()  # the loop gets the run's seed and augmentation variant
    assert (loop.seed, loop.augment_variant) == (3, "seed") and loop is not cfg.train


def test_plugin_settings_are_strict_and_hashed_only_for_the_plugin(toy):
    plain = resolve_run("smoke", method="lora")
    with_toy = resolve_run("smoke", {"toy_bias.count": 2}, method="lora")
    assert with_toy.config_hash == plain.config_hash  # another method's settings do not change a run
    one, two = resolve_run("smoke", method="toy_bias"), resolve_run("smoke", {"toy_bias.count": 2}, method="toy_bias")
    assert one.settings["toy_bias"] == {"count": 1} and two.settings["toy_bias"] == {"count": 2}
    assert one.config_hash != two.config_hash and two.config.settings_of("toy_bias").count == 2
    with pytest.raises(ConfigError, match="toy_bias.*at least 1"):
        resolve_run("smoke", {"toy_bias.count": 0}, method="toy_bias")
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_run("smoke", {"toy_bias.counts": 2}, method="toy_bias")


def test_plugins_load_in_a_fresh_process_from_the_environment(toy):
    code = ("from lowres_clip import registry; from lowres_clip.spec import resolve_run; "
            "print(registry.get('toy_bias').config_field, resolve_run('smoke', method='toy_bias').key)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ.copy())
    assert out.stdout.split() == ["toy_bias", "eurosat/tiny-vit-random/toy_bias/k2-s1"]


def test_a_toy_method_runs_through_the_study_and_trains(toy, tmp_path):
    """The toy method through the study runner (papermill, notebook kernels): a record whose
    training moved exactly the toy's parameters."""
    roots = {name: str(tmp_path / name.split("_")[0]) for name in ("runs_root", "figures_root", "cache_root")}
    raw = yaml.safe_load(load_profile("smoke").path.read_text())
    raw["grid"].update(methods=["toy_bias"], failure_pairs=[])  # the smoke profile with the toy method as its grid
    profile = tmp_path / "toy.yaml"
    profile.write_text(yaml.safe_dump(raw))
    result = study.run_study(str(profile), "eurosat", methods=["toy_bias"], shots=[1], seeds=[1], jobs_per="run",
                             progress=False, **roots)
    assert result.ok, result
    spec = resolve_run(str(profile), method="toy_bias", shots=1, seed=1, **roots)
    assert spec.is_finished()
    record = RunRecord.load(spec.record_path)
    movement = record.extra["train"]["movement"]
    assert set(movement) == {"toy_bias.vision"}, movement
    assert record.extra["parameter_counts"]["toy_bias"] == record.extra["parameter_counts"]["total"] > 0
    assert record.extra["parameter_counts"]["lora"] == 0
    assert record.extra["train"]["unmoved"] == []
    moved = movement["toy_bias.vision"]
    assert (moved["change_norm"] if moved["relative"] is None else moved["relative"]) > 1e-6, moved
    assert 0.0 <= record.metrics["top1"] <= 1.0
