"""The generation loop: :func:`generate` writes images under ``out_dir`` and appends one manifest row per
image right after the image is written (atomically: temporary file + ``os.replace``). A rerun skips
every image already on disk and an interrupted run resumes where it stopped; the generator's settings
are stored in ``out_dir/generator.json`` on the first run (:mod:`.manifest`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..datasets import Sample
from ..settings import AugmentError, check_kind
from .interface import ImageGenerator, Kind, SourceImage, derive_seed, make_generator
from .manifest import (
    MANIFEST_FILE, Manifest, ManifestMismatchError, ManifestRow, _append_row, _check_or_write_settings,
    _drop_truncated_tail, output_path,
)


def _atomic_save_image(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    image.save(tmp)
    os.replace(tmp, path)


def generate(
    samples: Sequence[Sample],
    image_root: str | Path,
    classnames: Sequence[str],
    out_dir: str | Path,
    kind: Kind,
    generator: ImageGenerator | str = "classic",
    progress: bool = True,
) -> Manifest:
    """Make ``kind`` images for every sample with ``generator``; skip those already on disk.

    Args:
        samples: source images (paths relative to ``image_root``); duplicates are made once.
        image_root: folder the sample paths are relative to.
        classnames: class names ordered by label (diffusion prompts, folder names).
        out_dir: output folder; one generator configuration per folder (see the module docstring).
        kind: ``"preserving"`` (one low strength) or ``"breaking"`` (each breaking strength).
        generator: an :class:`ImageGenerator` or a name for :func:`make_generator`.
        progress: show a progress bar.

    Returns:
        The manifest of exactly the requested images (``kind`` rows of these samples); the file
        ``out_dir/manifest.jsonl`` may hold more (other kinds, other samples).

    Raises:
        ManifestMismatchError: ``out_dir`` belongs to other generator settings.
        GeneratorUnavailableError: the generator's model cannot be loaded (e.g. offline).
    """
    check_kind(kind)
    gen = make_generator(generator) if isinstance(generator, str) else generator
    root, image_root = Path(out_dir), Path(image_root)
    root.mkdir(parents=True, exist_ok=True)
    settings = _check_or_write_settings(root, gen)
    _drop_truncated_tail(root / MANIFEST_FILE)
    existing = Manifest.load(root)
    foreign = {(r.generator, r.model_id) for r in existing.rows} - {(gen.name, gen.model_id)}
    if foreign:
        raise ManifestMismatchError(f"'{root}/{MANIFEST_FILE}' holds rows of other generators {sorted(foreign)}; use another out_dir.")
    registered = {r.output_path for r in existing.rows}

    sources: list[SourceImage] = []
    seen: set[str] = set()
    for s in samples:
        if s.path in seen:
            continue
        seen.add(s.path)
        if not 0 <= s.label < len(classnames):
            raise AugmentError(f"Sample '{s.path}' has label {s.label} outside the {len(classnames)} class names.")
        sources.append(SourceImage(s.path, image_root / s.path, s.label, classnames[s.label]))
    gen.prepare(sources)

    manifest_file = root / MANIFEST_FILE
    rows: list[ManifestRow] = []
    jobs = [(src, st) for src in sources for st in gen.config.strengths(kind)]
    made = 0
    bar = tqdm(jobs, desc=f"{gen.name} {kind}", disable=not progress)
    for src, strength in bar:
        prompt = gen.prompt(src.classname)
        todo = [
            ManifestRow(
                src.path, src.label, src.classname, kind, strength,
                derive_seed(gen.config.seed, src.path, kind, strength, i),
                gen.name, gen.model_id, prompt, output_path(kind, src, strength, i), i,
            )
            for i in range(gen.config.num_samples)
        ]
        rows += todo
        missing = [r for r in todo if not (root / r.output_path).is_file()]
        for r in todo:  # written by an interrupted run just before its row: register it
            if r not in missing and r.output_path not in registered:
                _append_row(manifest_file, r)
                registered.add(r.output_path)
        if not missing:
            continue
        images = gen.make(src, _load_source(src), kind, strength, [r.seed for r in missing])
        if len(images) != len(missing):
            raise AugmentError(f"{gen.describe()} returned {len(images)} images for {len(missing)} seeds.")
        for r, img in zip(missing, images):
            _atomic_save_image(img, root / r.output_path)
            if r.output_path not in registered:
                _append_row(manifest_file, r)
                registered.add(r.output_path)
            made += 1
        bar.set_postfix(made=made)
    return Manifest(root, rows, settings, image_root)


def _load_source(src: SourceImage):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src.file) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise AugmentError(f"Cannot read source image '{src.file}': {exc}") from exc
