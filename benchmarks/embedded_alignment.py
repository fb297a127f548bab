"""Benchmark of the embedded CPU model ``EffLite0-MiniLM`` (see ``lowres_clip.embedded``).

Measures, in one process:

1. build time: a forced build from the two PyPI packages into a temporary cache;
2. text -> image alignment on held-out ImageNet classes: fit the ridge text projection on 800 classes
   (penalty by class-wise CV inside those 800), then for each of the 200 held-out classes rank its
   classifier row (the image-side prototype) among the 200 by cosine to its text embedding
   (chance top-1 = 0.5 %); mean over ``--seeds`` random splits;
3. image-encoding throughput (224 px, batch 32, float32, this machine's threads) with and without
   channels_last;
4. with ``--eurosat`` and EuroSAT under the data root: 16-shot logistic-regression accuracy on a random
   subsample of the test split, and zero-shot accuracy on the same images (near chance by design).

    python benchmarks/embedded_alignment.py [--seeds 5] [--eurosat] [--test-images 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import numpy as np
import torch

from lowres_clip import embedded
from lowres_clip.embedded import EMBEDDED_CAVEAT, EmbeddedBuildConfig, alignment_report, load_alignment_data


def throughput(model: torch.nn.Module, channels_last: bool, batch: int = 32, reps: int = 3) -> float:
    """Images per second of the image tower on random 224 px inputs (best of ``reps``).

    Calls ``trunk`` and ``head`` directly, bypassing the channels_last input hook of ``load_embedded``.
    """
    visual = model.visual.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = torch.randn(batch, 3, 224, 224)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        visual.head(visual.trunk(x))  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            visual.head(visual.trunk(x))
            best = min(best, time.perf_counter() - t0)
    return batch / best


def eurosat_probe(bundle, data_root: str | None, test_images: int, seed: int = 0) -> dict[str, float] | None:
    """16-shot logistic regression and zero-shot top-1 on ``test_images`` random EuroSAT test images."""
    from sklearn.linear_model import LogisticRegression

    from lowres_clip.datasets import DatasetError, ImageDataset, default_data_root, load_dataset
    from lowres_clip.features import encode_images, encode_text_classifier
    from lowres_clip.prompts import get_templates
    from lowres_clip.sampling import few_shot

    try:
        ds = load_dataset("eurosat", data_root or default_data_root())
    except DatasetError as exc:
        print(f"EuroSAT skipped: {exc}")
        return None
    shots = few_shot(ds, 16, seed)
    test = random.Random(seed).sample(ds.split("test"), min(test_images, len(ds.split("test"))))
    encode = lambda samples, desc: encode_images(bundle.model, ImageDataset(ds.image_root, samples, bundle.preprocess_eval), 64, desc=desc)  # noqa: E731
    x_train, x_val, x_test = (encode(s, d).numpy() for s, d in ((shots.train, "16-shot train"), (shots.val, "val"), (test, "test")))
    y_train, y_val, y_test = (np.array([s.label for s in ss]) for ss in (shots.train, shots.val, test))
    # regularisation chosen on the few-shot validation split only
    probes = [LogisticRegression(C=c, max_iter=3000).fit(x_train, y_train) for c in (0.1, 1.0, 10.0, 100.0)]
    probe = max(probes, key=lambda p: (p.predict(x_val) == y_val).mean())
    with torch.no_grad():
        text = encode_text_classifier(bundle.model, bundle.tokenizer, ds.classnames, get_templates(ds.name))
    zero_shot = (torch.from_numpy(x_test) @ text.T).argmax(1).numpy()
    return {
        "n_test": len(test),
        "linear_probe_16shot": float((probe.predict(x_test) == y_test).mean()),
        "probe_C": float(probe.C),
        "zero_shot": float((zero_shot == y_test).mean()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="random 800/200 class splits to average")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--eurosat", action="store_true", help="also run the 16-shot EuroSAT probe")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--test-images", type=int, default=1000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = embedded.build_embedded(cache_dir=tmp, force=True)
        build_s = time.perf_counter() - t0
        info = embedded.read_build_info(folder)
        text_emb, prototypes = load_alignment_data(folder)
        t0 = time.perf_counter()
        bundle = embedded.load_embedded(device="cpu", cache_dir=tmp)
        load_s = time.perf_counter() - t0
    print(f"build: {build_s:.1f} s ({threads} threads; ridge alpha {info['ridge_alpha']}); "
          f"cached load: {load_s:.2f} s")

    config = EmbeddedBuildConfig(alphas=(3.0, 10.0, 30.0, 100.0))  # penalty chosen by CV inside the 800
    reports = [alignment_report(text_emb, prototypes, n_test=200, seed=s, config=config) for s in range(args.seeds)]
    for s, r in enumerate(reports):
        print(f"held-out split {s}: top-1 {r.top1:.3f}  top-5 {r.top5:.3f}  median rank {r.median_rank:.0f}  "
              f"mean rank {r.mean_rank:.1f}  (alpha {r.alpha:g})")
    top1 = float(np.mean([r.top1 for r in reports]))
    top5 = float(np.mean([r.top5 for r in reports]))

    ips_cl = throughput(bundle.model, channels_last=True)
    ips_plain = throughput(bundle.model, channels_last=False)
    embedded.use_channels_last(bundle.model)
    print(f"image encoding ({threads} threads, batch 32, 224 px): channels_last {ips_cl:.1f} img/s, "
          f"contiguous {ips_plain:.1f} img/s")

    euro = ""
    if args.eurosat:
        res = eurosat_probe(bundle, args.data_root, args.test_images)
        if res:
            print(f"EuroSAT ({res['n_test']} test images): 16-shot logistic regression {res['linear_probe_16shot']:.3f} "
                  f"(C={res['probe_C']:g} by val), zero-shot {res['zero_shot']:.3f}")
            euro = f", EuroSAT 16-shot LR {res['linear_probe_16shot']:.3f} / zero-shot {res['zero_shot']:.3f}"
    print(f"caveat: {EMBEDDED_CAVEAT}")
    print(f"SUMMARY embedded {embedded.EMBEDDED_MODEL}: held-out ImageNet text->prototype top-1 {top1:.3f} "
          f"(top-5 {top5:.3f}, 200 classes, {args.seeds} splits), {ips_cl:.0f} img/s channels_last vs "
          f"{ips_plain:.0f} plain on {threads} threads, build {build_s:.0f} s{euro}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
