"""Write the numbered notebooks from this file (``python notebooks/_build.py``), without outputs.

Each notebook: a title, exactly one cell tagged ``parameters`` (papermill), the derived values in
the next cell (:func:`lowres_clip.config.resolve_config`), a few calls into :mod:`lowres_clip.pipeline`
with figures inline, and a closing note on what to look at. Edit the notebooks here, not in
Jupyter, so they stay small, output-free and identical to what ``tests/test_notebooks.py`` checks
(``python notebooks/_build.py --check`` fails when a notebook differs from this file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# Parameters every notebook shares: (name, default, comment). None = "take the profile's value".
COMMON = [
    ("profile", '"cpu"', "profile: paper | cpu | smoke, or a path to a YAML profile"),
    ("dataset", "None", "eurosat | circuits | imagefolder:<path>"),
    ("data_root", "None", "folder holding the dataset (None: $LOWRES_CLIP_DATA, else ../shared/data)"),
    ("model", "None", "open_clip model: ViT-B-16 | EffLite0-MiniLM | tiny-vit ..."),
    ("weights", "None", "pretrained tag (openai), checkpoint path, embedded or random"),
    ("shots", "None", "K training images per class"),
    ("seed", "None", "seed of the shot sampling and training"),
    ("smoke", "None", "True: tiny end-to-end run (tests)"),
    ("device", "None", "auto | cpu | cuda"),
    ("runs_root", "None", "records, predictions, checkpoints (None: <repo>/runs)"),
    ("figures_root", "None", "figures and tables (None: <repo>/figures)"),
    ("cache_root", "None", "feature / augmentation cache (None: $LOWRES_CLIP_CACHE or <repo>/.cache)"),
    ("overrides", "{}", 'any other RunConfig value, dotted keys allowed: {"train.iterations": 50}'),
]
COMMON_NAMES = [name for name, _, _ in COMMON if name not in ("profile", "overrides")]

SETUP = """\
from lowres_clip import pipeline
from lowres_clip.config import resolve_config
"""


def parameters_source(extra: list[tuple[str, str, str]]) -> str:
    """The ``parameters`` cell: common parameters, then the notebook's own."""
    rows = COMMON[:-1] + extra + COMMON[-1:]
    width = max(len(f"{n} = {v}") for n, v, _ in rows)
    lines = ["# Parameters (papermill injects its values after this cell). None: the profile's value."]
    lines += [f"{f'{n} = {v}':<{width}}  # {c}" for n, v, c in rows]
    return "\n".join(lines)


def derived_source(config_args: list[str], imports: str = "") -> str:
    """The cell after the parameters: resolve the run configuration and show it.

    ``config_args``: notebook parameters passed on by name, or ``"name=expression"`` items.
    """
    args = [f"{n}={n}" for n in COMMON_NAMES] + [a if "=" in a else f"{a}={a}" for a in config_args]
    lines, line = [], "cfg = resolve_config(profile, overrides"
    for a in args:
        if len(line) + len(a) + 2 > 100:
            lines.append(line + ",")
            line = " " * len("cfg = resolve_config(") + a
        else:
            line += ", " + a
    lines.append(line + ")")
    body = imports + SETUP + "\n# Derived values: profile defaults, then the parameters above (unknown keys are errors).\n"
    body += "\n".join(lines) + "\n"
    body += "pipeline.print_caveats(cfg)\npipeline.describe(cfg).to_frame(\"value\")"
    return body


NOTEBOOKS: dict[str, dict] = {
    "00_data": {
        "title": "# 00 · Data: load the dataset, sample the K shots, look at them\n\n"
                 "Loads the dataset (official split), samples K training images per class (and `min(K, 4)` "
                 "validation images) with the seed, saves the split so every method uses the same shots, "
                 "and shows the class counts and a few examples.",
        "extra": [],
        "config": [],
        "cells": [
            "ds, split = pipeline.prepare_data(cfg)\n"
            "overview = pipeline.data_overview(cfg, ds, split)\n"
            'print(f"{ds.name}: {ds.num_classes} classes; split {split.name}: {len(split.train)} train / '
            '{len(split.val)} val shots; {len(ds.split(\'test\'))} test images")\n'
            'print("saved split:", overview.split_file)\n'
            "for note in split.report:\n"
            '    print("note:", note)\n'
            "overview.counts",
            'overview.figures["class_counts"]',
            'overview.figures["examples"]',
        ],
        "closing": "**What to look at.** The class counts: how balanced are train/val/test, and did every "
                   "class get its K shots (a note is printed when a class has fewer images)? For Circuits, "
                   "the test set is strongly long-tailed, so balanced accuracy matters as much as top-1. "
                   "The examples show what the model sees. Files: `figures/{dataset}/data/k{K}-s{seed}/`.",
    },
    "01_zero_shot": {
        "title": "# 01 · Training-free baselines: zero-shot CLIP and the linear probe\n\n"
                 "`method = \"zero_shot\"` classifies by cosine similarity to the class prompts (logit scale "
                 "100); `method = \"linear_probe\"` fits a logistic regression on the frozen image features of "
                 "the K shots (C chosen on validation). Both are the baselines every adapted method is "
                 "compared with; the study runs this notebook once for each.",
        "extra": [("method", '"zero_shot"', "zero_shot | linear_probe")],
        "config": ["method"],
        "run": True,
        "closing": "**What to look at.** Top-1 vs balanced accuracy (large gaps mean a few classes dominate), "
                   "the confusion matrix (which classes the prompts confuse) and the per-class accuracy. "
                   "With the embedded CPU model zero-shot is near chance by construction (see the caveat "
                   "above); the linear probe shows how good its image features are. "
                   "Files: `runs/{run_key}/` and `figures/{run_key}/`.",
    },
    "02_lora": {
        "title": "# 02 · LoRA (CLIP-LoRA)\n\n"
                 "Low-rank adapters on the q, k, v projections of the attention blocks (1x1 convolutions "
                 "for a CNN image tower), trained with the one training loop; the checkpoint with the best "
                 "validation accuracy is kept and evaluated on test. Combinations containing LoRA "
                 "(`lora+bitfit+meta_adapter`) run here too.",
        "extra": [("method", '"lora"', "lora, or a combination such as lora+bitfit+meta_adapter"),
                  ("lora", "{}", 'LoRA options, e.g. {"rank": 4, "encoders": "vision"}'),
                  ("train", "{}", 'training options, e.g. {"iterations": 500, "lr": 2e-4}')],
        "config": ["method", "lora", "train"],
        "run": True,
        "closing": "**What to look at.** The gain over zero-shot and the linear probe at the same K "
                   "(`08_report_tables`), `val_top1` vs test top-1 (over-fitting to the few validation "
                   "shots), and which classes remain confused. The record keeps the trainable parameter "
                   "counts and the training history.",
    },
    "03_bitfit": {
        "title": "# 03 · BitFit\n\n"
                 "Only the bias terms are trained (all of them, or the attention / MLP / norm groups), in "
                 "the image tower, the text tower or both.",
        "extra": [("method", '"bitfit"', "bitfit, or e.g. bitfit+meta_adapter"),
                  ("bitfit", "{}", 'BitFit options, e.g. {"encoders": "vision", "groups": ["norm"]}'),
                  ("train", "{}", 'training options, e.g. {"iterations": 500}')],
        "config": ["method", "bitfit", "train"],
        "run": True,
        "closing": "**What to look at.** How close BitFit (very few parameters) gets to LoRA, per class. "
                   "Note that EfficientNet's convolutions have no biases: on the embedded model BitFit "
                   "trains BatchNorm biases in the image tower.",
    },
    "04_meta_adapter": {
        "title": "# 04 · Meta-Adapter\n\n"
                 "Each class's text embedding attends to the K support image features (bias-free query/key "
                 "projections, sigmoid gate, residual); trained episodically on the K-shot set and evaluated "
                 "with it as support. The encoders stay frozen, so evaluation reads cached image features.",
        "extra": [("method", '"meta_adapter"', "meta_adapter"),
                  ("meta_adapter", "{}", 'Meta-Adapter options, e.g. {"dropout": 0.4}'),
                  ("train", "{}", 'training options, e.g. {"iterations": 500}')],
        "config": ["method", "meta_adapter", "train"],
        "run": True,
        "closing": "**What to look at.** Whether refining the class embeddings with the support set helps "
                   "the classes zero-shot gets wrong (compare the per-class accuracy with 01), and how it "
                   "compares with the linear probe, which uses the same frozen features.",
    },
    "05_augment_generate": {
        "title": "# 05 · Generate label-preserving and label-breaking images\n\n"
                 "Zhang, Doughty & Snoek (CVPR 2024): image-to-image diffusion with little noise keeps the "
                 "label (extra supervised images), with more noise it breaks it (pairs for the unsupervised "
                 "breaking loss). The method label names the generator: `lora+aug-classic` uses mild vs "
                 "strong image transforms instead (runs without diffusion weights), `lora+aug-diffusion` "
                 "Stable Diffusion img2img. Images already made are skipped.",
        "extra": [("method", '"lora+aug-classic"', "the run these images are for: method + aug-{classic|diffusion}[-{use}]"),
                  ("generator", "{}", 'generator options, e.g. {"num_samples": 5, "breaking_strengths": [0.6, 0.7, 0.8]}')],
        "config": ["method", 'augmentation={"generator": generator}'],
        "imports": "import pandas as pd\n\n",
        "cells": [
            "aug = pipeline.generate_augmentations(cfg)\n"
            'print(f"{aug.generator}: {len(aug.manifest)} images in {aug.out_dir}")\n'
            "pd.Series([r.kind for r in aug.manifest]).value_counts().to_frame(\"images\")",
            "aug.figure",
        ],
        "closing": "**What to look at.** Preserving variants should still clearly show their class; breaking "
                   "variants should not. The gallery title names the generator: classic transforms are a "
                   "stand-in, not the paper's diffusion model. The manifest (`manifest.jsonl`) records "
                   "source, strength, seed and model id of every image.",
    },
    "06_augment_train": {
        "title": "# 06 · Train with generated images\n\n"
                 "An adapted method (`lora+aug-classic`, `lora+aug-diffusion`, ...) trained with the "
                 "label-preserving images in the supervised loss and the label-breaking pairs in the breaking "
                 "loss `L = L_task + lambda * L_breaking` (generated first if missing, see 05).",
        "extra": [("method", '"lora+aug-classic"', "method + aug-{classic|diffusion}[-{preserving|breaking}]"),
                  ("generator", "{}", "generator options (as in 05)"),
                  ("train", "{}", 'training options, e.g. {"breaking_lambda": 0.1, "preserving_p": 0.3}')],
        "config": ["method", 'augmentation={"generator": generator}', "train"],
        "cells": [
            "aug = pipeline.generate_augmentations(cfg)\naug.figure",
        ],
        "run": True,
        "after_run": ["pipeline.cell_results(cfg)"],
        "closing": "**What to look at.** The table compares this run with every finished run of the same "
                   "K and seed: does augmentation help the adapted method, and on which classes (per-class "
                   "accuracy)? Label-breaking pairs only act on a trainable image tower.",
    },
    "07_failure_analysis": {
        "title": "# 07 · Failure analysis: what does adaptation fix, and what still fails?\n\n"
                 "Compares a baseline run (A) with an adapted run (B) on the same test set: samples B fixes, "
                 "ranked by the entropy drop; regressions; the most confident mistakes; feature clusters; "
                 "attention maps; and the per-class failure browser (live widget in JupyterLab; headless "
                 "runs write one PNG per class and correct/incorrect). Missing runs are run first.",
        "extra": [("baseline", '"zero_shot"', "run A: a method label"),
                  ("adapted", '"lora"', "run B: a method label (e.g. lora+aug-classic)"),
                  ("k", "8", "samples per grid"),
                  ("attention", "True", "draw attention maps (Grad-CAM / attention rollout)"),
                  ("embedding", "None", "umap | pca (None: pca for smoke runs, else umap)")],
        "config": [],
        "imports": "import pandas as pd\nfrom IPython.display import Image, display\n\n",
        "cells": [
            "report = pipeline.failure_analysis(cfg, baseline, adapted, k=k, attention=attention, embedding=embedding)\n"
            "display(pd.Series({key: report.summary[key] for key in ('baseline', 'adapted', 'fixed', 'broken', 'still_wrong')}).to_frame('value'))\n"
            "report.improvements.head(10)",
            "figures = report.figures()\n"
            "for name in (f\"improvements_vs_{report.baseline.label}\", \"topk_incorrect\", \"clusters\"):\n"
            "    if name in figures:\n"
            "        display(Image(filename=str(figures[name])))",
            "# Per-class failure browser: pick a run, a class, correct/incorrect and k.\n"
            "browser = pipeline.failure_browser(report, k=k)\n"
            "browser",
        ],
        "closing": "**What to look at.** The top improvements (where A was unsure and B is sure), the classes "
                   "with most remaining errors in the browser, and whether the attention of B moved to the "
                   "evidence. Static copies: `figures/{run_key_B}/browser/*.png`, the ranking "
                   "`improvements_vs_{A}.csv`, the summary `failure_vs_{A}.json`.",
    },
    "08_report_tables": {
        "title": "# 08 · Report tables\n\n"
                 "Aggregates every finished run of the dataset over seeds (mean ± std) into CSV, Markdown "
                 "and LaTeX tables, with a bar chart of accuracy per method grouped by K.",
        "extra": [],
        "config": [],
        "cells": [
            "tables = pipeline.report_tables(cfg)\n"
            "for path in tables.paths:\n"
            "    print(path)\n"
            "tables.display",
            'tables.figures["methods_by_shots"]',
        ],
        "closing": "**What to look at.** The gain of each method over zero-shot and the linear probe at each "
                   "K, and the spread over seeds (few shots: large std). `n_seeds` shows missing runs. "
                   "Files: `figures/{dataset}/tables/results.{csv,md,tex}` and `runs.csv` (one row per run).",
    },
}

RUN_CELLS = [
    "record, preds = pipeline.run_method(cfg)\npipeline.run_summary(record)",
    "figures = pipeline.run_figures(preds)\nfigures[\"confusion\"]",
    'figures["per_class_accuracy"]',
]


def build(name: str, spec: dict) -> nbformat.NotebookNode:
    """One notebook, with stable cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    sources: list[tuple[str, str, list[str]]] = [("markdown", spec["title"], [])]
    sources.append(("code", parameters_source(spec["extra"]), ["parameters"]))
    sources.append(("code", derived_source(list(spec["config"]), spec.get("imports", "")), []))
    cells = list(spec.get("cells", []))
    if spec.get("run"):
        cells += RUN_CELLS + spec.get("after_run", [])
    sources += [("code", c, []) for c in cells]
    sources.append(("markdown", spec["closing"], []))
    for i, (kind, src, tags) in enumerate(sources):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        cell.id = f"{name.split('_')[0]}-{i:02d}"
        cell.metadata = {"tags": tags} if tags else {}
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The notebook's file content."""
    return nbformat.writes(build(name, NOTEBOOKS[name])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the notebooks are up to date")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = args.out / f"{name}.ipynb"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
