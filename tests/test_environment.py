"""environment.yml and requirements.txt name the same packages and versions."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _pins(lines):
    return {l.split("==")[0].strip().lower().replace("_", "-"): l.split("==")[1].strip() for l in lines}


def test_conda_and_pip_pins_identical():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    reqs = [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert all("==" in r for r in reqs), "every requirement is pinned exactly"
    assert _pins(pip_section) == _pins(reqs)
    assert "python=3.11" in env["dependencies"]


def test_packages_the_study_names_are_pinned():
    pins = _pins(l for l in (REPO / "requirements.txt").read_text().splitlines() if "==" in l)
    for name in ("torch", "open-clip-torch", "peft", "diffusers", "jupyterlab", "papermill",
                 "ipywidgets", "umap-learn", "scikit-learn", "plotly"):
        assert name in pins, name
