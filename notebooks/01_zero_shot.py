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
# # 01 · Training-free baselines: zero-shot CLIP and the linear probe
#
# `method = "zero_shot"` classifies by cosine similarity to the class prompts (logit scale 100); `method = "linear_probe"` fits a logistic regression on the frozen image features of the K shots (C chosen on validation). Both are the baselines every adapted method is compared with; the study runs this notebook once for each.

# %% tags=["parameters"]
# Parameters (papermill injects its values after this cell). None: the profile's value.
profile = "cpu"       # profile: paper | cpu | smoke, or a path to a YAML profile
dataset = None        # eurosat | circuits | imagefolder:<path>
data_root = None      # folder holding the dataset (None: $LOWRES_CLIP_DATA, else ../shared/data)
model = None          # open_clip model: ViT-B-16 | EffLite0-MiniLM | tiny-vit ...
weights = None        # pretrained tag (openai), checkpoint path, embedded or random
shots = None          # K, or a list of K (one run per K and seed)
seed = None           # seed, or a list of seeds
smoke = None          # True: tiny end-to-end run (tests)
device = None         # auto | cpu | cuda
runs_root = None      # records, predictions, checkpoints (None: <repo>/runs)
figures_root = None   # figures and tables (None: <repo>/figures)
cache_root = None     # feature / augmentation cache (None: $LOWRES_CLIP_CACHE or <repo>/.cache)
method = "zero_shot"  # zero_shot | linear_probe
overrides = {}        # any other RunConfig value, dotted keys allowed: {"train.iterations": 50}

# %%
from lowres_clip import pipeline
from lowres_clip.spec import resolve_runs

# The runs: profile defaults, then the parameters above (unknown keys are errors); one RunSpec
# per (K, seed) (its key, settings hash and folders). The first one is described here.
runs = resolve_runs(profile, overrides, dataset=dataset, data_root=data_root, model=model,
                    weights=weights, shots=shots, seed=seed, smoke=smoke, device=device,
                    runs_root=runs_root, figures_root=figures_root, cache_root=cache_root,
                    method=method)
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
# **What to look at.** Top-1 vs balanced accuracy (large gaps mean a few classes dominate), the confusion matrix (which classes the prompts confuse) and the per-class accuracy. With the embedded CPU model zero-shot is near chance by construction (see the caveat above); the linear probe shows how good its image features are. Files: `runs/{key}/{variant}/` (the variant is the settings hash shown above) and `figures/{key}/{variant}/`.
