"""A gallery figure for notebooks: each source image next to its preserving and breaking variants."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
from PIL import Image

from ..settings import AugmentError
from .manifest import Manifest


def augmentation_gallery(
    manifest: Manifest,
    image_root: str | Path | None = None,
    sources: Sequence[str] | None = None,
    max_sources: int = 4,
    max_per_kind: int = 3,
    thumb_inches: float = 1.6,
) -> Figure:
    """One row per source image: the source, then preserving variants, then breaking variants.

    Each thumbnail is captioned with its kind and strength; the title names the generator
    (``classic (classic-v1)`` or ``diffusion (<model id>)``). The caller saves the figure
    (e.g. ``plots.save_figure``).

    Args:
        manifest: a manifest holding preserving and / or breaking rows (join two with ``+``).
        image_root: root of the source images; defaults to ``manifest.image_root``.
        sources: source paths to show; default the first ``max_sources`` sources of the manifest.
        max_sources: rows at most.
        max_per_kind: variants per kind and source at most (breaking ones spread over strengths).
        thumb_inches: size of one thumbnail.
    """
    root = Path(image_root) if image_root is not None else manifest.image_root
    if root is None:
        raise AugmentError("augmentation_gallery needs image_root (the manifest does not know where the sources are).")
    if not manifest.rows:
        raise AugmentError(f"The manifest of '{manifest.root}' is empty; run generate(...) first.")
    order = list(dict.fromkeys(r.source_path for r in manifest.rows))
    chosen = list(sources) if sources is not None else order[:max_sources]
    unknown = [s for s in chosen if s not in order]
    if unknown:
        raise AugmentError(f"Sources not in the manifest: {unknown[:3]}.")

    cells: list[list[tuple[str, Path]]] = []
    for src in chosen:
        rows = [r for r in manifest.rows if r.source_path == src]
        label = rows[0].classname
        row_cells = [(f"source\n{label}", root / src)]
        for kind in ("preserving", "breaking"):
            kind_rows = sorted((r for r in rows if r.kind == kind), key=lambda r: (r.sample_index, r.strength))
            row_cells += [(f"{kind} s={r.strength:g}", manifest.file(r)) for r in kind_rows[:max_per_kind]]
        cells.append(row_cells)

    ncols = max(len(c) for c in cells)
    fig = Figure(figsize=(thumb_inches * ncols, thumb_inches * len(cells) + 0.6), layout="constrained")
    axes = fig.subplots(len(cells), ncols, squeeze=False)
    for row_axes, row_cells in zip(axes, cells):
        for ax in row_axes:
            ax.axis("off")
        for ax, (caption, path) in zip(row_axes, row_cells):
            with Image.open(path) as im:
                ax.imshow(im.convert("RGB"))
            ax.set_title(caption, fontsize=7)
    fig.suptitle(f"Label-preserving vs label-breaking augmentation — generator: {manifest.generator_label}", fontsize=9)
    return fig
