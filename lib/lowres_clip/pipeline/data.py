"""The data step (notebook ``00_data``): load the dataset, sample and save the K-shot split, look at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import ImageDataset, SplitDataset, load_dataset
from ..sampling import FewShotSplit, few_shot
from ..spec import RunSpec
from .common import resolve_data_root


def prepare_data(spec: RunSpec) -> tuple[SplitDataset, FewShotSplit]:
    """Load the dataset and the K-shot split of ``(shots, seed)`` (sampled once, saved, reloaded).

    Raises:
        lowres_clip.datasets.DatasetError: the data are missing (the message says where to put them,
            or set ``data_root`` / ``$LOWRES_CLIP_DATA``).
    """
    cfg = spec.config
    ds = load_dataset(cfg.dataset, resolve_data_root(spec), exclude=cfg.exclude)
    split = few_shot(ds, cfg.shots, cfg.seed, cfg.long_tail_ratio, save_dir=spec.split_dir)
    return ds, split


@dataclass
class DataOverview:
    """What the data notebook shows.

    Attributes:
        counts: per class: images in train/val/test, sampled shots and val shots (and group).
        figures: ``{"class_counts": Figure, "examples": Figure}``.
        paths: files written under :attr:`RunSpec.data_figure_dir`.
        split_file: the saved K-shot split.
    """

    counts: Any
    figures: dict[str, Any]
    paths: list[Path]
    split_file: Path


def class_counts(ds: SplitDataset, split: FewShotSplit):
    """DataFrame: ``class, train, val, test, shots, val_shots`` (+ ``group`` for long-tailed splits)."""
    import pandas as pd

    df = pd.DataFrame({"class": ds.classnames, "train": ds.counts("train"), "val": ds.counts("val"),
                       "test": ds.counts("test")})
    df["shots"] = np.bincount([s.label for s in split.train], minlength=ds.num_classes)
    df["val_shots"] = np.bincount([s.label for s in split.val], minlength=ds.num_classes)
    if split.groups is not None:
        df["group"] = split.groups
    return df


def class_counts_figure(counts) -> Any:
    """Horizontal bars of images per class in each split (log scale) with the sampled shots."""
    from .. import plots

    fig = plots.new_figure(7.0, max(2.5, 0.32 * len(counts) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(counts))
    cols = ["train", "val", "test", "shots"]
    h = 0.8 / len(cols)
    for i, col in enumerate(cols):
        ax.barh(y - 0.4 + h * (i + 0.5), np.maximum(counts[col].to_numpy(), 0.8), h, label=col)
    ax.set_yticks(y, labels=list(counts["class"]), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("images (log scale)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("images per class and sampled shots")
    return fig


def examples_figure(ds: SplitDataset, split: FewShotSplit, per_class: int = 2, max_classes: int = 12) -> Any:
    """A grid of sampled training images, ``per_class`` for each of the first ``max_classes`` classes."""
    from .. import plots

    data = ImageDataset(ds.image_root, split.train)
    images, titles = [], []
    for c in range(min(ds.num_classes, max_classes)):
        idx = [i for i, s in enumerate(split.train) if s.label == c][:per_class]
        for i in idx:
            images.append(data.load_image(i))
            titles.append(ds.classnames[c][:24])
    return plots.image_grid(images, titles, ncols=min(8, max(1, per_class * 4)),
                            title=f"{ds.name}: {split.name} training shots")


def data_overview(spec: RunSpec, ds: SplitDataset, split: FewShotSplit) -> DataOverview:
    """Class counts table and figures of a K-shot split, written under :attr:`RunSpec.data_figure_dir`."""
    from .. import plots

    out = spec.data_figure_dir
    counts = class_counts(ds, split)
    figures = {"class_counts": class_counts_figure(counts), "examples": examples_figure(ds, split)}
    paths = plots.save_table(counts, out, "class_counts", formats=("csv", "md"))
    for name, fig in figures.items():
        paths += plots.save_figure(fig, out, name)
    split_file = spec.split_dir / f"{split.name}.json"
    return DataOverview(counts, figures, paths, split_file)




def data_overviews(specs) -> list[DataOverview]:
    """:func:`prepare_data` and :func:`data_overview` for each (K, seed) cell of ``specs``; prints
    one line per cell (its split, shots and notes)."""
    out = []
    for spec in specs:
        ds, split = prepare_data(spec)
        overview = data_overview(spec, ds, split)
        print(f"{ds.name} {spec.cell}: {ds.num_classes} classes; {len(split.train)} train / {len(split.val)} val shots; "
              f"{len(ds.split('test'))} test images; saved {overview.split_file.name}")
        for note in split.report:
            print("  note:", note)
        out.append(overview)
    return out
