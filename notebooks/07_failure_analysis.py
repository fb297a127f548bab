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
# # 07 · Failure analysis: what does adaptation fix, and what still fails?
#
# Compares a baseline run (A) with an adapted run (B) on the same test set: samples B fixes, ranked by the entropy drop; regressions; the most confident mistakes; feature clusters; attention maps; and the per-class failure browser (live widget in JupyterLab; headless runs write one PNG per class and correct/incorrect). Missing runs are run first.

# %% tags=["parameters"]
# Parameters (papermill injects its values after this cell). None: the profile's value.
profile = "cpu"         # profile: paper | cpu | smoke, or a path to a YAML profile
dataset = None          # eurosat | circuits | imagefolder:<path>
data_root = None        # folder holding the dataset (None: $LOWRES_CLIP_DATA, else ../shared/data)
model = None            # open_clip model: ViT-B-16 | EffLite0-MiniLM | tiny-vit ...
weights = None          # pretrained tag (openai), checkpoint path, embedded or random
shots = None            # K training images per class
seed = None             # seed of the shot sampling and training
smoke = None            # True: tiny end-to-end run (tests)
device = None           # auto | cpu | cuda
runs_root = None        # records, predictions, checkpoints (None: <repo>/runs)
figures_root = None     # figures and tables (None: <repo>/figures)
cache_root = None       # feature / augmentation cache (None: $LOWRES_CLIP_CACHE or <repo>/.cache)
baseline = "zero_shot"  # run A: a method label
adapted = "lora"        # run B: a method label (e.g. lora+aug-classic)
k = 8                   # samples per grid
attention = True        # draw attention maps (Grad-CAM / attention rollout)
embedding = None        # umap | pca (None: pca for smoke runs, else umap)
overrides = {}          # any other RunConfig value, dotted keys allowed: {"train.iterations": 50}

# %%
import pandas as pd
from IPython.display import Image, display

from lowres_clip import pipeline
from lowres_clip.spec import resolve_run

# The run: profile defaults, then the parameters above (unknown keys are errors); its key,
# settings hash and folders come from its RunSpec.
run = resolve_run(profile, overrides, dataset=dataset, data_root=data_root, model=model,
                  weights=weights, shots=shots, seed=seed, smoke=smoke, device=device,
                  runs_root=runs_root, figures_root=figures_root, cache_root=cache_root)
pipeline.print_caveats(run)
pipeline.describe(run).to_frame("value")

# %%
report = pipeline.failure_analysis(run, baseline, adapted, k=k, attention=attention, embedding=embedding)
display(pd.Series({key: report.summary[key] for key in ('baseline', 'adapted', 'fixed', 'broken', 'still_wrong')}).to_frame('value'))
report.improvements.head(10)

# %%
figures = report.figures()
for name in (report.improvements_name, "topk_incorrect", "clusters"):
    if name in figures:
        display(Image(filename=str(figures[name])))

# %%
# Per-class failure browser: pick a run, a class, correct/incorrect and k.
browser = pipeline.failure_browser(report, k=k)
browser

# %% [markdown]
# **What to look at.** The top improvements (where A was unsure and B is sure), the classes with most remaining errors in the browser, and whether the attention of B moved to the evidence. Static copies: `figures/{key B}/{variant B}/browser/*.png`, the ranking `improvements_vs_{A}-{variant A}.csv`, the summary `failure_vs_{A}-{variant A}.json`.
