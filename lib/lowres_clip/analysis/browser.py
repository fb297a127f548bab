"""Per-class failure browser: live in JupyterLab (ipywidgets), or exported as static PNGs.

Both paths draw with the same function, :func:`render_class`, which shows the ``k`` most
confident correct or incorrect predictions of one class (:func:`~lowres_clip.analysis.topk.top_k`)
with optional attention maps.

The widget (:class:`FailureBrowser`) has a run selector (``run``), a class dropdown (``class``),
a correct/incorrect toggle (``show``) and a ``k`` slider; every change re-renders the grid into a
PNG :class:`ipywidgets.Image`. It needs no display and can be driven programmatically (tests set
``browser.class_dropdown.value``). Its container carries the CSS class ``lowres-browser``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .. import plots
from .topk import SHOW, class_index, grid_figure, top_k

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..runs import Predictions
    from .attention import AttentionSource

CSS_CLASS = "lowres-browser"


def render_class(pred: "Predictions", cls: int | str, show: str = "incorrect", k: int = 8,
                 attention: "AttentionSource | None" = None, ncols: int = 4) -> "Figure":
    """Grid of the ``k`` most confident ``show`` (``incorrect``/``correct``) predictions of class ``cls``."""
    if show not in SHOW:
        raise ValueError(f"show must be one of {SHOW}, got {show!r}")
    c = class_index(pred, cls)
    name = pred.classnames[c]
    rows = top_k(pred, k, correct=show == "correct", cls=c)
    n_total = int((pred.labels == c).sum())
    n_show = int(((pred.preds == pred.labels) == (show == "correct"))[pred.labels == c].sum())
    title = f"{pred.run_key}\nclass {name}: {n_show}/{n_total} {show}, top {len(rows)} shown"
    return grid_figure(pred, rows, attention, ncols=ncols, title=title,
                       empty_message=f"no {show} predictions for class {name}")


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:60] or "class"


def export_per_class(pred: "Predictions", k: int = 8, shows: Sequence[str] = SHOW,
                     attention: "AttentionSource | None" = None, root: str | Path | None = None,
                     formats: Sequence[str] = ("png",), ncols: int = 4) -> list[Path]:
    """Headless browser: write one grid per class and ``show`` value as
    ``figures/{run_key}/browser/{index:02d}-{class}-{show}.png``; returns the paths."""
    from tqdm.auto import tqdm

    paths: list[Path] = []
    for c, name in enumerate(tqdm(pred.classnames, desc="per-class grids", disable=len(pred.classnames) < 5)):
        for show in shows:
            fig = render_class(pred, c, show, k, attention, ncols)
            paths += plots.save_figure(fig, pred.run_key, f"browser/{c:02d}-{_safe_name(name)}-{show}",
                                       formats=formats, root=root)
    return paths


def _as_runs(runs: "Predictions | Sequence[Predictions] | Mapping[str, Predictions]") -> dict[str, "Predictions"]:
    if isinstance(runs, Mapping):
        out = dict(runs)
    elif hasattr(runs, "logits"):
        out = {runs.run_key: runs}
    else:
        out = {}
        for p in runs:
            if p.run_key in out:
                raise ValueError(f"two runs share the key {p.run_key!r}; pass a dict with distinct names")
            out[p.run_key] = p
    if not out:
        raise ValueError("the failure browser needs at least one run")
    return out


class FailureBrowser:
    """Interactive per-class failure browser.

    Args:
        runs: one :class:`~lowres_clip.runs.Predictions`, a list of them (named by run key) or a
            ``{name: Predictions}`` dict.
        attention: optional ``{name: AttentionSource}`` for runs whose attention maps to show.
        k: initial number of samples.
        max_k: largest ``k`` on the slider.
        ncols: samples per grid row.
        dpi: resolution of the rendered PNG.

    Attributes:
        run_dropdown, class_dropdown, show_toggle, k_slider: the controls (descriptions ``run``,
            ``class``, ``show``, ``k``).
        image: the :class:`ipywidgets.Image` showing the current grid (PNG bytes).
        info: an :class:`ipywidgets.HTML` line with the class's counts.
        widget: the container (``VBox`` with CSS class ``lowres-browser``); displaying the browser
            displays it.
    """

    def __init__(self, runs: "Predictions | Sequence[Predictions] | Mapping[str, Predictions]",
                 attention: "Mapping[str, AttentionSource] | None" = None, k: int = 8, max_k: int = 32,
                 ncols: int = 4, dpi: int = 90):
        import ipywidgets as widgets

        self.runs = _as_runs(runs)
        self.attention = dict(attention or {})
        unknown = set(self.attention) - set(self.runs)
        if unknown:
            raise ValueError(f"attention given for unknown runs {sorted(unknown)}; runs: {list(self.runs)}")
        self.ncols = ncols
        self.dpi = dpi
        first = next(iter(self.runs))
        self.run_dropdown = widgets.Dropdown(options=list(self.runs), value=first, description="run")
        self.class_dropdown = widgets.Dropdown(options=self._class_options(self.runs[first]), value=0,
                                               description="class")
        self.show_toggle = widgets.ToggleButtons(options=list(SHOW), value="incorrect", description="show")
        self.k_slider = widgets.IntSlider(value=min(k, max_k), min=1, max=max_k, step=1, description="k",
                                          continuous_update=False)
        self.info = widgets.HTML()
        self.image = widgets.Image(format="png")
        for w in (self.run_dropdown, self.class_dropdown, self.show_toggle, self.k_slider):
            w.add_class(f"{CSS_CLASS}-{w.description}")
        self._suspended = False
        self.run_dropdown.observe(self._on_run, names="value")
        for w in (self.class_dropdown, self.show_toggle, self.k_slider):
            w.observe(self._on_change, names="value")
        controls = widgets.HBox([self.run_dropdown, self.class_dropdown])
        controls2 = widgets.HBox([self.show_toggle, self.k_slider])
        self.widget = widgets.VBox([controls, controls2, self.info, self.image])
        self.widget.add_class(CSS_CLASS)
        self.render()

    @staticmethod
    def _class_options(pred: "Predictions") -> list[tuple[str, int]]:
        ok = pred.preds == pred.labels
        out = []
        for c, name in enumerate(pred.classnames):
            m = pred.labels == c
            out.append((f"{name} ({int((~ok & m).sum())} wrong / {int(m.sum())})", c))
        return out

    @property
    def pred(self) -> "Predictions":
        """The selected run's predictions."""
        return self.runs[self.run_dropdown.value]

    def _on_change(self, _change: Any) -> None:
        if not self._suspended:
            self.render()

    def _on_run(self, _change: Any) -> None:
        """A new run may have other classes: refresh the class list (keeping the index when valid)."""
        old = self.class_dropdown.value
        options = self._class_options(self.pred)
        self._suspended = True
        try:
            self.class_dropdown.options = options
            self.class_dropdown.value = old if old is not None and old < len(options) else 0
        finally:
            self._suspended = False
        self.render()

    def figure(self) -> "Figure":
        """The grid for the current selection."""
        return render_class(self.pred, self.class_dropdown.value, self.show_toggle.value, self.k_slider.value,
                            self.attention.get(self.run_dropdown.value), self.ncols)

    def render(self) -> None:
        """Redraw the grid and the info line for the current selection."""
        pred = self.pred
        c = int(self.class_dropdown.value)
        m = pred.labels == c
        acc = float(np.mean(pred.preds[m] == c)) if m.any() else float("nan")
        self.info.value = (f"<b>{pred.classnames[c]}</b>: {int(m.sum())} test samples, "
                           f"accuracy {acc:.3f} &mdash; run <code>{self.run_dropdown.value}</code>")
        self.image.value = plots.figure_png(self.figure(), dpi=self.dpi)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def failure_browser(runs: "Predictions | Sequence[Predictions] | Mapping[str, Predictions]",
                    attention: "Mapping[str, AttentionSource] | None" = None, k: int = 8) -> FailureBrowser:
    """Build a :class:`FailureBrowser` (display it as the last expression of a notebook cell)."""
    return FailureBrowser(runs, attention=attention, k=k)
