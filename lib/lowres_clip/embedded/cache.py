"""The built model's cache folder: recipe key, build info, atomic writing, the single-threaded build
process and :func:`build_embedded`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import open_clip
import torch

from ..settings import EMBEDDED_MODEL
from .assemble import assemble_embedded, embedded_model_config
from .projection import TextProjection
from .recipe import (
    BUILD_VERSION, EMBEDDED_CAVEAT, EMBEDDED_PREPROCESS, EmbeddedBuildConfig, EmbeddedBuildError,
    SOURCE_PACKAGES, VISION_TIMM_MODEL, embedded_dir,
)

CHECKPOINT_NAME = "open_clip_model.safetensors"
ALIGNMENT_NAME = "alignment_data.safetensors"
INFO_NAME = "build_info.json"


def _recipe(config: EmbeddedBuildConfig) -> dict[str, Any]:
    versions = {}
    for name in SOURCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"build_version": BUILD_VERSION, "vision": VISION_TIMM_MODEL, "config": asdict(config), "sources": versions}


def _recipe_key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_build_info(folder: str | Path) -> dict[str, Any] | None:
    """``build_info.json`` of a built folder, or None when the folder is missing or incomplete."""
    path = Path(folder) / INFO_NAME
    if not path.is_file() or not (Path(folder) / CHECKPOINT_NAME).is_file():
        return None
    return json.loads(path.read_text())


def _is_current(folder: Path, config: EmbeddedBuildConfig) -> bool:
    info = read_build_info(folder)
    return info is not None and info.get("recipe_key") == _recipe_key(_recipe(config))


def _write_folder(folder: Path, model: torch.nn.Module, extras: dict[str, Any], info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / CHECKPOINT_NAME))
    save_file(
        {"text_embeddings": extras["text_embeddings"].contiguous(), "prototypes": extras["prototypes"].contiguous()},
        str(folder / ALIGNMENT_NAME),
    )
    model.text.config.save_pretrained(folder)  # config.json for the local-dir text tower
    open_clip.get_tokenizer(EMBEDDED_MODEL).save_pretrained(folder)
    local_cfg = embedded_model_config(text_dir=info["final_dir"])
    local_cfg["text_cfg"]["hf_model_pretrained"] = False
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": local_cfg, "preprocess_cfg": EMBEDDED_PREPROCESS}, indent=1)
    )
    info["checkpoint_sha256"] = _sha256(folder / CHECKPOINT_NAME)
    (folder / INFO_NAME).write_text(json.dumps(info, indent=1))  # written last: marks the folder complete
    for path in folder.iterdir():  # mkdtemp and safetensors create owner-only modes; a cache is shared
        path.chmod(0o644)
    folder.chmod(0o755)


SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _build_in_single_threaded_process(cache_dir: str | Path | None, force: bool, config: EmbeddedBuildConfig) -> Path:
    """Run :func:`build_embedded` in a child process whose thread counts are fixed to one from its
    start (:data:`SINGLE_THREAD_ENV`). Thread counts set later in a running process
    (``torch.set_num_threads``, ``threadpoolctl``) do not give the same bytes as a process started
    single-threaded (measured: two different builds), so every caller, a pytest run or a notebook
    kernel or a worker, gets the one build of this machine."""
    env = {**os.environ, **{k: "1" for k in SINGLE_THREAD_ENV}}
    code = ("import json, sys; from lowres_clip.embedded import EmbeddedBuildConfig, build_embedded; "
            "print(build_embedded(sys.argv[1] or None, sys.argv[2] == '1', EmbeddedBuildConfig(**json.loads(sys.argv[3]))))")
    done = subprocess.run([sys.executable, "-c", code, str(cache_dir or ""), "1" if force else "0", json.dumps(asdict(config))],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise EmbeddedBuildError(f"building {EMBEDDED_MODEL} in a single-threaded process failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def build_embedded(
    cache_dir: str | Path | None = None,
    force: bool = False,
    config: EmbeddedBuildConfig | None = None,
) -> Path:
    """Build (or reuse) the embedded model and return its cache folder (see :func:`embedded_dir`).

    A folder built with the same recipe is reused unless ``force``. The new folder is written under a
    temporary name and renamed into place, so concurrent or interrupted builds never leave a partial
    model behind. Builds are deterministic on a machine: same packages and recipe -> identical weights,
    whatever the calling process's thread counts (the build runs in a process started with one
    thread, :func:`_build_in_single_threaded_process`).

    Raises:
        EmbeddedBuildError: a source package is missing or its weights do not have the expected layout.
    """
    config = config or EmbeddedBuildConfig()
    folder = embedded_dir(cache_dir)
    if not force and _is_current(folder, config):
        return folder
    if any(os.environ.get(k) != "1" for k in SINGLE_THREAD_ENV):
        return _build_in_single_threaded_process(cache_dir, force, config)
    start = time.perf_counter()
    model, extras = assemble_embedded(config)
    recipe = _recipe(config)
    proj: TextProjection = extras["projection"]
    info = {
        "model": EMBEDDED_MODEL,
        "recipe": recipe,
        "recipe_key": _recipe_key(recipe),
        "final_dir": str(folder.resolve()),
        "ridge_alpha": proj.alpha,
        "cv_top1_by_alpha": proj.cv_top1,
        "build_seconds": round(time.perf_counter() - start, 2),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "caveat": EMBEDDED_CAVEAT,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-", dir=folder.parent))
    try:
        _write_folder(tmp, model, extras, info)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-old-", dir=folder.parent))
            os.replace(folder, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process put a folder there in the meantime
            if not _is_current(folder, config):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_alignment_data(folder: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(text_embeddings, prototypes)`` of the 1,000 ImageNet classes stored by a build."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else build_embedded()
    data = load_file(str(folder / ALIGNMENT_NAME))
    return data["text_embeddings"], data["prototypes"]
