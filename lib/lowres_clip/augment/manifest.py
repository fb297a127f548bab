"""The on-disk record of a generation folder: ``manifest.jsonl`` (one :class:`ManifestRow` per image,
appended right after the image is written) and ``generator.json`` (the settings that own the folder).

**Mixing guard (documented behaviour):** :func:`~lowres_clip.augment.generate` *refuses*
(:class:`ManifestMismatchError`) to write into a folder whose ``generator.json`` holds other settings;
it never mixes images of two configurations. To keep several configurations side by side, give each
its own folder: :func:`default_out_dir` / :func:`settings_folder_name` name the folder after a hash of
the settings.

Layout of ``out_dir``::

    generator.json                  settings + fingerprint of the generator that owns the folder
    manifest.jsonl                  one JSON object per generated image (ManifestRow fields)
    preserving/<label>-<class>/<source>-<hash>_s030_0.png
    breaking/<label>-<class>/<source>-<hash>_s060_0.png
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..atomic import atomic_write_text
from ..spec import default_cache_root
from ..settings import AugmentError, check_kind
from .interface import ImageGenerator, SourceImage

MANIFEST_FILE = "manifest.jsonl"
SETTINGS_FILE = "generator.json"


class ManifestMismatchError(AugmentError):
    """An output folder already holds images made with other generator settings."""


def settings_folder_name(generator: ImageGenerator) -> str:
    """Folder name keyed by the generator's settings, e.g. ``classic-3fa2c0d1e9b4``."""
    return f"{generator.name}-{generator.fingerprint()}"


def default_out_dir(dataset: str, generator: ImageGenerator, cache_root: str | Path | None = None) -> Path:
    """``<cache>/augment/<dataset>/<generator>-<settings hash>``: one folder per configuration.

    ``cache_root`` defaults to :func:`lowres_clip.spec.default_cache_root` (``$LOWRES_CLIP_CACHE``).
    """
    if cache_root is None:
        cache_root = default_cache_root()
    return Path(cache_root) / "augment" / dataset / settings_folder_name(generator)


@dataclass(frozen=True)
class ManifestRow:
    """One generated image.

    Attributes:
        source_path: source image path relative to the dataset's image root.
        label: class label of the source image.
        classname: class name of the source image.
        kind: ``preserving`` or ``breaking``.
        strength: generation strength.
        seed: the output's own seed (:func:`derive_seed`).
        generator: generator name (``classic`` / ``diffusion``).
        model_id: model id (diffusion) or transform version (classic).
        prompt: text prompt (empty for classic).
        output_path: image path relative to the manifest's folder.
        sample_index: index of this output among the ``num_samples`` of its (source, strength).
    """

    source_path: str
    label: int
    classname: str
    kind: str
    strength: float
    seed: int
    generator: str
    model_id: str
    prompt: str
    output_path: str
    sample_index: int


@dataclass
class Manifest:
    """Rows of generated images, with the folder they live in.

    Attributes:
        root: the output folder (``out_dir``); row output paths are relative to it.
        rows: the generated images.
        settings: the owning generator's settings (``generator.json``).
        image_root: image root of the source images (set by :func:`generate`; used by the gallery).
    """

    root: Path
    rows: list[ManifestRow]
    settings: dict[str, Any] = field(default_factory=dict)
    image_root: Path | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    @property
    def generator_label(self) -> str:
        """``classic (classic-v1)`` or ``diffusion (<model id>)`` for titles."""
        return f"{self.settings.get('generator', '?')} ({self.settings.get('model_id', '?')})"

    def file(self, row: ManifestRow) -> Path:
        """Absolute path of a row's image."""
        return self.root / row.output_path

    def filter(self, kind: str | None = None, sources: Sequence[str] | None = None) -> "Manifest":
        """Rows of one ``kind`` and / or of the given source paths."""
        if kind is not None:
            check_kind(kind)
        keep = set(sources) if sources is not None else None
        rows = [r for r in self.rows if (kind is None or r.kind == kind) and (keep is None or r.source_path in keep)]
        return Manifest(self.root, rows, self.settings, self.image_root)

    def __add__(self, other: "Manifest") -> "Manifest":
        """Rows of both manifests (same folder only), e.g. preserving + breaking for the gallery."""
        if Path(other.root) != Path(self.root):
            raise AugmentError(f"Cannot join manifests of different folders: '{self.root}' and '{other.root}'.")
        seen = {r.output_path for r in self.rows}
        rows = self.rows + [r for r in other.rows if r.output_path not in seen]
        return Manifest(self.root, rows, self.settings, self.image_root or other.image_root)

    @classmethod
    def load(cls, out_dir: str | Path, image_root: str | Path | None = None) -> "Manifest":
        """Read ``out_dir/manifest.jsonl`` (and ``generator.json``).

        A truncated last line (a run killed while writing it) is skipped with a warning; the
        image it described is re-registered by the next :func:`generate` run.
        """
        root = Path(out_dir)
        settings = _read_settings(root) or {}
        rows: dict[str, ManifestRow] = {}
        path = root / MANIFEST_FILE
        if path.is_file():
            lines = path.read_text().splitlines()
            for n, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    row = ManifestRow(**json.loads(line))
                except (json.JSONDecodeError, TypeError) as exc:
                    if n == len(lines) - 1:
                        warnings.warn(f"{path}: skipping a truncated last line ({exc}).", stacklevel=2)
                        continue
                    raise AugmentError(f"{path}, line {n + 1} is not a manifest row ({exc}); delete the folder to regenerate.") from exc
                rows[row.output_path] = row
        return cls(root, list(rows.values()), settings, Path(image_root) if image_root else None)


def _read_settings(root: Path) -> dict[str, Any] | None:
    path = root / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["settings"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise AugmentError(f"Cannot read '{path}' ({exc}); delete '{root}' to regenerate.") from exc


def _check_or_write_settings(root: Path, generator: ImageGenerator) -> dict[str, Any]:
    """Store the generator's settings in a new folder; refuse a folder owned by other settings."""
    mine = json.loads(json.dumps(generator.settings()))
    theirs = _read_settings(root)
    if theirs is None:
        if (root / MANIFEST_FILE).is_file():
            raise ManifestMismatchError(
                f"'{root}' holds a manifest but no {SETTINGS_FILE}, so its images cannot be attributed to "
                "a generator configuration. Use another out_dir or delete this one."
            )
        atomic_write_text(root / SETTINGS_FILE, json.dumps({"settings": mine, "fingerprint": generator.fingerprint()}, indent=1))
        return mine
    if theirs != mine:
        diff = {k: (theirs.get(k), mine.get(k)) for k in sorted(set(theirs) | set(mine)) if theirs.get(k) != mine.get(k)}
        shown = "; ".join(f"{k}: folder has {a!r}, requested {b!r}" for k, (a, b) in diff.items())
        raise ManifestMismatchError(
            f"'{root}' already holds images made with other generator settings ({shown}). Images of two "
            f"configurations are never mixed: use another out_dir, e.g. '{root.parent / settings_folder_name(generator)}' "
            "(see default_out_dir / settings_folder_name), or delete the folder to regenerate."
        )
    return mine


def _drop_truncated_tail(path: Path) -> None:
    """Remove a half-written last line (a killed run) so that appended rows start on a new line."""
    if not path.is_file():
        return
    text = path.read_text()
    if text and not text.endswith("\n"):
        warnings.warn(f"{path}: dropping a truncated last line; its image (if any) is re-registered.", stacklevel=3)
        atomic_write_text(path, text[: text.rfind("\n") + 1])


def _append_row(path: Path, row: ManifestRow) -> None:
    with path.open("a") as f:
        f.write(json.dumps(dataclasses.asdict(row)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _safe(s: str, n: int = 40) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:n]


def output_path(kind: str, source: SourceImage, strength: float, sample_index: int) -> str:
    """Output image path relative to ``out_dir`` (unique per source path, strength, sample)."""
    h = hashlib.sha1(source.path.encode()).hexdigest()[:8]
    stem = _safe(Path(source.path).stem, 32)
    cls = f"{source.label:03d}-{_safe(source.classname, 24)}"
    return f"{kind}/{cls}/{stem}-{h}_s{round(strength * 100):03d}_{sample_index}.png"
