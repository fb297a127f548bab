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
# # 08 · Report tables
#
# Aggregates every finished run of the dataset over seeds (mean ± std) into CSV, Markdown and LaTeX tables, with a bar chart of accuracy per method grouped by K.

# %% tags=["parameters"]
# Parameters (papermill injects its values after this cell). None: the profile's value.
profile = "cpu"      # profile: paper | cpu | smoke, or a path to a YAML profile
dataset = None       # eurosat | circuits | imagefolder:<path>
data_root = None     # folder holding the dataset (None: $LOWRES_CLIP_DATA, else ../shared/data)
model = None         # open_clip model: ViT-B-16 | EffLite0-MiniLM | tiny-vit ...
weights = None       # pretrained tag (openai), checkpoint path, embedded or random
shots = None         # K training images per class
seed = None          # seed of the shot sampling and training
smoke = None         # True: tiny end-to-end run (tests)
device = None        # auto | cpu | cuda
runs_root = None     # records, predictions, checkpoints (None: <repo>/runs)
figures_root = None  # figures and tables (None: <repo>/figures)
cache_root = None    # feature / augmentation cache (None: $LOWRES_CLIP_CACHE or <repo>/.cache)
overrides = {}       # any other RunConfig value, dotted keys allowed: {"train.iterations": 50}

# %%
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
tables = pipeline.report_tables(run)
for path in tables.paths:
    print(path)
tables.display

# %%
from IPython.display import display

for name in ("top1_vs_shots", "balanced_vs_shots", "methods_by_shots"):  # a long-tailed study alone has none
    if name in tables.figures:
        display(tables.figures[name])

# %% [markdown]
# Runs with an imbalance ratio (`long_tail_ratio`, e.g. profile `cpu-longtail`) are reported apart: one row per method and ratio (ratio 1: the balanced run at the same K), head / medium / tail accuracy, collapse and the modality gap.

# %%
if tables.longtail is not None:
    display(tables.figures["longtail_vs_ratio"])
    display(tables.longtail)

# %% [markdown]
# **What to look at.** The accuracy-vs-shots curves: the gain of each method over zero-shot and the linear probe (dashed) at each K, and the band of ±1 std over seeds (few shots: wide bands). Rows are grouped by the settings hash of their records, so runs that differ in anything but the seed are separate rows, named by what sets them apart (e.g. `lora (lora.rank=4)`); `n_seeds` shows missing runs and `selection` / `template` say how each number was obtained. A `STALE:` line names a record the current code would not produce for the same command: rerun it before comparing its numbers. Files: `figures/{dataset}/tables/results.{csv,md,tex}`, `runs.csv` (one row per run) and `{metric}_vs_shots.{png,html}` (hover shows mean, std, n_seeds). Long-tailed runs: `longtail.{csv,md,tex}` and `longtail_vs_ratio.png` (where the tail falls behind the head as the ratio grows, and whether a remedy closes the gap).
