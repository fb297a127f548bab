"""End-to-end: the per-class failure browser of notebook 07, run and used in JupyterLab in headless Chromium.

A widget that renders nothing still passes a headless papermill run, so this test does what a
researcher does: it prepares a smoke study's two runs (zero-shot and LoRA on tiny-vit), starts
JupyterLab from the project's environment, opens a parameterised copy of
``notebooks/07_failure_analysis.ipynb`` in Chromium, runs all cells from the ``Run`` menu, then
changes the browser's ``class`` dropdown and ``show`` toggle and checks that the grid image and its
caption change. Screenshots (before and after each change) go to ``runs/screenshots/``.

Needs Debian's Chromium at ``/usr/bin/chromium`` (``make browser-deps``). Without it the test skips,
unless ``$CI`` is set (``.ci/run`` installs it, so there a missing browser is a failure). Deselect
it with ``-m "not browser"``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    BrowserTestError,
    chromium_missing_reason,
    chromium_page,
    jupyter_lab,
    kernel_python,
    open_notebook,
    run_all_cells,
    wait_for_run,
    widget_control,
)

from lowres_clip import pipeline, study
from lowres_clip.runs import Predictions
from lowres_clip.spec import RUNS_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NOTEBOOK = study.NOTEBOOKS_DIR / study.NB_FAILURE
SCREENSHOTS = RUNS_ROOT / "screenshots"
BASELINE, ADAPTED = "zero_shot", "lora"
CSS = ".lowres-browser"

# Reads the PNG the kernel sent (the widget shows it through a blob: URL) and hashes it.
_IMAGE_DIGEST_JS = """async (img) => {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('');
}"""


@pytest.fixture(scope="module")
def chromium() -> None:
    """Skip without Chromium/Playwright, except in CI (``$CI`` set) where that is a failure."""
    reason = chromium_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}; `make test` runs `make browser-deps` first.", pytrace=False)
    pytest.skip(f"{reason}; the JupyterLab browser test needs it (deselect with -m 'not browser')")


@dataclass
class SmokeStudy:
    """Notebook 07's parameters for a smoke study whose two input runs are finished.

    Attributes:
        parameters: papermill parameters of the failure-analysis job.
        predictions: ``{run_key: Predictions}`` of its baseline and adapted runs.
    """

    parameters: dict[str, Any]
    predictions: dict[str, Predictions]


@pytest.fixture
def smoke_study(tmp_path: Path) -> SmokeStudy:
    """Notebook 07's parameters for a smoke study, with its two input runs already finished.

    The parameters are the ones :func:`lowres_clip.study.plan_study` gives the failure-analysis job;
    its prerequisite runs are run with the library exactly as their notebooks do
    (the jobs' :class:`~lowres_clip.spec.RunSpec`, then :func:`~lowres_clip.pipeline.ensure_run`),
    so the notebook in the browser only analyses them.
    """
    roots = {name: tmp_path / name for name in ("runs", "figures", "cache")}
    jobs = study.plan_study("smoke", "eurosat", runs_root=roots["runs"], figures_root=roots["figures"],
                            cache_root=roots["cache"], methods=[BASELINE, ADAPTED], shots=[1], seeds=[1],
                            jobs_per="run")
    failure = next(j for j in jobs if j.notebook == study.NB_FAILURE)
    predictions: dict[str, Predictions] = {}
    for job in jobs:
        if job.name in failure.depends:
            for spec in job.specs:
                predictions[spec.id] = pipeline.ensure_run(spec)[1]
    assert len(predictions) == 2, f"expected the baseline and adapted runs, got {list(predictions)}"
    return SmokeStudy(dict(failure.parameters), predictions)


@pytest.fixture
def lab(tmp_path: Path, chromium: None):
    """JupyterLab serving an empty folder under ``tmp_path`` (stopped, with its kernels, afterwards)."""
    root = tmp_path / "server-root"
    root.mkdir()
    with jupyter_lab(root, tmp_path / "jupyter") as server:
        yield server


def parameterised_copy(notebook: Path, parameters: dict[str, Any], dest: Path) -> Path:
    """Write ``notebook`` with papermill's injected-parameters cell (not executed) to ``dest``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters)
    nbformat.write(nb, str(dest))
    return dest


def image_digest(box) -> str:
    """SHA-256 of the PNG the browser's grid image currently shows (waits until it is loaded)."""
    img = box.locator("img.widget-image")
    img.wait_for(state="visible")
    box.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=img.element_handle(),
                               timeout=30_000)
    return img.evaluate(_IMAGE_DIGEST_JS)


def wait_until_changed(box, old_digest: str, timeout_s: float = 60.0) -> str:
    """Poll until the grid image differs from ``old_digest``; returns the new digest."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        digest = image_digest(box)
        if digest != old_digest:
            return digest
        time.sleep(0.25)
    raise BrowserTestError(f"the failure browser's grid did not change within {timeout_s:.0f}s")


def screenshot(box, name: str) -> Path:
    """Save a screenshot of the browser widget as ``runs/screenshots/{name}.png`` and print its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    box.screenshot(path=str(path), animations="disabled")
    print(f"screenshot: {path}")
    return path


def choose_classes(pred: Predictions, initial: int = 0) -> tuple[int, int]:
    """Classes to browse so that both screenshots after a change show images: ``(a, b)`` where ``a``
    (not ``initial``) has the most incorrect predictions and ``b`` (not ``a``) the most correct ones."""
    ok = pred.preds == pred.labels
    classes = range(len(pred.classnames))
    wrong = [int((~ok & (pred.labels == c)).sum()) for c in classes]
    right = [int((ok & (pred.labels == c)).sum()) for c in classes]
    a = max((c for c in classes if c != initial), key=lambda c: wrong[c])
    b = max((c for c in classes if c != a), key=lambda c: right[c])
    assert wrong[a] and right[b], f"smoke run {pred.run_key} has no mistakes or no successes to browse"
    return a, b


def select_class(box, index: int, name: str, old_digest: str) -> str:
    """Pick class ``index`` in the ``class`` dropdown; wait for a new grid and a caption naming ``name``."""
    widget_control(box, "class").locator("select").select_option(index=index)
    digest = wait_until_changed(box, old_digest)
    info = box.locator(".widget-html-content").first
    box.page.wait_for_function("([el, name]) => el.innerText.startsWith(name + ':')",
                               arg=[info.element_handle(), name], timeout=30_000)
    return digest


def test_failure_browser_in_jupyterlab(lab, smoke_study: SmokeStudy, tmp_path: Path) -> None:
    t0 = time.monotonic()
    assert Path(kernel_python(lab.env)).parent == Path(sys.prefix) / "bin", "kernel python3 must be the venv's"
    parameterised_copy(NOTEBOOK, smoke_study.parameters, lab.root_dir / NOTEBOOK.name)

    with chromium_page(tmp_path / "chromium-profile") as page:
        assert open_notebook(page, lab, NOTEBOOK.name) == "python3"
        run_all_cells(page)
        wait_for_run(page, timeout_s=400)

        box = page.locator(CSS)
        box.wait_for(state="visible", timeout=30_000)
        assert "Error displaying widget" not in box.inner_text()
        controls = {d: widget_control(box, d) for d in ("run", "class", "show", "k")}
        for description, control in controls.items():
            assert control.count() == 1, f"the browser has no single control described {description!r}"
        pred = smoke_study.predictions[controls["run"].locator("select").input_value()]
        names = pred.classnames
        options = controls["class"].locator("option").all_text_contents()
        assert [o.replace("\xa0", " ").split(" (")[0] for o in options] == names, options
        info = box.locator(".widget-html-content").first
        assert info.inner_text().startswith(f"{names[0]}:"), info.inner_text()
        a, b = choose_classes(pred)

        digest = image_digest(box)
        shots = [screenshot(box, "failure_browser-1-before")]
        digest = select_class(box, a, names[a], digest)
        shots.append(screenshot(box, f"failure_browser-2-class{a}-incorrect"))
        digest = select_class(box, b, names[b], digest)
        correct = controls["show"].get_by_role("button", name="correct", exact=True)
        correct.click()
        wait_until_changed(box, digest)
        assert "mod-active" in (correct.get_attribute("class") or ""), "the 'correct' toggle did not activate"
        shots.append(screenshot(box, f"failure_browser-3-class{b}-correct"))

    images = [p.read_bytes() for p in shots]
    assert len(set(images)) == len(images), "each change must change what the browser shows"
    print(f"browser test: {time.monotonic() - t0:.1f} s after the smoke runs were prepared")
