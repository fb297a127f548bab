"""The failure browser builds without a display, re-renders on every control change, and exports PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import class_image, write_image

from lowres_clip.analysis import browser
from lowres_clip.runs import Predictions

CLASSES = ["Forest", "Highway", "SeaLake", "River"]


def make_run(root, run_key, num_classes=4, per_class=4, seed=0) -> Predictions:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    logits = rng.normal(size=(len(labels), num_classes)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += 1.0  # mostly right, some wrong
    paths = []
    for i, y in enumerate(labels):
        paths.append(f"{CLASSES[y]}/{i}.png")
        if not (root / paths[-1]).exists():
            write_image(root / paths[-1], class_image(int(y), i, size=24))
    return Predictions(logits, labels, paths, CLASSES[:num_classes], str(root), run_key)


@pytest.fixture
def runs(tmp_path):
    a = make_run(tmp_path, "eurosat/tiny-vit-random/zero_shot/k4-s0")
    b = make_run(tmp_path, "eurosat/tiny-vit-random/lora/k4-s0", seed=1)
    c = make_run(tmp_path, "circuits/tiny-vit-random/lora/k4-s0", num_classes=2, seed=2)
    return a, b, c


def test_widget_builds_and_rerenders_on_change(runs):
    ui = browser.FailureBrowser(list(runs), k=4)
    controls = {w.description: w for w in (ui.run_dropdown, ui.class_dropdown, ui.show_toggle, ui.k_slider)}
    assert set(controls) == {"run", "class", "show", "k"}
    assert "lowres-browser" in ui.widget._dom_classes
    assert bytes(ui.image.value).startswith(b"\x89PNG")
    seen = [bytes(ui.image.value)]

    def changed() -> bool:
        new = bytes(ui.image.value)
        fresh = new not in seen
        seen.append(new)
        return fresh

    ui.class_dropdown.value = 1
    assert changed(), "class change must re-render"
    assert "Highway" in ui.info.value
    ui.show_toggle.value = "correct"
    assert changed(), "show toggle must re-render"
    ui.k_slider.value = 1
    assert changed(), "k change must re-render"
    ui.run_dropdown.value = runs[1].run_key
    assert changed(), "run change must re-render"
    # switching to a run with fewer classes refreshes the class list
    ui.class_dropdown.value = 3
    ui.run_dropdown.value = runs[2].run_key
    assert [v for _, v in ui.class_dropdown.options] == [0, 1] and ui.class_dropdown.value == 0
    assert ui.pred is runs[2]
    bundle = ui._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in (bundle[0] if isinstance(bundle, tuple) else bundle)


def test_browser_input_validation(runs):
    with pytest.raises(ValueError, match="at least one run"):
        browser.FailureBrowser([])
    with pytest.raises(ValueError, match="unknown runs"):
        browser.FailureBrowser(runs[0], attention={"nope": None})
    with pytest.raises(ValueError, match="show must be"):
        browser.render_class(runs[0], 0, show="both")


def test_export_per_class_writes_pngs(runs, tmp_path):
    paths = browser.export_per_class(runs[0], k=3, root=tmp_path / "figures")
    assert len(paths) == 4 * 2
    assert paths[0] == tmp_path / "figures" / runs[0].run_key / "browser" / "00-Forest-incorrect.png"
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    # the exported grid is the widget's rendering of the same selection
    fig = browser.render_class(runs[0], "Highway", "correct", 3)
    assert "Highway" in fig.get_suptitle() or any("Highway" in t.get_text() for ax in fig.axes for t in ax.texts)
