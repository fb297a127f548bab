"""One interface for augmentation generators, an on-disk manifest, and torch datasets over it.

A *generator* (:class:`ImageGenerator`: ``classic`` or ``diffusion``) turns a source image into
``num_samples`` new images at a given *strength*. Low strength gives **label-preserving** images
(they join the supervised loss with the source's label: :class:`PreservingReplacement` as LRV,
:class:`PreservingExtension` as the seed report), high strength gives **label-breaking** images
(a pair per source - one breaking image and an augmented copy of it, or two breaking images - feeds
the unsupervised breaking loss, see :class:`BreakingPairDataset` and
:mod:`lowres_clip.augment.breaking_loss`).

:func:`generate` writes images under ``out_dir`` and appends one row per image to
``out_dir/manifest.jsonl`` right after the image is written (atomically: temporary file +
``os.replace``). A rerun skips every image already on disk and an interrupted run resumes where it
stopped. The generator's settings (generator name, model id, prompt template, strengths, number of
samples, seed, steps...) are stored in ``out_dir/generator.json`` on the first run.

**Mixing guard (documented behaviour):** :func:`generate` *refuses* (:class:`ManifestMismatchError`)
to write into a folder whose ``generator.json`` holds other settings; it never mixes images of two
configurations. To keep several configurations side by side, give each its own folder:
:func:`default_out_dir` / :func:`settings_folder_name` name the folder after a hash of the settings.

Layout of ``out_dir``::

    generator.json                  settings + fingerprint of the generator that owns the folder
    manifest.jsonl                  one JSON object per generated image (ManifestRow fields)
    preserving/<label>-<class>/<source>-<hash>_s030_0.png
    breaking/<label>-<class>/<source>-<hash>_s060_0.png
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal, Sequence

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..datasets import ImageDataset, Sample
from ..models import ModelUnavailableError
from ..spec import default_cache_root
from ..settings import KINDS, PAIRINGS, AugmentError, GeneratorConfig, check_kind, runtime_field  # noqa: F401

Kind = Literal["preserving", "breaking"]
MANIFEST_FILE = "manifest.jsonl"
SETTINGS_FILE = "generator.json"


class ManifestMismatchError(AugmentError):
    """An output folder already holds images made with other generator settings."""


class GeneratorUnavailableError(AugmentError, ModelUnavailableError):
    """A generator's model (e.g. Stable Diffusion weights) cannot be loaded."""



def derive_seed(base_seed: int, source_path: str, kind: str, strength: float, sample_index: int) -> int:
    """A stable 31-bit seed for one output image (independent of run order and subset)."""
    key = f"{base_seed}|{source_path}|{kind}|{strength:.4f}|{sample_index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") & 0x7FFFFFFF


# ----------------------------------------------------------------------------- generators
@dataclass(frozen=True)
class SourceImage:
    """A source image handed to a generator: dataset-relative ``path``, absolute ``file``, label."""

    path: str
    file: Path
    label: int
    classname: str


GENERATORS: dict[str, type["ImageGenerator"]] = {}  # name -> class; filled as generator modules load


class ImageGenerator(abc.ABC):
    """The interface every generator implements.

    Subclasses set :attr:`name`, hold a :class:`GeneratorConfig` in :attr:`config` and implement
    :meth:`make`. :func:`generate` does everything else (paths, seeds, skipping, manifest).
    """

    name: ClassVar[str] = ""
    config: GeneratorConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            GENERATORS[cls.name] = cls

    @classmethod
    def from_options(cls, dataset: str | None = None, **config: Any) -> "ImageGenerator":
        """A generator from its config fields (``dataset`` lets a generator pick per-dataset defaults)."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Identifier of the model / transform version that makes the images."""

    def prompt(self, classname: str) -> str:
        """Text prompt for a class (empty for generators without text conditioning)."""
        return ""

    def settings(self) -> dict[str, Any]:
        """Everything that identifies the images this generator makes (stored in ``generator.json``)."""
        return {"generator": self.name, "model_id": self.model_id, **self.config.settings()}

    def fingerprint(self) -> str:
        """A short hash of :meth:`settings`."""
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        """Human-readable name used in figure titles, e.g. ``diffusion (CompVis/stable-diffusion-v1-4)``."""
        return f"{self.name} ({self.model_id})"

    def prepare(self, sources: Sequence[SourceImage]) -> None:
        """Called once per :func:`generate` call with all its source images (default: nothing)."""

    def availability_problem(self, probe: bool = True) -> str | None:
        """One line saying what this generator needs to make images and does not find on this machine,
        or ``None`` (loads and downloads nothing; ``probe``: it may ask the network whether a missing
        model can be downloaded now). The preflight asks this before any notebook runs. Default:
        nothing is needed."""
        return None

    @abc.abstractmethod
    def make(self, source: SourceImage, image, kind: str, strength: float, seeds: Sequence[int]) -> list:
        """Return one PIL image per seed, made from ``image`` (the source, RGB PIL) at ``strength``."""


def make_generator(name: str, dataset: str | None = None, **config: Any) -> ImageGenerator:
    """Build a generator by name: ``"classic"`` or ``"diffusion"``.

    Args:
        name: generator name.
        dataset: dataset name; picks the diffusion prompt template (ignored by ``classic``).
        **config: fields of :class:`~lowres_clip.augment.classic.ClassicConfig` or
            :class:`~lowres_clip.augment.diffusion.DiffusionConfig`.
    """
    if name not in GENERATORS:
        raise AugmentError(f"Unknown generator {name!r}; choose one of {sorted(GENERATORS)}.")
    return GENERATORS[name].from_options(dataset, **config)


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


# ----------------------------------------------------------------------------- manifest
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


def _atomic_save_image(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    image.save(tmp)
    os.replace(tmp, path)


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


# ----------------------------------------------------------------------------- generate
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


# ----------------------------------------------------------------------------- torch datasets
def _require_rows(manifest: Manifest, kind: str) -> list[ManifestRow]:
    rows = [r for r in manifest.rows if r.kind == kind]
    if not rows:
        raise AugmentError(f"The manifest of '{manifest.root}' has no {kind} rows; run generate(..., kind={kind!r}) first.")
    return rows


class PreservingDataset(ImageDataset):
    """Label-preserving images of a manifest: ``(image, source label, index)`` like ``ImageDataset``.

    :attr:`source_paths` names each item's source image, so that the training loop can replace a
    training image by one of *its own* label-preserving images (LRV's protocol) or count a
    preserving image as its source for the Meta-Adapter's support masking.

    Args:
        manifest: a manifest (its ``preserving`` rows are used; other rows are ignored).
        transform: image transform (e.g. ``ClipBundle.preprocess_train``).
    """

    def __init__(self, manifest: Manifest, transform: Callable | None = None):
        self.rows = _require_rows(manifest, "preserving")
        super().__init__(manifest.root, [Sample(r.output_path, r.label) for r in self.rows], transform)

    @property
    def source_paths(self) -> list[str]:
        """The source image path (relative to the dataset's image root) of every item."""
        return [r.source_path for r in self.rows]


def _source_index(train_set, preserving) -> list[int]:
    """For every preserving item, the index of its source image in ``train_set`` (-1: not there)."""
    samples = getattr(train_set, "samples", None)
    sources = getattr(preserving, "source_paths", None)
    if samples is None or sources is None:
        raise AugmentError(
            "Label-preserving images must name their source images (PreservingDataset.source_paths) and the "
            "training set its samples (ImageDataset.samples) so that each image is matched to its source; "
            f"got {type(preserving).__name__} and {type(train_set).__name__}."
        )
    where = {s.path: i for i, s in enumerate(samples)}
    return [where.get(p, -1) for p in sources]


class PreservingReplacement:
    """LRV's label-preserving protocol: ``(image, label, index, weight)`` over the training set.

    Item ``i`` is training image ``i`` with weight 1 or, with probability ``p``, one of *its*
    label-preserving images (drawn uniformly) with weight ``weight``; ``index`` is ``i`` either
    way. The training loop averages the cross-entropy as ``sum(w l) / sum(w)`` (LRV
    ``train_circuit.py``: ``torch.sum(loss_fn(outputs, labels) * weights) / torch.sum(weights)``; note
    that its ``nn.CrossEntropyLoss()`` reduces to the mean before the weights multiply, so the script
    as published weights nothing - this class and the loop implement the per-image weighting it
    writes). Coin flips and choices use torch's RNG, like a random transform (see
    :class:`BreakingPairDataset`). Training images without preserving images are never replaced.

    Args:
        train_set: the training images (``ImageDataset``: ``(image, label, index)`` with ``samples``).
        preserving: their label-preserving images (:class:`PreservingDataset`).
        p: replacement probability per image and draw (LRV ``aug_prob`` 0.3).
        weight: loss weight of a replaced image (LRV ``aug_weight`` 0.65).
    """

    def __init__(self, train_set, preserving, p: float = 0.3, weight: float = 0.65):
        if not 0.0 <= p <= 1.0 or weight <= 0:
            raise AugmentError(f"replacement probability must be in [0, 1] and weight > 0, got p={p}, weight={weight}.")
        self.train_set, self.preserving, self.p, self.weight = train_set, preserving, float(p), float(weight)
        self.options: list[list[int]] = [[] for _ in range(len(train_set))]
        for j, i in enumerate(_source_index(train_set, preserving)):
            if i >= 0:
                self.options[i].append(j)
        missing = sum(not o for o in self.options)
        if missing == len(self.options):
            raise AugmentError("No training image has a label-preserving image; generate them for this training set.")
        if missing:
            warnings.warn(f"{missing} of {len(self.options)} training images have no label-preserving image and are "
                          "never replaced.", stacklevel=2)

    def __len__(self) -> int:
        return len(self.train_set)

    def __getitem__(self, i: int):
        options = self.options[i]
        if options and float(torch.rand(())) < self.p:
            j = options[int(torch.randint(len(options), ()))]
            image, label, _ = self.preserving[j]
            return image, label, i, self.weight
        image, label, idx = self.train_set[i]
        return image, label, idx, 1.0


class PreservingExtension:
    """The seed report's label-preserving protocol: ``(image, label, index, weight)`` over the training
    images followed by every label-preserving image (weight 1 each).

    A preserving item's ``index`` is its source's index in ``train_set`` (so the Meta-Adapter leaves
    the source out of the query's support), and its label is the source's. The seed authors'
    ``datasets/circuits.py`` appends each preserving image as one more training item.

    Args:
        train_set: the training images (``ImageDataset`` with ``samples``).
        preserving: their label-preserving images (:class:`PreservingDataset`).
    """

    def __init__(self, train_set, preserving):
        self.train_set, self.preserving = train_set, preserving
        self.source = _source_index(train_set, preserving)
        if any(i < 0 for i in self.source):
            bad = next(p for p, i in zip(preserving.source_paths, self.source) if i < 0)
            raise AugmentError(f"label-preserving image of '{bad}', which is not in the training set; generate the "
                               "images for this training set.")

    def __len__(self) -> int:
        return len(self.train_set) + len(self.preserving)

    def __getitem__(self, i: int):
        if i < len(self.train_set):
            image, label, idx = self.train_set[i]
            return image, label, idx, 1.0
        j = i - len(self.train_set)
        image, label, _ = self.preserving[j]
        return image, label, self.source[j], 1.0


class BreakingPairDataset:
    """Pairs of label-breaking views per source image: ``(view1, view2, source_index)``.

    ``pairing`` says what the two views are:

    * ``augmented_copy`` (LRV's code, the default): one label-breaking image of the source (any
      strength, any sample) and an augmented copy of that same image; here the copy is a second,
      independent draw of the random ``transform`` (LRV loads copies made offline by a generator
      that its repository does not include);
    * ``two_breaking`` (the seed report's code): two *different* label-breaking images of the source.

    One item per source image with enough outputs (one, or two for ``two_breaking``). Item ``i``
    draws its images with torch's RNG, like a random transform: a ``DataLoader`` with a seeded
    ``generator`` gives reproducible pairs and new pairs every epoch (workers are seeded from it);
    with ``num_workers=0`` the global seed decides. ``source_index`` is ``i``; :attr:`sources` maps
    it to the source path. Sources without enough outputs are dropped with a warning.

    Args:
        manifest: a manifest (its ``breaking`` rows are used).
        transform: image transform applied to both views (drawn independently for each view).
        pairing: ``augmented_copy`` or ``two_breaking``.
    """

    def __init__(self, manifest: Manifest, transform: Callable | None = None, pairing: str = "augmented_copy"):
        if pairing not in PAIRINGS:
            raise AugmentError(f"Unknown breaking pairing {pairing!r}; choose one of {PAIRINGS}.")
        self.manifest, self.transform, self.pairing = manifest, transform, pairing
        need = 2 if pairing == "two_breaking" else 1
        groups: dict[str, list[int]] = {}
        rows = _require_rows(manifest, "breaking")
        for n, r in enumerate(rows):
            groups.setdefault(r.source_path, []).append(n)
        dropped = [p for p, g in groups.items() if len(g) < need]
        if dropped:
            warnings.warn(f"{len(dropped)} sources have fewer than two breaking outputs and are left out (e.g. {dropped[0]}).", stacklevel=2)
        self.sources = [p for p, g in groups.items() if len(g) >= need]
        if not self.sources:
            raise AugmentError("No source has two breaking outputs; generate with num_samples >= 2 or several breaking "
                               "strengths, or use the 'augmented_copy' pairing.")
        self._groups = [groups[p] for p in self.sources]
        self.rows = rows
        self.images = ImageDataset(manifest.root, [Sample(r.output_path, r.label) for r in rows], transform)

    def with_pairing(self, pairing: str) -> "BreakingPairDataset":
        """The same images and transform with another ``pairing`` (``self`` when it is already that)."""
        return self if pairing == self.pairing else BreakingPairDataset(self.manifest, self.transform, pairing)

    @property
    def strengths(self) -> list[float]:
        """The distinct generator strengths of the label-breaking images, ascending."""
        return sorted({r.strength for r in self.rows})

    def __len__(self) -> int:
        return len(self.sources)

    def pair(self, i: int, generator: torch.Generator | None = None) -> tuple[int, int]:
        """Row indices (into :attr:`rows`) of the two views of source ``i`` (equal for ``augmented_copy``)."""
        group = self._groups[i]
        order = torch.randperm(len(group), generator=generator).tolist()
        a = group[order[0]]
        return (a, a) if self.pairing == "augmented_copy" else (a, group[order[1]])

    def __getitem__(self, i: int):
        a, b = self.pair(i)
        if a == b:
            image = self.images.load_image(a)
            t = self.transform or (lambda x: x)
            return t(image), t(image), i
        return self.images[a][0], self.images[b][0], i
