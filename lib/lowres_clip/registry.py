"""The method registry: every method of the study, and the one grammar of method labels.

A *method* is one :class:`Method` entry: its name, the :class:`~lowres_clip.config.RunConfig`
field holding its settings (and that field's class), the notebook that runs it, whether it has a
training loop, which encoder towers it trains, and whether it combines with others. Adding a
method is one entry here plus its module under :mod:`lowres_clip.methods`.

A *method label* names what a run does, as it appears in run keys, grids and tables:

    label   := method [ "+aug-" kind [ "-" use ] ]
    method  := zero_shot | linear_probe | adapter { "+" adapter }
    adapter := lora | bitfit | meta_adapter          (written in registry order)
    kind    := classic | diffusion ; use := preserving | breaking   (absent: both)

e.g. ``lora``, ``lora+bitfit+meta_adapter``, ``lora+aug-classic``, ``lora+aug-diffusion-breaking``.
:func:`parse_label` is the only parser of that grammar and :meth:`MethodLabel.__str__` the only
writer; every other module asks them. This module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .settings import BitFitConfig, ConfigError, LoraConfig, MetaAdapterConfig, check_encoders

AUGMENTATIONS = ("none", "classic", "diffusion")
AUGMENT_USES = ("both", "preserving", "breaking")
AUG_PREFIX = "aug-"


def _encoder_towers(settings: Any) -> tuple[str, ...]:
    return check_encoders(settings.encoders)


@dataclass(frozen=True)
class Method:
    """One method of the study.

    Attributes:
        name: the method's name in labels (``lora``).
        notebook: the numbered notebook that runs it (combinations run in their first part's).
        description: one line for tables and ``--help``.
        config_field: the :class:`~lowres_clip.config.RunConfig` field holding its settings.
        config_class: that field's dataclass.
        trains: whether it has a training loop (zero-shot and the linear probe do not).
        combines: whether it combines with other adapters through ``+``.
        towers: which encoder towers it trains, given its settings (``None``: none).
    """

    name: str
    notebook: str
    description: str
    config_field: str | None = None
    config_class: type | None = None
    trains: bool = False
    combines: bool = False
    towers: Callable[[Any], tuple[str, ...]] | None = None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("zero_shot", "01_zero_shot.ipynb", "zero-shot CLIP (class prompts, no training)"),
    Method("linear_probe", "01_zero_shot.ipynb", "logistic regression on frozen image features"),
    Method("lora", "02_lora.ipynb", "CLIP-LoRA: low-rank adapters on q, k, v", "lora", LoraConfig,
           trains=True, combines=True, towers=_encoder_towers),
    Method("bitfit", "03_bitfit.ipynb", "BitFit: train the biases", "bitfit", BitFitConfig,
           trains=True, combines=True, towers=_encoder_towers),
    Method("meta_adapter", "04_meta_adapter.ipynb", "Meta-Adapter: gated attention of class text over support images",
           "meta_adapter", MetaAdapterConfig, trains=True, combines=True),
)}
METHOD_ORDER = tuple(METHODS)
ADAPTERS = tuple(name for name, m in METHODS.items() if m.combines)
TRAINING_FREE = tuple(name for name, m in METHODS.items() if not m.trains)
AUGMENT_NOTEBOOK = "06_augment_train.ipynb"


@dataclass(frozen=True)
class MethodLabel:
    """A parsed method label (see the module docstring); ``str(label)`` is its canonical text.

    Attributes:
        parts: the methods it combines, in registry order.
        aug_kind: ``none``, ``classic`` or ``diffusion``.
        aug_use: ``both``, ``preserving`` or ``breaking``.
    """

    parts: tuple[str, ...]
    aug_kind: str = "none"
    aug_use: str = "both"

    @property
    def method(self) -> str:
        """The method without augmentation (``lora+bitfit``)."""
        return "+".join(self.parts)

    @property
    def augmented(self) -> bool:
        return self.aug_kind != "none"

    @property
    def aug_suffix(self) -> str:
        """``aug-classic`` / ``aug-classic-breaking`` (``""`` without augmentation)."""
        if not self.augmented:
            return ""
        return AUG_PREFIX + self.aug_kind + ("" if self.aug_use == "both" else f"-{self.aug_use}")

    @property
    def trains(self) -> bool:
        return any(METHODS[p].trains for p in self.parts)

    @property
    def notebook(self) -> str:
        """The notebook that runs this label."""
        return AUGMENT_NOTEBOOK if self.augmented else METHODS[self.parts[0]].notebook

    def sort_key(self) -> tuple:
        """Study order: baselines, single adapters, combinations, augmented runs."""
        return (self.augmented, len(self.parts), METHOD_ORDER.index(self.parts[0]), str(self))

    def __str__(self) -> str:
        return "+".join((*self.parts, self.aug_suffix) if self.augmented else self.parts)


def parse_method(method: str) -> tuple[str, ...]:
    """Validate a method name without augmentation; its parts in registry order.

    Raises:
        ConfigError: an unknown part, a part named twice, or a training-free method combined.
    """
    if not isinstance(method, str) or not method.strip():
        raise ConfigError(f"method: expected a method name such as 'lora', got {method!r}.")
    parts = [p.strip() for p in method.split("+")]
    for p in parts:
        if p not in METHODS:
            hint = (" Augmentation goes in 'augmentation.kind' or a label like 'lora+aug-classic'."
                    if p.startswith("aug") else "")
            raise ConfigError(f"method: unknown method {p!r} in {method!r}; choose from {METHOD_ORDER} "
                              f"(adapters combine with '+', e.g. 'lora+bitfit+meta_adapter').{hint}")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"method: {method!r} names a method twice.")
    if len(parts) > 1 and any(p not in ADAPTERS for p in parts):
        raise ConfigError(f"method: {method!r}: only {ADAPTERS} combine; "
                          f"{' and '.join(TRAINING_FREE)} stand alone.")
    return tuple(sorted(parts, key=METHOD_ORDER.index))


def parse_label(label: str | MethodLabel) -> MethodLabel:
    """Parse a method label (``lora+aug-classic-breaking``); the one parser of the grammar.

    Raises:
        ConfigError: unknown methods, augmentation kinds or uses; augmentation of a method that
            does not train; more than one augmentation suffix.
    """
    if isinstance(label, MethodLabel):
        return label
    parts = [p.strip() for p in str(label).split("+")]
    aug = [p for p in parts if p.startswith(AUG_PREFIX)]
    if len(aug) > 1:
        raise ConfigError(f"method: {label!r} has more than one augmentation suffix.")
    methods = parse_method("+".join(p for p in parts if not p.startswith(AUG_PREFIX)))
    if not aug:
        return MethodLabel(methods)
    kind, _, use = aug[0][len(AUG_PREFIX):].partition("-")
    return make_label(methods, kind, use or "both", where=repr(label))


def make_label(method: str | tuple[str, ...], aug_kind: str = "none", aug_use: str = "both",
               where: str = "") -> MethodLabel:
    """The label of ``method`` with an augmentation kind and use (validated)."""
    parts = parse_method(method) if isinstance(method, str) else parse_method("+".join(method))
    at = f" in {where}" if where else ""
    if aug_kind not in AUGMENTATIONS:
        raise ConfigError(f"method: unknown augmentation {aug_kind!r}{at}; choose from {AUGMENTATIONS[1:]}.")
    if aug_use not in AUGMENT_USES:
        raise ConfigError(f"method: unknown augmentation use {aug_use!r}{at}; choose from {AUGMENT_USES}.")
    label = MethodLabel(parts, aug_kind, aug_use if aug_kind != "none" else "both")
    if label.augmented and not label.trains:
        raise ConfigError(f"method: {str(label)!r}: augmentation needs a trained method, not {label.method!r}.")
    return label


def canonical(label: str | MethodLabel) -> str:
    """The canonical text of a label (``bitfit+lora`` -> ``lora+bitfit``)."""
    return str(parse_label(label))


def study_order(labels) -> list[str]:
    """Distinct labels in study order (see :meth:`MethodLabel.sort_key`)."""
    parsed = {canonical(label): parse_label(label) for label in labels}
    return sorted(parsed, key=lambda text: parsed[text].sort_key())
