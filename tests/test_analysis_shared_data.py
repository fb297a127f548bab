"""The whole failure analysis on real EuroSAT test images (tiny random model; skips without ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowres_clip import plots
from lowres_clip.analysis import browser, clustering, improvements, metrics, topk
from lowres_clip.analysis.attention import AttentionSource
from lowres_clip.datasets import ImageDataset, load_dataset
from lowres_clip.features import encode_images, encode_text_classifier
from lowres_clip.models import load_clip
from lowres_clip.runs import Predictions


def _predictions(ds, samples, seed: int, method: str):
    torch.manual_seed(seed)
    bundle = load_clip("tiny-vit", device="cpu")
    with torch.no_grad():
        text = encode_text_classifier(bundle.model, bundle.tokenizer, ds.classnames, ["a satellite photo of {}."])
    feats = encode_images(bundle.model, ImageDataset(ds.image_root, samples, bundle.preprocess_eval), batch_size=32)
    pred = Predictions(logits=(100 * feats @ text.T).numpy(), labels=np.array([s.label for s in samples]),
                       paths=[s.path for s in samples], classnames=ds.classnames, image_root=str(ds.image_root),
                       run_key=f"eurosat/tiny-vit-random/{method}/k0-s{seed}", features=feats.numpy())
    return pred, AttentionSource.from_bundle(bundle, text)


@pytest.mark.shared_data
def test_analysis_on_real_eurosat(shared_data, tmp_path):
    ds = load_dataset("eurosat", shared_data)
    per_class: dict[int, list] = {}
    for s in ds.split("test"):
        per_class.setdefault(s.label, [])
        if len(per_class[s.label]) < 3:
            per_class[s.label].append(s)
    samples = [s for c in sorted(per_class) for s in per_class[c]]
    a, src_a = _predictions(ds, samples, 0, "zero_shot")
    b, src_b = _predictions(ds, samples, 1, "lora")
    root = tmp_path / "figures"
    Predictions.load(a.save(tmp_path / "a.npz"))  # the analysis input survives a save/load round trip
    paths = metrics.write_report(a, root=root)
    paths += topk.write_topk(a, k=4, attention=src_a, root=root)
    coords = clustering.embed_2d(a.features, method="pca")
    paths += plots.save_figure(clustering.cluster_figure(a, coords), a.run_key, "clusters", root=root)
    paths += improvements.write_improvements(a, b, k=3, attention_a=src_a, attention_b=src_b, root=root)
    paths += browser.export_per_class(a, k=3, shows=("incorrect",), root=root)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert len(list((root / a.run_key / "browser").glob("*.png"))) == len(ds.classnames)
    assert 0.0 <= metrics.accuracy(a) <= 1.0
