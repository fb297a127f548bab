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
# # 02 · LoRA (CLIP-LoRA)
#
# Low-rank adapters on q, k, v of every attention block (ViT and text towers; a ResNet tower: its attention pool; an attention-free CNN: its 1x1 convolutions), scaled alpha/sqrt(r) as in CLIP-LoRA, trained with the one training loop. Which checkpoint is evaluated on test is the run's selection rule (`train.selection`: `last` as CLIP-LoRA, or `best_val`; the record names the rule and the step kept). Combinations containing LoRA (`lora+bitfit+meta_adapter`) run here too.

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
method = "lora"      # lora, or a combination such as lora+bitfit+meta_adapter
lora = {}            # LoRA options, e.g. {"rank": 4, "encoders": "vision"}
train = {}           # training options, e.g. {"iterations": 500, "lr": 2e-4}
overrides = {}       # any other RunConfig value, dotted keys allowed: {"train.iterations": 50}

# %%
from lowres_clip import pipeline
from lowres_clip.spec import resolve_runs

# The runs: profile defaults, then the parameters above (unknown keys are errors); one RunSpec
# per (K, seed) (its key, settings hash and folders). The first one is described here.
runs = resolve_runs(profile, overrides, dataset=dataset, data_root=data_root, model=model,
                    weights=weights, shots=shots, seed=seed, smoke=smoke, device=device,
                    runs_root=runs_root, figures_root=figures_root, cache_root=cache_root,
                    method=method, lora=lora, train=train)
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
# **What to look at.** The gain over zero-shot and the linear probe at the same K (`08_report_tables`), `val_top1` vs test top-1 (over-fitting to the few validation shots), and which classes remain confused. The record keeps the trainable parameter counts and the training history.
