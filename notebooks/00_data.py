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
# # 00 · Data: load the dataset, sample the K shots, look at them
#
# Loads the dataset (official split), samples K training images per class (and `min(K, 4)` validation images) with the seed, saves the split so every method uses the same shots, and shows the class counts and a few examples.

# %% tags=["parameters"]
# Parameters (papermill injects its values after this cell). None: the profile's value.
profile = "cpu"      # profile: paper | cpu | smoke, or a path to a YAML profile
dataset = None       # eurosat | circuits | imagefolder:<path>
data_root = None     # folder holding the dataset (None: $LOWRES_CLIP_DATA, else ../shared/data)
model = None         # open_clip model: ViT-B-16 | EffLite0-MiniLM | tiny-vit ...
weights = None       # pretrained tag (openai), checkpoint path, embedded or random
shots = None         # K, or a list of K (one run per K and seed)
seed = None          # seed, or a list of seeds
smoke = None         # True: tiny end-to-end run (tests)
device = None        # auto | cpu | cuda
runs_root = None     # records, predictions, checkpoints (None: <repo>/runs)
figures_root = None  # figures and tables (None: <repo>/figures)
cache_root = None    # feature / augmentation cache (None: $LOWRES_CLIP_CACHE or <repo>/.cache)
overrides = {}       # any other RunConfig value, dotted keys allowed: {"train.iterations": 50}

# %%
from lowres_clip import pipeline
from lowres_clip.spec import resolve_runs

# The runs: profile defaults, then the parameters above (unknown keys are errors); one RunSpec
# per (K, seed) (its key, settings hash and folders). The first one is described here.
runs = resolve_runs(profile, overrides, dataset=dataset, data_root=data_root, model=model,
                    weights=weights, shots=shots, seed=seed, smoke=smoke, device=device,
                    runs_root=runs_root, figures_root=figures_root, cache_root=cache_root)
run = runs[0]
pipeline.print_caveats(run)
pipeline.describe(run).to_frame("value")

# %%
overviews = pipeline.data_overviews(runs)
overview = overviews[0]
overview.counts

# %%
overview.figures["class_counts"]

# %%
overview.figures["examples"]

# %% [markdown]
# **What to look at.** The class counts: how balanced are train/val/test, and did every class get its K shots (a note is printed when a class has fewer images)? For Circuits, the test set is strongly long-tailed, so balanced accuracy matters as much as top-1. The examples show what the model sees. Files: `figures/{dataset}/data/k{K}-s{seed}/`.
