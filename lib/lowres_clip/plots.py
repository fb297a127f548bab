"""Figure helpers: every function returns a figure; :func:`save_figure` writes it under ``figures/``.

Matplotlib figures are built as :class:`matplotlib.figure.Figure` objects without ``pyplot``, so no
global figure state builds up, nothing needs a display (they render through Agg when saved) and
the functions are safe in headless runs and tests. In IPython/Jupyter a PNG formatter is
registered for them, so a returned figure shows inline. Plotly figures are written as HTML (plus
static images only when ``kaleido`` is installed; it is not a dependency, so those are skipped).

Paths follow ``ARCHITECTURE.md``: ``figures/{run_key}/{name}.{ext}``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from . import registry

log = logging.getLogger(__name__)

MPL_FORMATS = ("png", "svg", "pdf")
GROUP_COLOURS = {"head": "#1f77b4", "medium": "#ff7f0e", "tail": "#d62728"}


class FigureError(ValueError):
    """A figure cannot be made or saved as asked; the message says what to change."""


# ----------------------------------------------------------------------------- saving
def is_plotly(fig: Any) -> bool:
    """Whether ``fig`` is a plotly figure (checked without importing plotly eagerly)."""
    return type(fig).__module__.startswith("plotly") and hasattr(fig, "write_html")


def output_dir(where: str | Path, root: str | Path | None = None) -> Path:
    """The folder a figure or table goes to (created).

    Args:
        where: an absolute folder, or a folder relative to ``root``, e.g. a run id
            (:attr:`lowres_clip.spec.RunSpec.id`, which :attr:`Predictions.run_key` holds).
        root: figures root for relative folders (default ``<repo>/figures``).
    """
    from .spec import FIGURES_ROOT

    d = Path(where)
    if not d.is_absolute():
        d = Path(root or FIGURES_ROOT) / d
    d.mkdir(parents=True, exist_ok=True)
    return d


def _kaleido_available() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def save_figure(
    fig: Any,
    path_or_run_key: str | Path,
    name: str,
    formats: Sequence[str] = ("png",),
    root: str | Path | None = None,
    dpi: int = 150,
    plotly_js: str | bool = "directory",
) -> list[Path]:
    """Write a matplotlib or plotly figure as ``{dir}/{name}.{ext}``; returns the written paths.

    Args:
        fig: a :class:`matplotlib.figure.Figure` or a plotly ``Figure``.
        path_or_run_key: run key or folder (see :func:`output_dir`).
        name: file stem (may contain ``/`` for a sub-folder, e.g. ``browser/Forest-incorrect``).
        formats: matplotlib: any of ``png``, ``svg``, ``pdf``. Plotly: ``html`` is always written;
            ``png``/``svg``/``pdf`` only when ``kaleido`` is installed (skipped otherwise).
        root: figures root for run keys.
        dpi: resolution of raster formats.
        plotly_js: ``include_plotlyjs`` of plotly's ``write_html`` (``"directory"`` writes one
            ``plotly.min.js`` next to the HTML so it works offline; ``"cdn"`` makes small files).
    """
    out = output_dir(path_or_run_key, root)
    stem = out / name
    stem.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if is_plotly(fig):
        html = stem.with_name(stem.name + ".html")
        fig.write_html(html, include_plotlyjs=plotly_js)
        written.append(html)
        static = [f for f in formats if f != "html"]
        if static and not _kaleido_available():
            log.info("kaleido is not installed: skipping %s for plotly figure %s", static, name)
            static = []
        for fmt in static:
            p = stem.with_name(f"{stem.name}.{fmt}")
            fig.write_image(p)
            written.append(p)
        return written
    if not isinstance(fig, Figure):
        raise FigureError(f"save_figure expects a matplotlib Figure or a plotly Figure, got {type(fig).__name__}")
    for fmt in formats:
        if fmt not in MPL_FORMATS:
            raise FigureError(f"Unsupported matplotlib format {fmt!r}; use one of {MPL_FORMATS}.")
        p = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(p, dpi=dpi, bbox_inches="tight", format=fmt)
        written.append(p)
    return written


def save_table(
    df,
    path_or_run_key: str | Path,
    name: str,
    formats: Sequence[str] = ("csv", "md"),
    root: str | Path | None = None,
    index: bool = False,
    digits: int = 4,
) -> list[Path]:
    """Write a pandas DataFrame as ``{dir}/{name}.{csv,md,tex}``; returns the written paths.

    CSV keeps full precision; Markdown and LaTeX round floats to ``digits`` decimals.
    """
    out = output_dir(path_or_run_key, root)
    written: list[Path] = []
    for fmt in formats:
        p = out / f"{name}.{fmt}"
        p.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            df.to_csv(p, index=index)
        elif fmt == "md":
            p.write_text(df.to_markdown(index=index, floatfmt=f".{digits}f") + "\n")
        elif fmt == "tex":
            p.write_text(df.to_latex(index=index, float_format=f"{{:.{digits}f}}".format))
        else:
            raise FigureError(f"Unsupported table format {fmt!r}; use csv, md or tex.")
        written.append(p)
    return written


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (for image widgets and notebook display)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _register_ipython_formatter() -> None:
    """Show pyplot-free figures inline when running under IPython (no-op elsewhere)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or not hasattr(ip, "display_formatter"):
        return
    ip.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


_register_ipython_formatter()


# ----------------------------------------------------------------------------- figures
def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure of ``width`` x ``height`` inches with constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


def message_figure(text: str, width: float = 4.0, height: float = 1.5) -> Figure:
    """A figure that only shows ``text`` (for empty selections, e.g. a class with no errors)."""
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def confusion_heatmap(
    matrix: np.ndarray,
    classnames: Sequence[str],
    normalized: bool = True,
    title: str | None = None,
    annotate: bool | None = None,
    cmap: str = "Blues",
) -> Figure:
    """Matplotlib heatmap of a confusion matrix (rows: true class, columns: predicted class).

    Args:
        matrix: ``[C, C]`` counts or row-normalised rates.
        classnames: the ``C`` class names.
        normalized: whether ``matrix`` holds rates in ``[0, 1]`` (sets the colour range and format).
        annotate: write the value in each cell; default when ``C <= 20``.
    """
    matrix = np.asarray(matrix)
    c = len(classnames)
    if matrix.shape != (c, c):
        raise FigureError(f"confusion matrix of shape {matrix.shape} does not match {c} class names")
    annotate = c <= 20 if annotate is None else annotate
    size = max(4.0, 0.45 * c + 2.5)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    vmax = 1.0 if normalized else max(float(matrix.max()), 1.0)
    im = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="rate" if normalized else "count")
    ax.set_xticks(range(c), labels=classnames, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(c), labels=classnames, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalized else "confusion matrix (counts)"))
    if annotate:
        for i in range(c):
            for j in range(c):
                v = matrix[i, j]
                if not np.isfinite(v):
                    continue
                text = f"{v:.2f}" if normalized else f"{int(v)}"
                colour = "white" if v > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    return fig


def confusion_heatmap_plotly(matrix: np.ndarray, classnames: Sequence[str], normalized: bool = True,
                             title: str | None = None):
    """Interactive plotly heatmap of a confusion matrix (hover shows true/predicted class and value)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(
        z=np.asarray(matrix), x=list(classnames), y=list(classnames), colorscale="Blues",
        zmin=0, zmax=1 if normalized else None,
        hovertemplate="true %{y}<br>predicted %{x}<br>value %{z}<extra></extra>",
    ))
    fig.update_layout(title=title or "confusion matrix", xaxis_title="predicted class", yaxis_title="true class",
                      yaxis_autorange="reversed")
    return fig


def per_class_accuracy_bars(table, value: str = "accuracy", label: str = "class", sort: bool = True,
                            title: str | None = None) -> Figure:
    """Horizontal bar plot of a per-class metric (e.g. :func:`lowres_clip.analysis.metrics.per_class_table`).

    Bars are coloured by the ``group`` column (head/medium/tail) when the table has one; each bar is
    annotated with ``correct/total`` when those columns exist.
    """
    for col in (value, label):
        if col not in table.columns:
            raise FigureError(f"per-class table has no column {col!r}; columns: {list(table.columns)}")
    df = table.sort_values(value, ascending=True) if sort else table.iloc[::-1]
    fig = new_figure(7.0, max(2.5, 0.3 * len(df) + 1.2))
    ax = fig.add_subplot()
    if "group" in df.columns:
        colours = [GROUP_COLOURS.get(g, "grey") for g in df["group"]]
    else:
        colours = ["#1f77b4"] * len(df)
    y = np.arange(len(df))
    ax.barh(y, df[value].to_numpy(dtype=float), color=colours)
    ax.set_yticks(y, labels=[str(s) for s in df[label]], fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel(value)
    if {"correct", "total"} <= set(df.columns):
        for yi, (c, t) in enumerate(zip(df["correct"], df["total"])):
            ax.text(1.01, yi, f"{c}/{t}", va="center", fontsize=7)
    if "group" in df.columns:
        from matplotlib.patches import Patch

        present = [g for g in GROUP_COLOURS if g in set(df["group"])]
        ax.legend(handles=[Patch(color=GROUP_COLOURS[g], label=g) for g in present], loc="lower right", fontsize=8)
    ax.set_title(title or f"per-class {value}")
    return fig


def compare_methods(df, value: str = "accuracy", method: str = "method", hue: str | None = None,
                    title: str | None = None, order: Sequence[str] | None = None) -> Figure:
    """Bar chart of a metric per method: mean over rows (e.g. seeds) with sample-std error bars.

    Args:
        df: long table with one row per run (columns ``method``, ``value`` and optionally ``hue``).
        value: metric column (e.g. ``accuracy``, ``top1``, ``balanced``).
        method: column naming the method.
        hue: optional column making grouped bars (e.g. ``shots`` or ``dataset``); numeric values
            are drawn in numeric order, others in order of first appearance.
        order: method order on the x axis (default: order of first appearance).
    """
    for col in [value, method] + ([hue] if hue else []):
        if col not in df.columns:
            raise FigureError(f"table has no column {col!r}; columns: {list(df.columns)}")
    methods = list(order) if order is not None else list(dict.fromkeys(df[method]))
    hues = list(dict.fromkeys(df[hue])) if hue else [None]
    if hue and all(isinstance(h, (int, float, np.integer, np.floating)) for h in hues):
        hues = sorted(hues)  # numbers (e.g. K) in numeric order, never as the records happen to sort
    fig = new_figure(max(4.0, 1.0 + 0.9 * len(methods) * max(1, len(hues) / 2)), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(hues)
    x = np.arange(len(methods))
    for h_i, h in enumerate(hues):
        sub = df if h is None else df[df[hue] == h]
        g = sub.groupby(method)[value]
        means = g.mean().reindex(methods).to_numpy(dtype=float)
        stds = g.std(ddof=1).reindex(methods).fillna(0.0).to_numpy(dtype=float)
        pos = x - 0.4 + width * (h_i + 0.5)
        bars = ax.bar(pos, means, width, yerr=stds, capsize=3, label=None if h is None else f"{hue}={h}")
        for b, m in zip(bars, means):
            if np.isfinite(m):
                ax.text(b.get_x() + b.get_width() / 2, m, f"{m:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels=methods, rotation=30, ha="right")
    ax.set_ylabel(value)
    ax.set_ylim(0, min(1.1, max(1.0, float(np.nanmax(df[value].to_numpy(dtype=float))) * 1.1)))
    if hue:
        ax.legend(fontsize=8)
    ax.set_title(title or f"{value} per method")
    return fig


def _curves(table, metric: str):
    """``[(label, method, shots[], mean[], std[], n[])]`` per curve (one per ``curve_hash``)."""
    for col in ("curve_hash", "row", "method", "shots", "n_seeds", f"{metric}_mean", f"{metric}_std"):
        if col not in table.columns:
            raise FigureError(f"table has no column {col!r}; build it with lowres_clip.runs.aggregate.")
    out = []
    for _, sub in table.groupby("curve_hash", sort=False):
        sub = sub.sort_values("shots")
        out.append((str(sub["row"].iloc[0]), str(sub["method"].iloc[0]), sub["shots"].to_numpy(),
                    sub[f"{metric}_mean"].to_numpy(dtype=float), sub[f"{metric}_std"].to_numpy(dtype=float),
                    sub["n_seeds"].to_numpy()))
    return out


def accuracy_vs_shots(table, metric: str = "top1", title: str | None = None, scale: float = 100.0) -> Figure:
    """Accuracy against K: one line per method (mean over seeds) with a band of +-1 std.

    The reference methods (registry role ``reference``: zero-shot, the linear probe) are drawn dashed. ``table`` is
    :func:`lowres_clip.runs.aggregate`'s output (one row per settings group and K).
    """
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    for label, method, shots, mean, std, n in _curves(table, metric):
        ref = registry.is_reference(method)
        line, = ax.plot(shots, mean * scale, marker="o", ms=4, lw=1.4, ls="--" if ref else "-", label=label)
        ax.fill_between(shots, (mean - std) * scale, (mean + std) * scale, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ks = sorted(set(table["shots"]))
    ax.set_xticks(ks, labels=[str(k) for k in ks])
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel(f"{metric} (%), mean ± 1 std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or f"{metric} vs shots")
    return fig


def accuracy_vs_ratio(table, metrics: Sequence[str], title: str | None = None, scale: float = 100.0) -> Figure:
    """One panel per metric (e.g. balanced accuracy, head / medium / tail top-1) against the
    imbalance ratio: a line per method (``row``) with a band of +-1 std over seeds, references
    dashed. ``table`` is :func:`lowres_clip.pipeline.report.longtail_table`'s (columns
    ``long_tail_ratio``, ``row``, ``method``, ``{metric}_mean`` / ``_std``); a point whose metric is
    missing (head / medium / tail at ratio 1) is left out."""
    for col in ("long_tail_ratio", "row", "method"):
        if col not in table.columns:
            raise FigureError(f"table has no column {col!r}; build it with lowres_clip.pipeline.report.longtail_table.")
    cols = min(2, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = new_figure(5.2 * cols, 3.6 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    ratios = sorted(set(table["long_tail_ratio"]))
    style = _row_styles(table["row"])
    for ax, metric in zip(axes, metrics):
        for row, sub in table.groupby("row", sort=False):
            sub = sub.sort_values("long_tail_ratio")
            sub = sub[sub[f"{metric}_mean"].notna()]
            if sub.empty:
                continue
            x, mean, std = sub["long_tail_ratio"].to_numpy(), sub[f"{metric}_mean"].to_numpy(float), sub[f"{metric}_std"].to_numpy(float)
            ax.plot(x, mean * scale, ms=4, lw=1.4, ls="--" if registry.is_reference(sub["method"].iloc[0]) else "-",
                    label=row, **style[row])
            ax.fill_between(x, (mean - std) * scale, (mean + std) * scale, color=style[row]["color"], alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ratios, labels=[f"{r:g}" for r in ratios])
        ax.set_xlabel("imbalance ratio (head / tail shots)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title or "accuracy vs imbalance ratio", fontsize=9)
    return fig


def _row_styles(rows) -> dict[str, dict[str, Any]]:
    """A colour (tab20: distinct for up to 20 rows) and a marker per table row, in first-seen order,
    so one method looks the same in every panel of a figure."""
    colours, markers = colormaps["tab20"].colors, "osD^v<>ph*"
    return {row: {"color": colours[(2 * i) % 20 + (i // 10) % 2], "marker": markers[i % len(markers)]}
            for i, row in enumerate(dict.fromkeys(rows))}


def recall_vs_training_shots(frame, title: str | None = None, scale: float = 100.0) -> Figure:
    """One panel per imbalance ratio: per-class test recall against the class's training images, a
    line per method (``row``), references dashed. ``frame`` is
    :func:`lowres_clip.pipeline.report.per_class_frame`'s (``row, method, long_tail_ratio, shots, recall``)."""
    for col in ("row", "method", "long_tail_ratio", "shots", "recall"):
        if col not in frame.columns:
            raise FigureError(f"frame has no column {col!r}; build it with lowres_clip.pipeline.report.per_class_frame.")
    ratios = sorted(set(frame["long_tail_ratio"]))
    fig = new_figure(5.0 * len(ratios), 4.2)
    axes = fig.subplots(1, len(ratios), squeeze=False).ravel()
    style = _row_styles(frame["row"])
    for ax, ratio in zip(axes, ratios):
        for row, sub in frame[frame["long_tail_ratio"] == ratio].groupby("row", sort=False):
            sub = sub.sort_values("shots")
            ax.plot(sub["shots"], sub["recall"] * scale, ms=3, lw=1.2,
                    ls="--" if registry.is_reference(sub["method"].iloc[0]) else "-", label=row, **style[row])
        shots = sorted(set(frame.loc[frame["long_tail_ratio"] == ratio, "shots"]))
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, labels=[str(s) for s in shots])
        ax.set_xlabel("training images of the class")
        ax.set_ylabel("test recall (%)")
        ax.set_title(f"imbalance ratio {ratio:g}", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title or "recall vs training shots", fontsize=9)
    return fig


def accuracy_vs_shots_plotly(table, metric: str = "top1", title: str | None = None, scale: float = 100.0):
    """The interactive version of :func:`accuracy_vs_shots` (hover: mean, std, n_seeds)."""
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS as colours

    fig = go.Figure()
    for i, (label, method, shots, mean, std, n) in enumerate(_curves(table, metric)):
        colour = colours[i % len(colours)]
        rgba = colour.replace("rgb", "rgba").replace(")", ", 0.15)")
        fig.add_trace(go.Scatter(x=list(shots) + list(shots[::-1]), y=list((mean + std) * scale) + list((mean - std)[::-1] * scale),
                                 fill="toself", fillcolor=rgba, line={"width": 0}, hoverinfo="skip",
                                 showlegend=False, legendgroup=label))
        fig.add_trace(go.Scatter(
            x=shots, y=mean * scale, mode="lines+markers", name=label, legendgroup=label,
            line={"color": colour, "dash": "dash" if registry.is_reference(method) else "solid"},
            customdata=np.stack([std * scale, n], axis=1),
            hovertemplate=f"{label}<br>K=%{{x}}<br>mean %{{y:.2f}}<br>std %{{customdata[0]:.2f}}<br>n_seeds %{{customdata[1]}}<extra></extra>"))
    fig.update_layout(title=title or f"{metric} vs shots", xaxis={"title": "shots per class (K)", "type": "log", "tickvals": sorted(set(table["shots"]))},
                      yaxis={"title": f"{metric} (%)"}, height=480, width=820)
    return fig


def overlay(image: Any, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a ``[0, 1]`` heatmap over an image; returns a ``uint8`` RGB array of the image's size.

    Args:
        image: PIL image or ``[H, W, 3]`` array (uint8, or float in ``[0, 1]``).
        heatmap: ``[h, w]`` map in ``[0, 1]`` (resized bilinearly to the image when sizes differ).
        alpha: weight of the heatmap colour.
        cmap: matplotlib colormap name.
    """
    from PIL import Image

    img = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img.astype(np.float32)
    if img.max() > 1.0:
        img = img / 255.0
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.shape != img.shape[:2]:
        hm = np.asarray(Image.fromarray(hm).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
    colour = colormaps[cmap](np.clip(np.nan_to_num(hm), 0.0, 1.0))[..., :3]
    out = (1.0 - alpha) * img[..., :3] + alpha * colour
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def image_grid(
    images: Sequence[Any],
    titles: Sequence[str] | None = None,
    heatmaps: Sequence[np.ndarray | None] | None = None,
    ncols: int = 4,
    title: str | None = None,
    tile: float = 2.0,
    alpha: float = 0.5,
    empty_message: str = "nothing to show",
) -> Figure:
    """A grid of images; with ``heatmaps`` each image is followed by its attention overlay.

    Args:
        images: PIL images or ``[H, W, 3]`` arrays.
        titles: one title per image (shown above the image).
        heatmaps: one ``[0, 1]`` map (or ``None``) per image; when given, each sample takes two
            panels: the image and its :func:`overlay`.
        ncols: samples per row.
        title: figure title.
        tile: panel size in inches.
        empty_message: text of the figure when ``images`` is empty.
    """
    n = len(images)
    if n == 0:
        return message_figure(empty_message if title is None else f"{title}\n{empty_message}")
    if titles is not None and len(titles) != n:
        raise FigureError(f"{len(titles)} titles for {n} images")
    if heatmaps is not None and len(heatmaps) != n:
        raise FigureError(f"{len(heatmaps)} heatmaps for {n} images")
    per = 2 if heatmaps is not None else 1
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = new_figure(tile * ncols * per, tile * nrows + (0.4 if title else 0.0))
    axes = fig.subplots(nrows, ncols * per, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        ax = axes[r, c * per]
        ax.imshow(np.asarray(img))
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
        if heatmaps is not None:
            ax2 = axes[r, c * per + 1]
            if heatmaps[i] is not None:
                ax2.imshow(overlay(img, heatmaps[i], alpha=alpha))
                ax2.set_title("attention", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
