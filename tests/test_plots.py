"""Figure helpers: every figure function returns a figure, and save_figure/save_table write files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lowres_clip import plots

RUN_KEY = "eurosat/tiny-vit-random/lora/k4-s0"


def _mpl_figure() -> Figure:
    fig = plots.new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_save_figure_run_key_and_folder(tmp_path):
    paths = plots.save_figure(_mpl_figure(), RUN_KEY, "line", formats=("png", "svg"), root=tmp_path)
    assert paths == [tmp_path / RUN_KEY / "line.png", tmp_path / RUN_KEY / "line.svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a Path (or a string that is not a run key) is a folder; names may contain a sub-folder
    (p,) = plots.save_figure(_mpl_figure(), tmp_path / "direct", "sub/line", root=tmp_path)
    assert p == tmp_path / "direct" / "sub" / "line.png" and p.is_file()


def test_save_figure_rejects_unknown_format_and_object(tmp_path):
    with pytest.raises(plots.FigureError, match="Unsupported matplotlib format"):
        plots.save_figure(_mpl_figure(), tmp_path, "x", formats=("bmp",))
    with pytest.raises(plots.FigureError, match="expects a matplotlib Figure"):
        plots.save_figure(object(), tmp_path, "x")


def test_plotly_writes_html_and_skips_png_without_kaleido(tmp_path):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    paths = plots.save_figure(fig, RUN_KEY, "scatter", formats=("png",), root=tmp_path, plotly_js="cdn")
    html = tmp_path / RUN_KEY / "scatter.html"
    assert html in paths and "plotly" in html.read_text().lower()
    if not plots._kaleido_available():
        assert paths == [html]  # PNG skipped gracefully


def test_save_table_formats(tmp_path):
    df = pd.DataFrame({"method": ["zero_shot", "lora"], "accuracy": [0.5, 0.75123]})
    paths = plots.save_table(df, tmp_path, "acc", formats=("csv", "md", "tex"))
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert pd.read_csv(paths[0])["accuracy"].tolist() == [0.5, 0.75123]
    assert "0.7512" in paths[1].read_text() and "tabular" in paths[2].read_text()
    with pytest.raises(plots.FigureError):
        plots.save_table(df, tmp_path, "acc", formats=("xlsx",))


def test_per_class_bars_and_method_comparison_write(tmp_path):
    table = pd.DataFrame({"class": ["a", "b", "c"], "accuracy": [0.2, 0.9, 0.5], "correct": [1, 9, 5],
                          "total": [5, 10, 10], "group": ["head", "medium", "tail"]})
    fig = plots.per_class_accuracy_bars(table)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "c", "b"]  # sorted by accuracy
    runs = pd.DataFrame({"method": ["zero_shot"] * 2 + ["lora"] * 2, "accuracy": [0.4, 0.5, 0.7, 0.9],
                         "shots": [1, 4, 1, 4]})
    fig2 = plots.compare_methods(runs)
    heights = [b.get_height() for b in fig2.axes[0].patches]
    assert heights == pytest.approx([0.45, 0.8])  # mean over seeds/rows per method
    fig3 = plots.compare_methods(runs, hue="shots")
    assert len(fig3.axes[0].patches) == 4
    as_sorted_ids = pd.DataFrame({"method": ["lora"] * 4, "accuracy": [0.9, 0.5, 0.6, 0.7], "shots": [16, 1, 2, 4]})
    legend = plots.compare_methods(as_sorted_ids, hue="shots").axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["shots=1", "shots=2", "shots=4", "shots=16"]  # not 1, 16, 2, 4
    for name, f in (("bars", fig), ("methods", fig2), ("methods_hue", fig3)):
        (p,) = plots.save_figure(f, tmp_path, name)
        assert p.is_file() and p.stat().st_size > 0
    with pytest.raises(plots.FigureError, match="no column"):
        plots.compare_methods(runs, value="top1")


def test_confusion_heatmaps_write(tmp_path):
    m = np.array([[3, 1], [0, 2]])
    fig = plots.confusion_heatmap(m, ["x", "y"], normalized=False)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0", "1", "2", "3"]
    assert plots.save_figure(fig, tmp_path, "cm")[0].is_file()
    pfig = plots.confusion_heatmap_plotly(m / m.sum(1, keepdims=True), ["x", "y"])
    assert plots.save_figure(pfig, tmp_path, "cm", plotly_js="cdn")[0].suffix == ".html"
    with pytest.raises(plots.FigureError, match="does not match"):
        plots.confusion_heatmap(m, ["x"])


def test_overlay_and_image_grid(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    heat = np.linspace(0, 1, 8 * 10, dtype=np.float32).reshape(8, 10)
    out = plots.overlay(img, heat, alpha=0.5)
    assert out.shape == (16, 20, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    assert np.array_equal(plots.overlay(img, heat, alpha=0.0), img)
    fig = plots.image_grid([img, img, img], ["a", "b", "c"], heatmaps=[heat, None, heat], ncols=2, title="grid")
    assert len(fig.axes) == 2 * 2 * 2  # two rows, two samples per row, two panels per sample
    assert plots.save_figure(fig, tmp_path, "grid")[0].is_file()
    empty = plots.image_grid([], empty_message="no errors")
    assert any("no errors" in t.get_text() for t in empty.axes[0].texts)
    with pytest.raises(plots.FigureError):
        plots.image_grid([img], ["a", "b"])


def test_figure_png_bytes():
    png = plots.figure_png(_mpl_figure())
    assert png.startswith(b"\x89PNG")
