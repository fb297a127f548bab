"""Diffusion generator end to end on a tiny random Stable Diffusion img2img pipeline (no download)."""

from __future__ import annotations

import json
import os
import string

import pytest
import torch
from PIL import Image

from lowres_clip.augment import (
    AugmentError,
    DiffusionConfig,
    DiffusionGenerator,
    GeneratorUnavailableError,
    Manifest,
    ManifestMismatchError,
    augmentation_gallery,
    generate,
    make_generator,
)
from lowres_clip.augment.manifest import MANIFEST_FILE
from lowres_clip.datasets import load_dataset
from lowres_clip.models import ModelUnavailableError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

TINY_ID = "test/tiny-random-sd"


class CountingPipeline(diffusers.StableDiffusionImg2ImgPipeline):
    """The real img2img pipeline, counting its calls."""

    calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


def tiny_pipeline(cls=CountingPipeline):
    """Random tiny UNet / VAE / CLIP text encoder and a character-level CLIP tokenizer."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(vocab), max_position_embeddings=16,
    ))
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return cls(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def tiny_config(**kw) -> DiffusionConfig:
    base = dict(model_id=TINY_ID, num_inference_steps=4, image_size=32, num_samples=2,
                breaking_strengths=[0.6, 0.8], device="cpu")
    return DiffusionConfig.for_dataset("eurosat", **{**base, **kw})


@pytest.fixture
def sources(eurosat_root):
    ds = load_dataset("eurosat", eurosat_root)
    return ds, [ds.split("train")[0], ds.split("train")[8]]


def test_diffusion_generates_images_and_manifest_and_rerun_skips(sources, tmp_path):
    ds, samples = sources
    pipe = tiny_pipeline()
    gen = DiffusionGenerator(tiny_config(), pipeline=pipe)
    out = tmp_path / "sd"
    pres = generate(samples, ds.image_root, ds.classnames, out, "preserving", gen, progress=False)
    brk = generate(samples, ds.image_root, ds.classnames, out, "breaking", gen, progress=False)
    assert pipe.calls == 2 * (1 + 2)  # one call per (source, strength): 2 samples per call
    assert len(pres) == 2 * 2 and len(brk) == 2 * 2 * 2
    rows = [json.loads(line) for line in (out / MANIFEST_FILE).read_text().splitlines()]
    assert len(rows) == 12
    for row in rows:
        assert row["generator"] == "diffusion" and row["model_id"] == TINY_ID
        assert row["prompt"] == f"a satellite photo of {row['classname']}"
        assert Image.open(out / row["output_path"]).size == (32, 32)
    assert {r["strength"] for r in rows} == {0.3, 0.6, 0.8}

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = DiffusionGenerator(tiny_config(), pipeline=pipe)
    assert generate(samples, ds.image_root, ds.classnames, out, "breaking", again, progress=False).rows == brk.rows
    assert generate(samples, ds.image_root, ds.classnames, out, "preserving", again, progress=False).rows == pres.rows
    assert pipe.calls == 6  # nothing regenerated
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    assert len(Manifest.load(out)) == 12

    # a deleted image is remade (same seed) without a duplicate row
    victim = brk.file(brk.rows[0])
    victim.unlink()
    generate(samples, ds.image_root, ds.classnames, out, "breaking", again, progress=False)
    assert pipe.calls == 7 and victim.is_file() and len(Manifest.load(out)) == 12

    fig = augmentation_gallery(pres + brk)
    assert f"diffusion ({TINY_ID})" in fig._suptitle.get_text()


def test_diffusion_folder_refuses_other_model_or_strengths(sources, tmp_path):
    ds, samples = sources
    pipe = tiny_pipeline()
    out = tmp_path / "sd"
    generate(samples[:1], ds.image_root, ds.classnames, out, "preserving", DiffusionGenerator(tiny_config(), pipe), progress=False)
    for change, field in (({"model_id": "test/other-sd"}, "model_id"), ({"breaking_strengths": [0.6, 0.7, 0.8]}, "breaking_strengths"),
                          ({"prompt_template": "a photo of {}"}, "prompt_template")):
        with pytest.raises(ManifestMismatchError, match=field):
            generate(samples[:1], ds.image_root, ds.classnames, out, "breaking",
                     DiffusionGenerator(tiny_config(**change), pipe), progress=False)
    assert pipe.calls == 1
    # runtime fields (device, batch size, dtype) do not count as other settings
    generate(samples[:1], ds.image_root, ds.classnames, out, "breaking",
             DiffusionGenerator(tiny_config(batch_size=1, dtype="fp32"), pipe), progress=False)
    assert pipe.calls == 1 + 2 * 2  # batch_size 1: one call per image


def test_missing_weights_name_the_classic_fallback(sources, tmp_path):
    ds, samples = sources
    gen = make_generator("diffusion", dataset="circuits", model_id="no-such-org/no-such-sd", local_files_only=True, device="cpu")
    assert gen.prompt("timer") == "a circuit diagram of timer"
    with pytest.raises(GeneratorUnavailableError, match="classic") as err:
        generate(samples, ds.image_root, ds.classnames, tmp_path / "x", "preserving", gen, progress=False)
    assert isinstance(err.value, ModelUnavailableError) and "no-such-org/no-such-sd" in str(err.value)


def test_diffusion_config_defaults_and_checks():
    cfg = DiffusionConfig()
    assert (cfg.num_inference_steps, cfg.guidance_scale, cfg.eta, cfg.image_size) == (50, 5.0, 0.0, 512)
    assert (cfg.num_samples, cfg.seed, cfg.preserving_strength) == (5, 42, 0.3)
    assert cfg.breaking_strengths == (0.6, 0.7, 0.8) and cfg.scheduler == "ddim"
    assert "stable-diffusion-v1" in cfg.model_id
    assert DiffusionConfig.for_dataset("circuits").prompt_template == "a circuit diagram of {}"
    assert "device" not in cfg.settings() and "batch_size" not in cfg.settings()
    with pytest.raises(AugmentError, match="no denoising step"):
        DiffusionConfig(num_inference_steps=2)
    with pytest.raises(AugmentError, match="prompt_template"):
        DiffusionConfig(prompt_template="a photo")
    pipe = tiny_pipeline()
    pipe.register_to_config(_name_or_path="someone/else")
    with pytest.raises(AugmentError, match="someone/else"):
        DiffusionGenerator(tiny_config(), pipeline=pipe)


def test_load_pipeline_from_a_local_folder(sources, tmp_path):
    ds, samples = sources
    folder = tmp_path / "tiny-sd"
    tiny_pipeline(diffusers.StableDiffusionImg2ImgPipeline).save_pretrained(folder)
    gen = DiffusionGenerator(tiny_config(model_id=str(folder), local_files_only=True))
    assert gen.availability_problem() is None  # what the preflight asks: a complete folder passes
    m = generate(samples[:1], ds.image_root, ds.classnames, tmp_path / "out", "preserving", gen, progress=False)
    assert isinstance(gen.load().scheduler, diffusers.DDIMScheduler)
    assert gen.load().safety_checker is None
    assert len(m) == 2 and all(Image.open(m.file(r)).size == (32, 32) for r in m)
    assert {r.model_id for r in m} == {str(folder)}


def test_availability_names_what_a_folder_or_the_cache_lacks(tmp_path, monkeypatch):
    """The preflight's question to the generator: an incomplete folder (as diffusers refuses it), no
    folder, an uncached hub id offline; each one line with the local-folder advice. Nothing loads."""
    from lowres_clip.augment.diffusion import weights_problem

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "tiny-sd"
    tiny_pipeline(diffusers.StableDiffusionImg2ImgPipeline).save_pretrained(folder)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    line = weights_problem(tiny_config(model_id=str(folder)))
    assert "lacks unet/ weights" in line and "--set augmentation.generator.model_id=" in line
    with pytest.raises(Exception):  # diffusers agrees: the folder does not load
        diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(folder, safety_checker=None, local_files_only=True)
    assert "no such folder" in weights_problem(tiny_config(model_id=str(tmp_path / "nowhere")))
    gen = make_generator("diffusion", dataset="eurosat", model_id="no-such-org/no-such-sd")
    line = gen.availability_problem()
    assert line.startswith("Stable Diffusion weights 'no-such-org/no-such-sd'") and "not in the Hugging Face cache" in line
    assert "HF_HUB_OFFLINE is set" in line and "\n" not in line
    assert make_generator("classic").availability_problem() is None
