"""The numbered notebooks: each is a jupytext percent-format source ``notebooks/NN_name.py`` paired
with the committed ``notebooks/NN_name.ipynb`` (same cells, no outputs, one ``parameters`` cell), and
each runs under papermill with smoke parameters (tiny random model, generated data), writing its
figures and result files."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import papermill
import pytest

from lowres_clip import pipeline, study
from lowres_clip.runs import Predictions
from lowres_clip.spec import resolve_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = [Path(n).stem for n in study.NOTEBOOKS]
COMMON = ["profile", "dataset", "data_root", "model", "weights", "shots", "seed", "smoke", "device",
          "runs_root", "figures_root", "cache_root", "overrides"]
PAIRING = "ipynb,py:percent"
SYNC = "run `make notebooks` (jupytext --sync notebooks/[0-9]*.py, then strip outputs)"


def parameter_cells(nb) -> list:
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def cell_summary(nb) -> list[tuple[str, str, list[str]]]:
    """What the pair must agree on: each cell's type, source and tags."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


# ----------------------------------------------------------------------------- committed form
def test_every_notebook_has_its_source_pair():
    """The study's notebooks, the .py sources and the .ipynb files are the same nine names."""
    sources = sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.py"))
    notebooks = sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb"))
    assert sources == sorted(NAMES), f"notebooks/*.py differ from study.NOTEBOOKS; {SYNC}"
    assert notebooks == sorted(NAMES), f"notebooks/*.ipynb differ from study.NOTEBOOKS; {SYNC}"
    assert not (NOTEBOOKS / "_build.py").exists()


@pytest.mark.parametrize("name", NAMES)
def test_source_and_notebook_in_sync(name):
    """The .ipynb has exactly the cells of its percent-format source, and both declare the pairing."""
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert source.metadata["jupytext"]["formats"] == PAIRING, f"{name}.py is not paired; {SYNC}"
    assert source.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    assert nb.metadata.get("jupytext", {}).get("formats") == PAIRING, f"{name}.ipynb is not paired; {SYNC}"
    assert cell_summary(nb) == cell_summary(source), f"{name}.ipynb differs from {name}.py; {SYNC}"
    assert nb.metadata["kernelspec"] == source.metadata["kernelspec"], f"kernelspec differs; {SYNC}"


def test_jupyterlab_save_updates_the_source(tmp_path):
    """JupyterLab (through jupytext's contents manager, enabled as a server extension) writes a cell
    edited in the .ipynb to the paired .py, keeping the cell ids of the .ipynb."""
    import asyncio
    import shutil

    pytest.importorskip("jupyterlab_jupytext")
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

    name = NAMES[-1]
    for suffix in (".py", ".ipynb"):
        shutil.copy(NOTEBOOKS / f"{name}{suffix}", tmp_path)
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(tmp_path))

    async def edit_and_save():
        model = await manager.get(f"{name}.ipynb")
        model["content"].cells[-2].source += "  # edited in JupyterLab"
        await manager.save(model, f"{name}.ipynb")

    asyncio.run(edit_and_save())
    assert "# edited in JupyterLab" in (tmp_path / f"{name}.py").read_text()
    before = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    after = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    assert [c.id for c in after.cells] == [c.id for c in before.cells]


@pytest.mark.parametrize("name", NAMES)
def test_source_compiles_and_lints(name):
    """Notebook sources are plain Python: a syntax error (or, with pyflakes, an unused import or an
    undefined name) fails the suite."""
    path = NOTEBOOKS / f"{name}.py"
    text = path.read_text()
    compile(text, str(path), "exec")
    for cell in jupytext.read(path).cells:  # each cell on its own, as the kernel runs it
        if cell.cell_type == "code":
            compile(cell.source, f"{path}:cell", "exec")
    from pyflakes.api import check  # pinned in requirements.txt: the lint always runs
    from pyflakes.reporter import Reporter
    out = io.StringIO()
    assert check(text, str(path), Reporter(out, out)) == 0, out.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs_and_one_parameters_cell(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), \
        f"{name}.ipynb has outputs; {SYNC}"
    params = parameter_cells(nb)
    assert len(params) == 1 and params[0] is code[0], "exactly one parameters cell, the first code cell"
    assert re.search(r"resolve_runs?\(profile, overrides", code[1].source), "derived values come right after"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "a title first"
    assert nb.cells[-1].cell_type == "markdown" and "What to look at" in nb.cells[-1].source
    assert nb.metadata["kernelspec"]["name"] == study.KERNEL_NAME
    declared = papermill.inspect_notebook(str(path))
    assert set(COMMON) <= set(declared)
    assert declared["profile"]["default"] == '"cpu"'


def test_no_logic_only_in_notebooks():
    """Code cells are short calls into the package: no function or class definitions, no loops of work."""
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not re.search(r"^\s*(def|class|async def) ", cell.source, re.M), name
                assert len(cell.source.splitlines()) <= 20, name


# ----------------------------------------------------------------------------- execution
COMBINED = "lora+bitfit+meta_adapter"
COMBINED_RUN = f"02_lora[{COMBINED}]"  # notebook 02 run a second time, for the combined method


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run 00..08 in order with the smoke profile into fresh roots (and 02 a second time for the
    combined method, before the report); returns roots, outputs and errors."""
    base = tmp_path_factory.mktemp("notebooks")
    roots = {"runs_root": str(base / "runs"), "figures_root": str(base / "figures"), "cache_root": str(base / "cache")}
    extra = {"07_failure_analysis": {"k": 4}, COMBINED_RUN: {"method": COMBINED}}
    plan = [(name, name) for name in NAMES]
    plan.insert(NAMES.index("02_lora") + 1, (COMBINED_RUN, "02_lora"))
    outputs, errors, seconds = {}, {}, {}
    for name, notebook in plan:
        out = base / "executed" / f"{name}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        try:
            papermill.execute_notebook(str(NOTEBOOKS / f"{notebook}.ipynb"), str(out),
                                       parameters={"profile": "smoke", **roots, **extra.get(name, {})},
                                       kernel_name=study.KERNEL_NAME, progress_bar=False, cwd=str(NOTEBOOKS))
        except Exception as exc:  # reported by the test of that notebook
            errors[name] = f"{type(exc).__name__}: {exc}"
        seconds[name] = round(time.time() - t0, 1)
        outputs[name] = out
    print("notebook seconds:", seconds)
    return {"roots": roots, "outputs": outputs, "errors": errors}


def spec_of(executed, **params):
    return resolve_run("smoke", None, **executed["roots"], **params)


def outputs_of(path: Path) -> list[dict]:
    return [o for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" for o in c.outputs]


def has_image(path: Path) -> bool:
    return any("image/png" in o.get("data", {}) for o in outputs_of(path))


def check_run(executed, method: str) -> None:
    spec = spec_of(executed, method=method)
    assert spec.is_finished()
    assert spec.predictions_path.is_file()
    record = json.loads(spec.record_path.read_text())
    assert record["config"]["method"] == spec.config.method and "total" in record["timings"]
    for name in ("confusion_normalized.png", "per_class_accuracy.png", "per_class.csv"):
        assert (spec.figure_dir / name).is_file(), name
    if spec.config.trains:
        assert spec.checkpoint_path.is_file()


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_with_smoke_parameters(executed, name):
    assert name not in executed["errors"], executed["errors"].get(name)
    path = executed["outputs"][name]
    assert not any(o["output_type"] == "error" for o in outputs_of(path))
    if name == "00_data":
        spec = spec_of(executed)
        assert all(p.is_file() for p in spec.data_outputs())
        assert (spec.split_dir / f"{spec.dataset}-k{spec.config.shots}-s{spec.config.seed}.json").is_file()
    elif name == "01_zero_shot":
        check_run(executed, "zero_shot")
    elif name in ("02_lora", "03_bitfit", "04_meta_adapter"):
        check_run(executed, name.split("_", 1)[1])
    elif name == "05_augment_generate":
        spec = spec_of(executed, method="lora+aug-classic")
        out = pipeline.augmentation_dir(spec)
        assert (out / "manifest.jsonl").is_file()
        assert (spec.augmentation_figure_dir(out.name) / "gallery.png").is_file()
    elif name == "06_augment_train":
        check_run(executed, "lora+aug-classic")
    elif name == "07_failure_analysis":
        a, b = spec_of(executed, method="zero_shot"), spec_of(executed, method="lora")
        summary = json.loads(b.failure_summary_path(a).read_text())
        assert summary["baseline"] == a.id and summary["adapted"] == b.id
        figs = b.figure_dir
        assert (figs / f"improvements_vs_zero_shot-{a.variant}.csv").is_file() and (figs / "clusters.png").is_file()
        assert b.failure_name("regressions", a) == f"regressions_vs_zero_shot-{a.variant}"  # the baseline's variant too
        browser_pngs = sorted(p.name for p in (figs / "browser").glob("*.png"))
        assert len(browser_pngs) == 2 * 4  # headless browser: every class, correct and incorrect
        widget = [o for o in outputs_of(path) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert widget, "the failure browser widget is displayed"
    elif name == "08_report_tables":
        spec = spec_of(executed)
        assert all(p.is_file() for p in spec.table_paths())
        md = spec.table_paths()[1].read_text()
        for method in ("zero_shot", "lora", "bitfit", "meta_adapter", "lora+aug-classic"):
            assert f"| {method} " in md
    assert has_image(path), f"{name} shows its figures inline"


def test_notebook_02_runs_the_combined_method(executed):
    assert COMBINED_RUN not in executed["errors"], executed["errors"].get(COMBINED_RUN)
    assert not any(o["output_type"] == "error" for o in outputs_of(executed["outputs"][COMBINED_RUN]))
    check_run(executed, COMBINED)


# The smoke study (tiny-vit, random weights, generated data, K=2, seed 1) as its notebooks record it:
# per method (top-1, balanced accuracy, checksum of the test predictions), pinned from a run of these
# notebooks, so that a change of what a number means, or training that no longer trains, shows up
# here. The checksum is the SHA-256 of the argmax predictions as int64 (test-split order), first 16
# hex digits. Tolerance: the smoke profile runs in fp32, so only summation-order noise across CPUs
# is allowed, far below one of the 24 test images (1/24 = 0.042); the smallest gap between the top
# two logits of any test image is 0.09 (in logit units, 100 x cosine), so noise cannot move an argmax.
PINNED_SMOKE = {
    "zero_shot": (0.25, 0.25, "8fabe076e4cb5bef"),
    "lora": (0.5, 0.5, "7712ed607890c2cb"),
    "bitfit": (0.5, 0.5, "9d4cf376ec57379b"),
    "meta_adapter": (0.5, 0.5, "00df724dadebd891"),
    COMBINED: (1.0, 1.0, "b712b461082675ff"),
    "lora+aug-classic": (0.5, 0.5, "b1290f669d3c5a1b"),
}
PINNED_TOLERANCE = 0.02
TRAINED = [m for m in PINNED_SMOKE if m != "zero_shot"]
CHANCE = 0.25  # 4 classes


def predictions_checksum(preds: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(preds, dtype=np.int64).tobytes()).hexdigest()[:16]


def smoke_results(executed) -> dict[str, tuple[dict, np.ndarray]]:
    """``{method: (record metrics, argmax test predictions)}`` as the executed notebooks wrote them."""
    out = {}
    for method in PINNED_SMOKE:
        spec = spec_of(executed, method=method)
        assert spec.is_finished(), f"{method}: no finished run ({executed['errors']})"
        metrics = json.loads(spec.record_path.read_text())["metrics"]
        out[method] = (metrics, Predictions.load(spec.predictions_path).logits.argmax(1))
    return out


def test_smoke_metrics_and_predictions_match_pinned_values(executed):
    """The recommenders pattern: notebooks record values (run records, predictions), the test reads
    them back."""
    got = smoke_results(executed)
    print("smoke (top1, balanced, checksum):",
          {m: (round(r["top1"], 4), round(r["balanced"], 4), predictions_checksum(p)) for m, (r, p) in got.items()})
    for method, (top1, balanced, checksum) in PINNED_SMOKE.items():
        metrics, preds = got[method]
        assert abs(metrics["top1"] - top1) <= PINNED_TOLERANCE, f"{method}: top1 {metrics['top1']:.4f}, pinned {top1:.4f}"
        assert abs(metrics["balanced"] - balanced) <= PINNED_TOLERANCE, \
            f"{method}: balanced {metrics['balanced']:.4f}, pinned {balanced:.4f}"
        assert predictions_checksum(preds) == checksum, f"{method}: other test predictions than the pinned ones"


def test_every_trained_method_changes_zero_shots_predictions(executed):
    """Training visibly trains: each trained method predicts some test image otherwise than zero-shot
    (same model, same images), and its pinned accuracy is away from chance."""
    got = smoke_results(executed)
    zero_shot = got["zero_shot"][1]
    for method in TRAINED:
        preds = got[method][1]
        assert preds.shape == zero_shot.shape
        assert (preds != zero_shot).any(), f"{method} predicts every test image as zero-shot does: it did not train"
        assert abs(PINNED_SMOKE[method][0] - CHANCE) >= 0.2, f"{method}: pinned top1 near chance"
