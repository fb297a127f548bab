"""The method registry: every method of the study, what each one does, and the one grammar of labels.

A *method* is one :class:`Method` entry (like peft's ``register_peft_method``, which binds a name to
its config and model classes): its name, the :class:`~lowres_clip.config.RunConfig` field holding
its settings and that field's class, how it is applied to a model (``apply``) or put on top of its
features (``head``), its training-protocol override (``train_protocol``), which trained parameters
it owns (``parameter_group``), which runner runs it (``runner``), its notebook and its ``role``
(a trained method or a reference). Behaviour is bound lazily by dotted paths
(``"lowres_clip.methods.lora:apply_method"``, resolved with :func:`resolve` on first use), so this
module imports nothing heavy.

Adding a method is one settings dataclass, one module and one :func:`register_method` call (or one
entry in :data:`METHODS` for the methods of the package). Modules named in ``$LOWRES_CLIP_METHODS``
(comma-separated import paths) are imported on first use of the registry (:func:`load_plugins`),
so a method registered outside the package is known in every process, notebook kernels included
(they inherit the environment). A method registered outside the package keeps its settings in
:attr:`~lowres_clip.config.RunConfig.plugin_settings` under its ``config_field``.

A *method label* names what a run does, as it appears in run keys, grids and tables:

    label   := method [ "+aug-" kind [ "-" use ] ]
    method  := zero_shot | linear_probe | adapter { "+" adapter } { "+" remedy }
    adapter := lora | bitfit | meta_adapter          (written in registry order)
    remedy  := resample | reweight | la | decouple   (after the adapters, in registry order)
    kind    := classic | diffusion ; use := preserving | breaking   (absent: both)

e.g. ``lora``, ``lora+bitfit+meta_adapter``, ``lora+aug-classic``, ``lora+aug-diffusion-breaking``,
``lora+la``, ``lora+bitfit+meta_adapter+reweight``. A *remedy* (role ``remedy``: long-tail
re-sampling, re-weighting, logit adjustment, decoupled classifier re-training;
:mod:`lowres_clip.methods.remedies`) changes how a trained method trains, so it never stands alone
nor with the references only (``la``, ``zero_shot+la`` are errors).
:func:`parse_label` is the only parser of that grammar and :meth:`MethodLabel.__str__` the only
writer; every other module asks them.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .settings import (BitFitConfig, ConfigError, DecoupleConfig, LogitAdjustConfig, LoraConfig, MetaAdapterConfig,
                       ResampleConfig, ReweightConfig, TrainConfig, check_encoders)

AUGMENTATIONS = ("none", "classic", "diffusion")
AUGMENT_USES = ("both", "preserving", "breaking")
AUG_PREFIX = "aug-"
ZERO_SHOT = "zero_shot"  # the method of an adapted model with no part applied (the default method)
GOAL_BASELINE = "linear_probe"  # the reference the study's goal is stated against (README, results/rendering.py)
TRAINED_BASELINE = "lora"  # the trained method other runs' training facts are set beside (results/rendering.py)
PLUGINS_ENV = "LOWRES_CLIP_METHODS"
REMEDY = "remedy"  # the role of a long-tail remedy: it changes how the trained parts of a label train
ROLES = ("trained", "reference", REMEDY)
RUNNERS = {  # how a run of a method is made (lowres_clip.pipeline.run)
    "adapted": "lowres_clip.pipeline.run:run_adapted",  # an AdaptedCLIP, trained by lowres_clip.train when it trains
    "features": "lowres_clip.pipeline.run:run_linear_probe",  # a classifier fitted on cached image features
}

# ----------------------------------------------------------------------------- notebooks (one definition)
NB_DATA = "00_data.ipynb"
NB_ZERO_SHOT = "01_zero_shot.ipynb"
NB_LORA = "02_lora.ipynb"
NB_BITFIT = "03_bitfit.ipynb"
NB_META = "04_meta_adapter.ipynb"
NB_AUG_GENERATE = "05_augment_generate.ipynb"
NB_AUG_TRAIN = "06_augment_train.ipynb"
NB_FAILURE = "07_failure_analysis.ipynb"
NB_REPORT = "08_report_tables.ipynb"
NOTEBOOKS = (NB_DATA, NB_ZERO_SHOT, NB_LORA, NB_BITFIT, NB_META, NB_AUG_GENERATE, NB_AUG_TRAIN, NB_FAILURE, NB_REPORT)
AUGMENT_NOTEBOOK = NB_AUG_TRAIN


def _encoder_towers(settings: Any) -> tuple[str, ...]:
    return check_encoders(settings.encoders)


def resolve(target: str | Callable | None) -> Any:
    """A callable given as itself or as a dotted path ``"package.module:attribute"`` (imported now)."""
    if target is None or callable(target):
        return target
    module, _, attr = str(target).partition(":")
    if not attr:
        raise ConfigError(f"method registry: {target!r} is not a 'module:attribute' path.")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Method:
    """One method of the study.

    Attributes:
        name: the method's name in labels (``lora``).
        notebook: the numbered notebook that runs it (combinations run in their first part's).
        description: one line for tables and ``--help``.
        config_field: the :class:`~lowres_clip.config.RunConfig` field holding its settings (a method
            registered outside the package: its key in ``RunConfig.plugin_settings``).
        config_class: that field's dataclass.
        trains: whether it has a training loop (zero-shot and the linear probe do not).
        combines: whether it combines with other adapters through ``+``.
        towers: which encoder towers it trains, given its settings (``None``: none).
        role: ``trained`` (a contestant), ``reference`` (drawn dashed, never "the best method") or
            ``remedy`` (a long-tail remedy: combined after a trained method's parts, never alone).
        runner: how a run is made: ``adapted`` (an :class:`~lowres_clip.methods.adapted.AdaptedCLIP`)
            or ``features`` (a classifier fitted on cached image features); see :data:`RUNNERS`.
        apply: ``apply(model, settings, seed) -> set of trainable parameter names`` (names in
            ``model``): changes the encoders in place (``None``: it does not touch them).
        head: ``head(dim, settings, seed) -> nn.Module`` refining the class embeddings with the
            support set on top of the features (the Meta-Adapter; ``None``: none). At most one part
            of a label has one.
        parameter_group: ``parameter_group(model, name) -> str | None``: the readable group of a
            trained parameter (``name`` as in :class:`AdaptedCLIP`, ``model.`` prefix included) when
            this method owns it, else ``None`` (parameter counts and training movement ask it).
        train_protocol: ``train_protocol(settings, train, parts) -> TrainConfig``: the training loop
            this method asks for within a label of ``parts`` (``None``: the run's ``train``).
            Light (no torch): :meth:`lowres_clip.config.RunConfig.validate` calls it.
        after_train: ``after_train(adapted, settings, stage) -> dict``: called by the training loop
            after its loop (:func:`lowres_clip.methods.remedies.after_training`, ``stage`` a
            :class:`~lowres_clip.methods.remedies.Stage`); may run a second stage (``decouple``);
            returns what the method did, recorded in ``TrainResult.remedies[name]`` (``None``: none).
        copies_model: whether ``apply`` changes encoder weights (the bundle's model is then copied).
        adds_parameters: whether the parameters ``apply`` trains are new ones added to the model (LoRA's
            matrices), not counted in the base model's size.
    Callables may be given as dotted paths ``"module:attribute"`` (:func:`resolve`).
    """

    name: str
    notebook: str
    description: str
    config_field: str | None = None
    config_class: type | None = None
    trains: bool = False
    combines: bool = False
    towers: Callable[[Any], tuple[str, ...]] | None = None
    role: str = "trained"
    runner: str = "adapted"
    apply: str | Callable | None = None
    head: str | Callable | None = None
    parameter_group: str | Callable | None = None
    train_protocol: str | Callable | None = None
    after_train: str | Callable | None = None
    copies_model: bool = False
    adds_parameters: bool = False

    def check(self) -> None:
        """Raise :class:`ConfigError` for an entry that cannot work."""
        if not self.name or "+" in self.name or self.name.startswith(AUG_PREFIX):
            raise ConfigError(f"method registry: bad method name {self.name!r} (no '+', no '{AUG_PREFIX}' prefix).")
        if self.role not in ROLES:
            raise ConfigError(f"method registry: {self.name}: role {self.role!r} not in {ROLES}.")
        if self.runner not in RUNNERS:
            raise ConfigError(f"method registry: {self.name}: runner {self.runner!r} not in {tuple(RUNNERS)}.")
        if (self.config_field is None) != (self.config_class is None):
            raise ConfigError(f"method registry: {self.name}: give config_field and config_class together.")
        if self.role == REMEDY and (self.trains or self.apply is not None or self.head is not None or not self.combines):
            raise ConfigError(f"method registry: {self.name}: a remedy combines, does not train by itself "
                              "and has neither apply nor head (it changes the training: train_protocol, after_train).")
        if self.trains and self.runner == "adapted" and self.apply is None and self.head is None:
            raise ConfigError(f"method registry: {self.name} trains but has neither apply nor head.")

    def settings(self, config: Any) -> Any:
        """This method's settings in a :class:`~lowres_clip.config.RunConfig` (``None``: it has none)."""
        return None if self.config_field is None else config.settings_of(self.name)

    def run_function(self) -> Callable:
        """The pipeline function that makes a run of this method (:data:`RUNNERS`)."""
        return resolve(RUNNERS[self.runner])


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("zero_shot", NB_ZERO_SHOT, "zero-shot CLIP (class prompts, no training)", role="reference"),
    Method("linear_probe", NB_ZERO_SHOT, "logistic regression on frozen image features", role="reference",
           runner="features"),
    Method("lora", NB_LORA, "CLIP-LoRA: low-rank adapters on q, k, v", "lora", LoraConfig,
           trains=True, combines=True, towers=_encoder_towers, copies_model=True, adds_parameters=True,
           apply="lowres_clip.methods.lora:apply_method", parameter_group="lowres_clip.methods.lora:parameter_group"),
    Method("bitfit", NB_BITFIT, "BitFit: train the biases", "bitfit", BitFitConfig,
           trains=True, combines=True, towers=_encoder_towers, copies_model=True,
           apply="lowres_clip.methods.bitfit:apply_method", parameter_group="lowres_clip.methods.bitfit:parameter_group"),
    Method("meta_adapter", NB_META, "Meta-Adapter: gated attention of class text over support images",
           "meta_adapter", MetaAdapterConfig, trains=True, combines=True,
           head="lowres_clip.methods.meta_adapter:build_head",
           parameter_group="lowres_clip.methods.meta_adapter:parameter_group",
           train_protocol=MetaAdapterConfig.train_protocol),
    # long-tail remedies (role "remedy"): lowres_clip.methods.remedies
    Method("resample", NB_LORA, "class-balanced re-sampling, p_c ∝ n_c^q (Kang et al. 2020)", "resample",
           ResampleConfig, combines=True, role=REMEDY, train_protocol=ResampleConfig.train_protocol,
           after_train="lowres_clip.methods.remedies:record_resample"),
    Method("reweight", NB_LORA, "class-weighted cross-entropy: 1/n_c or effective number (Cui et al. 2019)",
           "reweight", ReweightConfig, combines=True, role=REMEDY, train_protocol=ReweightConfig.train_protocol,
           after_train="lowres_clip.methods.remedies:record_reweight"),
    Method("la", NB_LORA, "logit-adjusted loss, logits + tau log prior (Menon et al. 2021)", "la",
           LogitAdjustConfig, combines=True, role=REMEDY, train_protocol=LogitAdjustConfig.train_protocol,
           after_train="lowres_clip.methods.remedies:record_la"),
    Method("decouple", NB_LORA, "then re-train the classifier, class-balanced, on fixed features (cRT, Kang et al. 2020)",
           "decouple", DecoupleConfig, combines=True, role=REMEDY,
           after_train="lowres_clip.methods.remedies:retrain_classifier_stage"),
)}
_plugins_loaded = False


def _refresh() -> None:
    global METHOD_ORDER, ADAPTERS, REMEDIES, TRAINING_FREE, REFERENCES
    METHOD_ORDER = tuple(METHODS)
    ADAPTERS = tuple(name for name, m in METHODS.items() if m.combines and m.role != REMEDY)
    REMEDIES = tuple(name for name, m in METHODS.items() if m.role == REMEDY)
    TRAINING_FREE = tuple(name for name, m in METHODS.items() if not m.trains and m.role != REMEDY)
    REFERENCES = tuple(name for name, m in METHODS.items() if m.role == "reference")


BUILTIN = tuple(METHODS)
METHOD_ORDER = ADAPTERS = REMEDIES = TRAINING_FREE = REFERENCES = ()
_refresh()


def is_remedy(method: str) -> bool:
    """Whether ``method`` is a long-tail remedy (role ``remedy``)."""
    return get(method).role == REMEDY


def register_method(method: Method, replace: bool = False) -> Method:
    """Add ``method`` to the registry (after the methods already there, so combinations write it last).

    Raises:
        ConfigError: a name already registered (unless ``replace``; built-in methods never), a
            ``config_field`` another method uses, or an entry :meth:`Method.check` refuses. (A
            ``config_field`` naming a :class:`~lowres_clip.config.RunConfig` field of another class
            is refused when a config asks for the settings: ``RunConfig.settings_of``.)
    """
    method.check()
    if method.name in BUILTIN or (method.name in METHODS and not replace):
        raise ConfigError(f"method registry: {method.name!r} is already registered.")
    if method.config_field is not None:
        taken = {m.config_field for m in METHODS.values() if m.config_field and m.name != method.name}
        if method.config_field in taken:
            raise ConfigError(f"method registry: {method.name}: config_field {method.config_field!r} is taken.")
    METHODS[method.name] = method
    _refresh()
    return method


def unregister_method(name: str) -> None:
    """Remove a method :func:`register_method` added (tests; built-in methods stay).

    Raises:
        ConfigError: a built-in or unknown method.
    """
    if name in BUILTIN or name not in METHODS:
        raise ConfigError(f"method registry: {name!r} is built in or not registered.")
    del METHODS[name]
    _refresh()


def load_plugins() -> None:
    """Import the modules named in ``$LOWRES_CLIP_METHODS`` (comma-separated), once per process;
    they register their methods with :func:`register_method`."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"${PLUGINS_ENV}: cannot import method module {name!r}: {exc}") from exc


def methods() -> dict[str, Method]:
    """Every registered method by name (plugins loaded)."""
    load_plugins()
    return METHODS


def get(name: str) -> Method:
    """The registry entry of a method name.

    Raises:
        ConfigError: an unknown name.
    """
    load_plugins()
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method: unknown method {name!r}; choose from {METHOD_ORDER}.") from None


def references() -> tuple[str, ...]:
    """The reference methods (role ``reference``: zero-shot, the linear probe)."""
    load_plugins()
    return REFERENCES


def is_reference(method: str) -> bool:
    """Whether a label's method is a reference (drawn dashed; not "the best method")."""
    return method in references()


def runner_of(parts: tuple[str, ...]) -> Callable:
    """The pipeline function that runs a label of ``parts`` (its first part's runner)."""
    return get(parts[0]).run_function()


def effective_train(train: TrainConfig, parts: tuple[str, ...] | str, settings_of: Callable[[str], Any]) -> TrainConfig:
    """The training-loop settings a label of ``parts`` trains with: ``train`` passed through each
    part's ``train_protocol`` (``settings_of(part)``: that part's settings), remedies last. The
    Meta-Adapter's (:meth:`lowres_clip.settings.MetaAdapterConfig.train_protocol`) and the remedies'
    (``resample``, ``reweight``, ``la``) have one; each is told the label's parts less its remedies
    (``meta_adapter+la`` trains as the Meta-Adapter alone, with the logit-adjusted loss)."""
    parts = parse_method(parts) if isinstance(parts, str) else tuple(parts)
    trained = tuple(p for p in parts if get(p).role != REMEDY)
    for part in parts:
        rule = resolve(get(part).train_protocol)
        if rule is not None:
            train = rule(settings_of(part), train, trained)
    return train


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
        return any(get(p).trains for p in self.parts)

    @property
    def entries(self) -> tuple[Method, ...]:
        """The registry entries of its parts."""
        return tuple(get(p) for p in self.parts)

    @property
    def notebook(self) -> str:
        """The notebook that runs this label."""
        return AUGMENT_NOTEBOOK if self.augmented else get(self.parts[0]).notebook

    def sort_key(self) -> tuple:
        """Study order: baselines, single adapters, combinations, augmented runs."""
        return (self.augmented, len(self.parts), METHOD_ORDER.index(self.parts[0]), str(self))

    def __str__(self) -> str:
        return "+".join((*self.parts, self.aug_suffix) if self.augmented else self.parts)


def parse_method(method: str) -> tuple[str, ...]:
    """Validate a method name without augmentation; its parts in registry order (remedies last).

    Raises:
        ConfigError: an unknown part, a part named twice, a training-free method combined, or a
            remedy without a trained method to remedy (``la``, ``zero_shot+la``, ``linear_probe+la``).
    """
    load_plugins()
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
    remedies = [p for p in parts if METHODS[p].role == REMEDY]
    if remedies and not any(METHODS[p].trains for p in parts):
        raise ConfigError(f"method: {method!r}: a remedy changes how a trained method trains; combine it, "
                          f"e.g. lora+{remedies[0]} (remedies {REMEDIES} go after a trained method of {ADAPTERS}).")
    if len(parts) > 1 and any(p not in ADAPTERS + REMEDIES for p in parts):
        raise ConfigError(f"method: {method!r}: only {ADAPTERS} combine (and the remedies {REMEDIES} with them); "
                          f"{' and '.join(TRAINING_FREE)} stand alone.")
    return tuple(sorted(parts, key=lambda p: (METHODS[p].role == REMEDY, METHOD_ORDER.index(p))))


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
