"""The embedded CPU model EffLite0-MiniLM: offline build, open_clip integration, determinism, alignment.

One build per session (module fixture) into the session cache folder that ``conftest`` points
``$LOWRES_CLIP_CACHE`` at, so other tests calling ``load_clip("EffLite0-MiniLM", "embedded")`` reuse it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

from conftest import class_image
from lowres_clip import embedded
from lowres_clip.embedded import (
    EMBEDDED_CAVEAT,
    EMBEDDED_MODEL,
    EMBEDDED_PREPROCESS,
    EmbeddedBuildConfig,
    EmbeddedBuildError,
)
from lowres_clip.models import ClipBundle, load_clip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The built model folder, in the same place the autouse cache fixture points the default to."""
    cache = tmp_path_factory.getbasetemp() / "cache" / "embedded"
    return embedded.build_embedded(cache_dir=cache)


@pytest.fixture(scope="module")
def bundle(built) -> ClipBundle:
    return embedded.load_embedded(device="cpu", cache_dir=built.parent)


def _images(n: int = 2) -> list[Image.Image]:
    return [Image.fromarray(class_image(label=i, i=i, size=64)) for i in range(n)]


def test_expected_relu6_mean_matches_monte_carlo():
    torch.manual_seed(0)
    beta = torch.tensor([-2.0, 0.0, 0.7, 3.0, 7.0, 1.5])
    std = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.8, 0.0])
    z = beta + std * torch.randn(400_000, len(beta))
    mc = z.clamp(0, 6).mean(0)
    torch.testing.assert_close(embedded.expected_relu6_mean(beta, std).float(), mc, atol=0.01, rtol=0.01)
    assert embedded.expected_relu6_mean(beta, std)[-1].item() == 1.5  # std 0: clip(beta, 0, 6)


def test_build_config_is_validated():
    with pytest.raises(EmbeddedBuildError, match="must contain"):
        EmbeddedBuildConfig(templates=("a photo of a cat.",))
    with pytest.raises(EmbeddedBuildError, match="positive"):
        EmbeddedBuildConfig(alphas=(0.0,))


def test_build_writes_complete_local_dir(built):
    info = json.loads((built / "build_info.json").read_text())
    assert info["model"] == EMBEDDED_MODEL and info["caveat"] == EMBEDDED_CAVEAT
    assert info["ridge_alpha"] in EmbeddedBuildConfig().alphas
    for name in ("open_clip_model.safetensors", "open_clip_config.json", "config.json", "tokenizer.json",
                 "alignment_data.safetensors"):
        assert (built / name).is_file(), name
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")], "temporary build folders left behind"
    # a second call reuses the folder instead of rebuilding
    mtime = (built / "open_clip_model.safetensors").stat().st_mtime_ns
    assert embedded.build_embedded(cache_dir=built.parent) == built
    assert (built / "open_clip_model.safetensors").stat().st_mtime_ns == mtime


def test_registered_with_open_clip(built):
    import timm

    timm_cfg = timm.models.get_pretrained_cfg(embedded.VISION_TIMM_MODEL)
    assert (timm_cfg.mean, timm_cfg.std) == (EMBEDDED_PREPROCESS["mean"], EMBEDDED_PREPROCESS["std"])
    assert embedded.register_embedded_config()  # through open_clip's public add_model_config
    assert EMBEDDED_MODEL in open_clip.list_models()
    tok = open_clip.get_tokenizer(f"local-dir:{built}")
    assert isinstance(tok, open_clip.tokenizer.HFTokenizer)
    ids = tok(["a photo of a dog."])
    assert ids.shape == (1, embedded.CONTEXT_LENGTH) and ids[0, 0].item() == 101  # BERT [CLS]


def test_features_shapes_and_logit_scale(bundle):
    assert isinstance(bundle, ClipBundle) and bundle.weights == "embedded" and bundle.image_size == 224
    model = bundle.model
    normalize = bundle.preprocess_eval.transforms[-1]
    assert tuple(normalize.mean) == EMBEDDED_PREPROCESS["mean"] and tuple(normalize.std) == EMBEDDED_PREPROCESS["std"]
    assert model.visual.trunk.conv_head.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.stack([bundle.preprocess_eval(im) for im in _images()])
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(bundle.tokenizer(["a photo of a dog.", "a satellite photo of a river.", "a lake."]))
    assert img.shape == (2, embedded.EMBED_DIM) and txt.shape == (3, embedded.EMBED_DIM)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    assert (img.norm(dim=-1) > 1e-3).all() and (txt.norm(dim=-1) > 1e-3).all()
    assert math.isclose(model.logit_scale.exp().item(), 100.0, rel_tol=1e-5)
    img_n, txt_n = torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1)
    torch.testing.assert_close(img_n.norm(dim=-1), torch.ones(2))
    assert (img_n @ txt_n.T).abs().max() <= 1.0 + 1e-5


def test_all_load_routes_give_the_same_weights(built, bundle):
    ref = bundle.model.state_dict()
    via_dir, _, pre_dir = open_clip.create_model_and_transforms(f"local-dir:{built}")
    via_path, _, pre_path = open_clip.create_model_and_transforms(
        EMBEDDED_MODEL, pretrained=str(built / "open_clip_model.safetensors"), **embedded.EMBEDDED_TRANSFORM_KWARGS
    )
    via_load_clip = load_clip(EMBEDDED_MODEL, "embedded", device="cpu").model
    for model in (via_dir, via_path, via_load_clip):
        state = model.state_dict()
        assert state.keys() == ref.keys()
        assert all(torch.equal(state[k], ref[k]) for k in ref)
    for pre in (pre_dir, pre_path):
        assert tuple(pre.transforms[-1].mean) == EMBEDDED_PREPROCESS["mean"]
    tokens = open_clip.get_tokenizer(f"local-dir:{built}")(["itap of a cat."])
    torch.testing.assert_close(tokens, bundle.tokenizer(["itap of a cat."]))


def test_loaded_weights_equal_a_recomputation_from_the_sources(built, bundle):
    """Build + load is exact: every fitted part recomputed from the packages matches the cached model."""
    model = bundle.model
    trunk_sd, fc_w, _ = embedded.load_efficientnet_source()
    for (k, v), src in zip(model.visual.trunk.state_dict().items(), trunk_sd.values()):
        assert torch.equal(v, src), k
    torch.testing.assert_close(model.visual.head.proj.bias, -embedded.image_feature_mean(model.visual.trunk), atol=0, rtol=0)
    torch.testing.assert_close(model.visual.head.proj.weight, torch.eye(embedded.EMBED_DIM), atol=0, rtol=0)
    text_emb, prototypes = embedded.load_alignment_data(built)
    torch.testing.assert_close(prototypes, torch.nn.functional.normalize(fc_w, dim=1))
    alpha = json.loads((built / "build_info.json").read_text())["ridge_alpha"]
    refit = embedded.fit_text_projection(text_emb, prototypes, EmbeddedBuildConfig(alphas=(alpha,)))
    torch.testing.assert_close(model.text.proj.weight.detach(), refit.weight, atol=1e-6, rtol=1e-5)
    # the stored text embeddings are the model's own pooled MiniLM features (template ensemble)
    config = EmbeddedBuildConfig()
    classes = open_clip.IMAGENET_CLASSNAMES[:12]
    again = embedded.class_text_embeddings(model, bundle.tokenizer, classes, config.templates)
    torch.testing.assert_close(again, text_emb[:12], atol=1e-4, rtol=1e-4)


def test_ridge_alignment_ranks_held_out_classes_high(built):
    text_emb, prototypes = embedded.load_alignment_data(built)
    report = embedded.alignment_report(text_emb, prototypes, n_test=200, seed=0, config=EmbeddedBuildConfig(alphas=(30.0,)))
    assert report.n_fit == 800 and report.n_test == 200
    assert report.median_rank <= 20, report  # top 10 % of 200
    assert report.top1 >= 0.25, report  # chance: 0.005


def test_lora_and_gradcam_module_names_work(bundle):
    """LoRA on MiniLM q/k/v and on EfficientNet 1x1 convs trains; Grad-CAM on visual.trunk.bn2 gets gradients."""
    import copy

    from peft import LoraConfig, inject_adapter_in_model

    model = copy.deepcopy(bundle.model).train()
    names = dict(model.named_modules())
    assert isinstance(names["text.transformer.encoder.layer.0.attention.self.query"], torch.nn.Linear)
    pointwise = {n: m for n, m in names.items() if n.endswith(("conv_pw", "conv_pwl", "conv_head"))}
    assert len(pointwise) == 32  # block 0: conv_pw; 15 inverted residuals: conv_pw + conv_pwl; conv_head
    assert all(type(m) is torch.nn.Conv2d and m.kernel_size == (1, 1) for m in pointwise.values())
    config = LoraConfig(r=2, lora_alpha=4, target_modules=r".*(attention\.self\.(query|key|value)|blocks\.6\.0\.conv_pwl?)")
    model = inject_adapter_in_model(config, model)
    for n, p in model.named_parameters():
        p.requires_grad = "lora_" in n
    maps = {}

    def keep_activation(_module, _inputs, out):
        out.retain_grad()
        maps["a"] = out

    model.visual.trunk.bn2.register_forward_hook(keep_activation)
    images = torch.stack([bundle.preprocess_train(im) for im in _images()])
    img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    txt = torch.nn.functional.normalize(model.encode_text(bundle.tokenizer(["a photo of a cat.", "a photo of a dog."])), dim=-1)
    loss = torch.nn.functional.cross_entropy(model.logit_scale.exp() * img @ txt.T, torch.arange(2))
    loss.backward()
    lora_grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert any("query" in n for n in lora_grads) and any("conv_pwl" in n for n in lora_grads)
    assert all(g is not None and torch.isfinite(g).all() for g in lora_grads.values())
    assert all(g.abs().sum() > 0 for g in lora_grads.values())
    assert maps["a"].shape == (2, 1280, 7, 7) and maps["a"].grad.abs().sum() > 0
    # BitFit: the CNN has no conv biases, but BatchNorm shifts and MiniLM biases exist
    biases = [n for n, _ in bundle.model.named_parameters() if n.endswith(".bias")]
    assert not [n for n in biases if "conv" in n]
    assert any(n.startswith("visual.trunk.") and ".bn" in n for n in biases)
    assert any(n.startswith("text.transformer.") for n in biases)


def test_the_build_is_the_same_bytes_whatever_the_callers_threads(tmp_path):
    """Callers with other thread counts (a pytest run on every core, a worker on one) get the same
    weights: a build in a running process depends on how that process was started, so the build
    runs in a process started single-threaded (records made in workers must reproduce under pytest)."""
    import hashlib

    from lowres_clip.numerics import using_threads

    digests = []
    for threads, name in ((2, "a"), (1, "b")):
        with using_threads(threads):
            folder = embedded.build_embedded(tmp_path / name)
        digests.append(hashlib.sha256((folder / "open_clip_model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
