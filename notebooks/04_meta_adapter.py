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
# # 04 · Meta-Adapter
#
# Each class's text embedding attends to the K support image features (bias-free query/key projections, sigmoid gate, residual); trained episodically on the K-shot set and evaluated with it as support. The encoders stay frozen, so evaluation reads cached image features.

# %% tags=["parameters"]
# Parameters (papermill injects its values after this cell). None: the profile's value.
profile = "cpu"          # profile: paper | cpu | smoke, or a path to a YAML profile
dataset = None           # eurosat | circuits | imagefolder:<path>
data_root = None         # folder holding the dataset (None: $LOWRES_CLIP_DATA, else ../shared/data)
model = None             # open_clip model: ViT-B-16 | EffLite0-MiniLM | tiny-vit ...
weights = None           # pretrained tag (openai), checkpoint path, embedded or random
shots = None             # K, or a list of K (one run per K and seed)
seed = None              # seed, or a list of seeds
smoke = None             # True: tiny end-to-end run (tests)
device = None            # auto | cpu | cuda
runs_root = None         # records, predictions, checkpoints (None: <repo>/runs)
figures_root = None      # figures and tables (None: <repo>/figures)
cache_root = None        # feature / augmentation cache (None: $LOWRES_CLIP_CACHE or <repo>/.cache)
method = "meta_adapter"  # meta_adapter
meta_adapter = {}        # Meta-Adapter options, e.g. {"dropout": 0.0, "train": {"lr": 1e-4}}
train = {}               # training options, e.g. {"iterations": 500}
overrides = {}           # any other RunConfig value, dotted keys allowed: {"train.iterations": 50}

# %%
from lowres_clip import pipeline
from lowres_clip.spec import resolve_runs

# The runs: profile defaults, then the parameters above (unknown keys are errors); one RunSpec
# per (K, seed) (its key, settings hash and folders). The first one is described here.
runs = resolve_runs(profile, overrides, dataset=dataset, data_root=data_root, model=model,
                    weights=weights, shots=shots, seed=seed, smoke=smoke, device=device,
                    runs_root=runs_root, figures_root=figures_root, cache_root=cache_root,
                    method=method, meta_adapter=meta_adapter, train=train)
run = runs[0]
pipeline.print_caveats(run)
pipeline.describe(run).to_frame("value")

# %%
results = pipeline.run_all(runs)  # runs finished with the same settings are loaded, not rerun
results.table

# %%
results.figure()  # accuracy vs shots over the grid (one K: per-class accuracy)

# %%
pipeline.run_figures(results.predictions())["confusion"]

# %% [markdown]
# **What to look at.** Whether refining the class embeddings with the support set helps the classes zero-shot gets wrong (compare the per-class accuracy with 01), and how it compares with the linear probe, which uses the same frozen features.
