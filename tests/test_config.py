"""Run configuration and profiles: strict validation, overrides, method labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lowres_clip.config import (
    AugmentConfig,
    ConfigError,
    GridEntry,
    RunConfig,
    available_profiles,
    build_config,
    load_profile,
    parse_entry,
    resolve_config,
)
from lowres_clip.embedded import EMBEDDED_MODEL
from lowres_clip.spec import RunSpec
from lowres_clip.methods.lora import LoraConfig
from lowres_clip.train import TrainConfig


def write_profile(tmp_path: Path, raw: dict, name: str = "custom") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_profiles_load_and_validate():
    assert set(available_profiles()) >= {"paper", "cpu", "smoke"}
    for name in available_profiles():
        prof = load_profile(name)
        cfg = prof.config()
        assert isinstance(cfg, RunConfig) and cfg.profile == name
        for dataset in prof.grid.datasets:  # every grid cell resolves
            for entry in prof.grid.entries():
                cfg = prof.config({**entry.overrides, "dataset": dataset, "method": entry.label})
                assert cfg.label == entry.label


def test_paper_profile_is_the_full_gpu_grid_with_clip_lora_defaults():
    prof = load_profile("paper")
    cfg = prof.config()
    assert (cfg.model, cfg.weights, cfg.device) == ("ViT-B-16", "openai", "cuda")
    assert prof.grid.shots == [1, 2, 4, 8, 16] and prof.grid.seeds == [1, 2, 3]
    assert prof.grid.datasets == ["eurosat", "circuits"]
    assert {"zero_shot", "linear_probe", "lora", "bitfit", "meta_adapter", "lora+bitfit+meta_adapter"} <= set(prof.grid.methods)
    for name in ("paper", "cpu"):  # the Meta-Adapter alone under both budgets
        assert {"meta_adapter", "meta_adapter[meta_adapter.budget=run]"} <= set(load_profile(name).grid.methods)
    assert cfg.train.iterations is None and cfg.train.iterations_per_shot == 500  # 500 x K
    assert (cfg.train.lr, cfg.train.batch_size) == (2e-4, 32)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout) == (2, 1.0, 0.25)


def test_cpu_and_smoke_profiles():
    cpu = load_profile("cpu")
    cfg = cpu.config()
    assert (cfg.model, cfg.weights, cfg.dataset, cfg.shots, cfg.seed) == (EMBEDDED_MODEL, "embedded", "eurosat", 16, 1)
    assert cfg.train.precision == "fp32"  # the same arithmetic on every host (bf16 exists natively on some CPUs only)
    assert cfg.test_subset is None and cfg.image_size == 128  # full CoOp test split, 128 px on a CPU
    assert load_profile("paper").config().test_subset is None and load_profile("paper").config().image_size is None
    assert cpu.grid.shots == [1, 2, 4, 8, 16] and cpu.grid.seeds == [1, 2, 3]  # the shots curve over 3 seeds
    assert cfg.train.iterations is None and cfg.train.iterations_per_shot == 10  # 10 x K steps
    assert cpu.grid.failure_cells == [[16, 1]] and cpu.cluster == {"executor": "local", "workers": 2}
    smoke = load_profile("smoke").config()
    assert (smoke.model, smoke.weights, smoke.smoke) == ("tiny-vit", "random", True)
    assert smoke.train.iterations <= 16  # tiny, but enough steps to change predictions (test_notebooks pins them)


def test_parameters_override_profile_values():
    cfg = resolve_config("smoke", None, dataset="circuits", shots=4, seed=3, method="bitfit+lora", model=None)
    assert (cfg.dataset, cfg.shots, cfg.seed) == ("circuits", 4, 3)
    assert cfg.model == "tiny-vit"  # None keeps the profile's value
    assert cfg.method == "lora+bitfit"  # canonical order
    assert RunSpec(cfg).key == "circuits/tiny-vit-random/lora+bitfit/k4-s3"
    assert cfg.train_settings().seed == 3  # the run seed drives training too
    assert RunSpec(cfg).settings["train"]["seed"] == 3  # and the settings show it (hash continuity)


def test_nested_and_dotted_overrides():
    base = load_profile("smoke").config()
    cfg = resolve_config("smoke", {"train.lr": 1e-3, "lora": {"rank": 4}}, train={"iterations": 7})
    assert cfg.train.lr == 1e-3 and cfg.train.iterations == 7 and cfg.lora.rank == 4
    assert cfg.train.batch_size == base.train.batch_size  # untouched keys keep the profile's value
    assert isinstance(cfg.lora, LoraConfig) and isinstance(cfg.train, TrainConfig)
    explicit_none = resolve_config("smoke", {"long_tail_ratio": None}, long_tail_ratio=None)
    assert explicit_none.long_tail_ratio is None


@pytest.mark.parametrize("params, overrides, key", [
    ({"methd": "lora"}, None, "methd"),
    ({}, {"train.iterationz": 3}, "train.iterationz"),
    ({"train": {"lrr": 1.0}}, None, "train.lrr"),
    ({}, {"lora": {"rnak": 2}}, "lora.rnak"),
    ({}, {"augmentation": {"kind": "classic", "generator": {"num_sampels": 2}}}, "augmentation.generator.num_sampels"),
    ({}, {"augmentation": {"generator": {"strenght": 2}}}, "augmentation.generator.strenght"),
])
def test_unknown_keys_are_errors_naming_the_key(params, overrides, key):
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'"):
        resolve_config("smoke", overrides, **params)


@pytest.mark.parametrize("section, content, key", [
    ("top", {"defaults": {}, "grid": {}, "extra": 1}, "extra"),
    ("defaults", {"defaults": {"train": {"iterationz": 3}}}, "defaults.train.iterationz"),
    ("defaults", {"defaults": {"modle": "x"}}, "defaults.modle"),
    ("grid", {"grid": {"shot": [1]}}, "grid.shot"),
])
def test_unknown_profile_keys_are_errors_naming_the_key(tmp_path, section, content, key):
    path = write_profile(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert key in str(err.value) and "custom" in str(err.value)


def test_unknown_methods_are_errors():
    with pytest.raises(ConfigError, match="unknown method 'lorra'"):
        resolve_config("smoke", None, method="lorra")
    with pytest.raises(ConfigError, match="stand alone"):
        resolve_config("smoke", None, method="zero_shot+lora")
    with pytest.raises(ConfigError, match="unknown augmentation 'gan'"):
        resolve_config("smoke", None, method="lora+aug-gan")


def test_unknown_grid_method_is_an_error(tmp_path):
    path = write_profile(tmp_path, {"grid": {"methods": ["zero_shot", "lora+metaadapter"]}})
    with pytest.raises(ConfigError, match=r"grid\.methods\[1\].*'metaadapter'"):
        load_profile(path)
    path = write_profile(tmp_path, {"grid": {"methods": ["lora"], "failure_pairs": [["zero_shot", "lora"]]}})
    with pytest.raises(ConfigError, match="failure_pairs"):
        load_profile(path)


def test_grid_entries_carry_settings_of_their_own(tmp_path):
    """``label[key=value, ...]``: one parser, one canonical text; the settings are checked like --set."""
    entry = parse_entry(" bitfit+lora[train.lr=0.001,  lora.params=[q, v]] ")
    assert entry == GridEntry("lora+bitfit", (("lora.params", ["q", "v"]), ("train.lr", 1e-3)))
    assert str(entry) == "lora+bitfit[lora.params=[q,v],train.lr=0.001]" and parse_entry(str(entry)) == entry
    odd = parse_entry('lora[train.crop_scale=[0.5, 1.0], train.seed="3", bitfit.groups=a b]')
    assert str(odd) == 'lora[bitfit.groups="a b",train.crop_scale=[0.5,1.0],train.seed="3"]' and parse_entry(str(odd)) == odd
    assert str(parse_entry("meta_adapter[meta_adapter.budget=run]")) == "meta_adapter[meta_adapter.budget=run]"
    assert parse_entry("lora") == GridEntry("lora") and parse_entry("lora").overrides == {}
    for bad, fragment in [("lora[train.lr=1", "ending in ']'"), ("lora[train.lr]", "expected key=value"),
                          ("lora[]", "names no setting"), ("lora[shots=4]", "axis of the grid"),
                          ("lora[augmentation.kind=classic]", "axis of the grid"),
                          ("lora[a=1, a=2]", "given twice"), ("lorra[train.lr=1]", "unknown method 'lorra'")]:
        with pytest.raises(ConfigError, match=fragment):
            parse_entry(bad)
    grid = {"methods": ["meta_adapter", "meta_adapter[meta_adapter.budget=run]", "meta_adapter"]}
    assert load_profile(write_profile(tmp_path, {"grid": grid})).grid.methods == grid["methods"][:2]  # deduplicated
    path = write_profile(tmp_path, {"grid": {"methods": ["lora", "lora[lora.rnak=4]"]}})
    with pytest.raises(ConfigError, match=r"unknown key 'grid\.methods\[1\]\.lora\.rnak'"):
        load_profile(path)
    path = write_profile(tmp_path, {"grid": {"methods": ["meta_adapter[meta_adapter.budget=all]"]}})
    with pytest.raises(ConfigError, match="budget must be one of"):
        load_profile(path)
    path = write_profile(tmp_path, {"grid": {"methods": ["zero_shot", "lora[lora.rank=4]"],
                                             "failure_pairs": [["zero_shot", "lora[lora.rank=4]"]]}})
    with pytest.raises(ConfigError, match="failure_pairs.*settings of its own"):
        load_profile(path)


def test_a_profile_extends_another(tmp_path):
    """``extends``: defaults and cluster merged key by key over the base's, the grid replaced."""
    base = {"defaults": {"image_size": 96, "train": {"lr": 0.5, "batch_size": 8}}, "cluster": {"workers": 3},
            "grid": {"shots": [1, 2], "methods": ["zero_shot", "lora"], "failure_pairs": [["zero_shot", "lora"]]}}
    write_profile(tmp_path, base, "base")
    child = write_profile(tmp_path, {"extends": str(tmp_path / "base.yaml"), "defaults": {"train": {"lr": 0.25}},
                                     "grid": {"shots": [4], "methods": ["bitfit"]}}, "child")
    prof = load_profile(child)
    cfg = prof.config()
    assert (cfg.image_size, cfg.train.lr, cfg.train.batch_size) == (96, 0.25, 8)  # merged, the child's value wins
    assert prof.cluster == {"workers": 3} and prof.grid.shots == [4] and prof.grid.methods == ["bitfit"]
    assert prof.grid.failure_pairs == []  # the grid is the child's as a whole
    import os  # an edit to the base reloads the profile that extends it (the cache is keyed on both)

    write_profile(tmp_path, {**base, "defaults": {**base["defaults"], "image_size": 64}}, "base")
    os.utime(tmp_path / "base.yaml", (1e9, 2e9))
    assert load_profile(child).config().image_size == 64
    keep = write_profile(tmp_path, {"extends": str(tmp_path / "base.yaml")}, "keep")
    assert load_profile(keep).grid.methods == ["zero_shot", "lora"]  # no grid: the base's
    for raw, fragment in [({"extends": str(tmp_path / "loop.yaml")}, "cycle"), ({"extends": "nonesuch"}, "unknown profile"),
                          ({"extends": 3}, "expected a profile name")]:
        path = write_profile(tmp_path, raw, "loop")
        with pytest.raises(ConfigError, match=fragment):
            load_profile(path)
    longtail, cpu = load_profile("cpu-longtail"), load_profile("cpu")
    assert longtail.defaults == cpu.defaults and longtail.cluster == cpu.cluster  # the cpu profile's settings


def test_long_tail_ratios_run_every_method_at_each_ratio(tmp_path):
    grid = {"shots": [16], "long_tail_ratios": [4, 16.0],
            "methods": ["zero_shot", "meta_adapter[meta_adapter.budget=run]", "lora+la"]}
    prof = load_profile(write_profile(tmp_path, {"grid": grid}))
    assert prof.grid.methods == [
        "zero_shot[long_tail_ratio=4]", "zero_shot[long_tail_ratio=16]",
        "meta_adapter[long_tail_ratio=4,meta_adapter.budget=run]", "meta_adapter[long_tail_ratio=16,meta_adapter.budget=run]",
        "lora+la[long_tail_ratio=4]", "lora+la[long_tail_ratio=16]"]
    for entry in prof.grid.entries():
        cfg = prof.config({**entry.overrides, "method": entry.label})
        assert cfg.long_tail_ratio in (4.0, 16.0) and RunSpec(cfg).cell.startswith("k16-lt")
    for ratios, fragment in [([1], "ratio > 1"), ([], "at least one ratio"), (["x"], "long_tail_ratios")]:
        with pytest.raises(ConfigError, match=fragment):
            load_profile(write_profile(tmp_path, {"grid": {**grid, "long_tail_ratios": ratios}}))
    shipped = load_profile("cpu-longtail").grid
    assert shipped.long_tail_ratios == [4, 16] and shipped.shots == [16] and shipped.seeds == [1, 2, 3]
    assert {"lora+resample[long_tail_ratio=16]", "lora+reweight[long_tail_ratio=4]", "lora+la[long_tail_ratio=16]",
            "lora+decouple[long_tail_ratio=4]"} <= set(shipped.methods)


@pytest.mark.parametrize("values, fragment", [
    ({"shots": "3"}, "shots: expected an integer"),
    ({"shots": 0}, "shots: must be a positive integer"),
    ({"smoke": "yes"}, "smoke: expected true/false"),
    ({"device": "tpu"}, "device: unknown device"),
    ({"lora": {"rank": 0}}, "lora: LoRA rank"),
    ({"train": {"lr": -1.0}}, "train: TrainConfig"),
    ({"augmentation": {"kind": "gan"}}, "augmentation.kind"),
])
def test_bad_values_are_errors(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_config(values)


def test_method_labels_round_trip():
    from lowres_clip.registry import MethodLabel, parse_label

    assert parse_label("bitfit+lora+aug-classic") == MethodLabel(("lora", "bitfit"), "classic", "both")
    assert str(parse_label("bitfit+lora+aug-classic")) == "lora+bitfit+aug-classic"
    assert parse_label("lora+aug-diffusion-breaking") == MethodLabel(("lora",), "diffusion", "breaking")
    assert parse_label("meta_adapter") == MethodLabel(("meta_adapter",))
    assert RunConfig(method="lora", augmentation=AugmentConfig(kind="classic", use="preserving")).label == "lora+aug-classic-preserving"
    with pytest.raises(ConfigError, match="needs a trained method"):
        parse_label("zero_shot+aug-classic")
    cfg = resolve_config("smoke", None, method="lora+aug-classic")
    assert (cfg.method, cfg.augmentation.kind, cfg.label) == ("lora", "classic", "lora+aug-classic")
    assert RunSpec(cfg).key == "eurosat/tiny-vit-random/lora+aug-classic/k2-s1"
    with pytest.raises(ConfigError, match="label-breaking loss acts on image features"):
        resolve_config("smoke", None, method="meta_adapter+aug-classic")
    assert resolve_config("smoke", None, method="meta_adapter+aug-classic-preserving").augmentation.use == "preserving"
    with pytest.raises(ConfigError, match="label-breaking"):
        resolve_config("smoke", {"lora.encoders": "text"}, method="lora+aug-classic")
    plain = cfg.with_label("zero_shot")
    assert (plain.method, plain.augmentation.kind) == ("zero_shot", "none")
    with pytest.raises(ConfigError, match="needs a trained method"):
        plain.replace(augmentation={"kind": "classic"}).check_trainable_augmentation()


def test_config_dict_round_trip():
    cfg = resolve_config("paper", {"lora.position": "half-up"}, method="lora+aug-diffusion")
    again = build_config(cfg.to_dict())
    assert again == cfg
    assert again.replace(**{"train.iterations": 9}).train.iterations == 9


def test_unknown_profile_name():
    with pytest.raises(ConfigError, match="unknown profile 'gpu'.*cpu"):
        load_profile("gpu")


def test_configuration_layer_imports_nothing_heavy():
    """``import lowres_clip.config`` (and the spec, registry, settings) loads neither torch nor open_clip."""
    import subprocess
    import sys

    code = ("import sys, lowres_clip.config, lowres_clip.spec, lowres_clip.registry, lowres_clip.study; "
            "print(' '.join(m for m in ('torch', 'open_clip', 'numpy', 'lowres_clip.embedded') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the configuration layer imported {out}"

