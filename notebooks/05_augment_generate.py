# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Generate label-preserving and label-breaking images
#
# Zhang, Doughty & Snoek (CVPR 2024): image-to-image diffusion with little noise keeps the label (extra supervised images), with more noise it breaks it (pairs for the unsupervised breaking loss). The method label names the generator: `lora+aug-classic` uses mild vs strong image transforms instead (runs without diffusion weights), `lora+aug-diffusion` Stable Diffusion img2img. Images already made are skipped.

# %% tags=["parameters"]
# Parameters (papermill injects its values after this cell). None: the profile's value.
profile = "cpu"              # profile: paper | cpu | smoke, or a path to a YAML profile
dataset = None               # eurosat | circuits | imagefolder:<path>
data_root = None             # folder holding the dataset (None: $LOWRES_CLIP_DATA, else ../shared/data)
model = None                 # open_clip model: ViT-B-16 | EffLite0-MiniLM | tiny-vit ...
weights = None               # pretrained tag (openai), checkpoint path, embedded or random
shots = None                 # K, or a list of K (one run per K and seed)
seed = None                  # seed, or a list of seeds
smoke = None                 # True: tiny end-to-end run (tests)
device = None                # auto | cpu | cuda
runs_root = None             # records, predictions, checkpoints (None: <repo>/runs)
figures_root = None          # figures and tables (None: <repo>/figures)
cache_root = None            # feature / augmentation cache (None: $LOWRES_CLIP_CACHE or <repo>/.cache)
method = "lora+aug-classic"  # the run these images are for: method + aug-{classic|diffusion}[-{use}]
generator = {}               # generator options, e.g. {"num_samples": 5, "breaking_strengths": [0.6, 0.7, 0.8]}
overrides = {}               # any other RunConfig value, dotted keys allowed: {"train.iterations": 50}

# %%
import pandas as pd

from lowres_clip import pipeline
from lowres_clip.spec import resolve_runs

# The runs: profile defaults, then the parameters above (unknown keys are errors); one RunSpec
# per (K, seed) (its key, settings hash and folders). The first one is described here.
runs = resolve_runs(profile, overrides, dataset=dataset, data_root=data_root, model=model,
                    weights=weights, shots=shots, seed=seed, smoke=smoke, device=device,
                    runs_root=runs_root, figures_root=figures_root, cache_root=cache_root,
                    method=method, augmentation={"generator": generator})
run = runs[0]
pipeline.print_caveats(run)
pipeline.describe(run).to_frame("value")

# %%
aug = pipeline.generate_all(runs)[0]
print(f"{aug.generator}: {len(aug.manifest)} images in {aug.out_dir}")
pd.Series([r.kind for r in aug.manifest]).value_counts().to_frame("images")

# %%
aug.figure

# %% [markdown]
# **What to look at.** Preserving variants should still clearly show their class; breaking variants should not. The gallery title names the generator: classic transforms are a stand-in, not the paper's diffusion model. The manifest (`manifest.jsonl`) records source, strength, seed and model id of every image.
