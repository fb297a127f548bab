"""What one run needs: :class:`RunConfig` (typed, strict; validation never changes it), its augmentation section, and how it is built from nested mappings and dotted overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import registry
from ..strict import _coerce, _type_hints, from_dict
from ..registry import AUGMENT_USES, AUGMENTATIONS, MethodLabel
from ..settings import EMBEDDED_MODEL, BitFitConfig, ClassicConfig, ConfigError, DecoupleConfig, DiffusionConfig, LogitAdjustConfig, LoraConfig, MetaAdapterConfig, ResampleConfig, ReweightConfig, TrainConfig, check_variant, runtime_field

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class AugmentConfig:
    """Training-set augmentation of a run (Zhang, Doughty, Snoek, CVPR 2024).

    Which images are generated (``kind``, ``generator``) and how they enter training
    (``variant``). Two protocols exist (:data:`lowres_clip.settings.AUGMENT_PROTOCOLS`):

    * ``lrv`` (default; LRV's released code): each training image is replaced, with probability 0.3,
      by one of its label-preserving images (strength 0.3), weighted 0.65 in the weighted mean
      ``sum(w l) / sum(w)`` of the cross-entropy; each label-breaking image (strengths 0.7, 0.75,
      0.8) is paired with an augmented copy of itself; memory bank of the last 40 batches; logit
      factor 80 (σ = 1/80); λ = 0.1; 5 images per source and strength.
    * ``seed`` (the seed report's code): every label-preserving image is one more training item
      (weight 1); two different label-breaking images (strength 0.6) of one source form a pair;
      memory bank of the last 100 batches; logit scale 100 (σ = 1/100); λ = 0.1; 3 images per
      source and strength.

    Single values can be overridden: the generator's in ``generator``, the loss weights in
    :class:`~lowres_clip.settings.TrainConfig` (``preserving_p``, ``breaking_bank_size``...).

    Attributes:
        kind: ``"none"``, ``"classic"`` (mild vs strong image transforms, runs anywhere) or
            ``"diffusion"`` (Stable Diffusion img2img; needs the diffusion weights).
        use: which generated images train the model: ``"both"`` (label-preserving images in the
            supervised loss + label-breaking pairs in the breaking loss), ``"preserving"`` or
            ``"breaking"``.
        variant: ``"lrv"`` or ``"seed"`` (see above); the training loop's ``augment_variant``
            (:meth:`RunConfig.train_settings`).
        generator: fields of the generator's config, checked against
            :class:`~lowres_clip.augment.classic.ClassicConfig` or
            :class:`~lowres_clip.augment.diffusion.DiffusionConfig` (e.g. ``num_samples``,
            ``breaking_strengths``, ``model_id``, ``image_size``); they override the variant's
            generator values (:meth:`generator_options`).
        out_dir: folder of the generated images and their manifest; ``None``:
            :func:`lowres_clip.augment.default_out_dir` (one folder per generator setting under the
            cache root).
    """

    kind: str = "none"
    use: str = "both"
    variant: str = "lrv"
    generator: dict[str, Any] = field(default_factory=dict)
    out_dir: str | None = runtime_field(None, "folder of the generated images")

    def generator_options(self) -> dict[str, Any]:
        """The generator's options: the variant's strengths and sample count, then ``generator``."""
        return {**check_variant(self.variant).generator_defaults(), **self.generator}

    def validate(self, path: str = "augmentation") -> None:
        """Raise :class:`ConfigError` for an unknown kind, use, variant or generator option."""
        if self.kind not in AUGMENTATIONS:
            raise ConfigError(f"{path}.kind: unknown augmentation {self.kind!r}; choose one of {AUGMENTATIONS}.")
        if self.use not in AUGMENT_USES:
            raise ConfigError(f"{path}.use: unknown value {self.use!r}; choose one of {AUGMENT_USES}.")
        try:
            check_variant(self.variant)
        except ValueError as exc:
            raise ConfigError(f"{path}.variant: {exc}") from exc
        if self.kind != "none":
            from_dict(generator_config_class(self.kind), self.generator_options(), f"{path}.generator")
            return
        known = {f.name for kind in AUGMENTATIONS[1:] for f in dataclasses.fields(generator_config_class(kind))}
        for key in self.generator:  # no generator chosen yet: the key must exist for one of them
            if key not in known:
                raise ConfigError(f"unknown key '{path}.generator.{key}'; generator options: {', '.join(sorted(known))}.")


def generator_config_class(kind: str) -> type:
    """The generator config dataclass of an augmentation kind (``classic`` or ``diffusion``)."""
    if kind == "classic":
        return ClassicConfig
    if kind == "diffusion":
        return DiffusionConfig
    raise ConfigError(f"augmentation kind {kind!r} has no generator; choose 'classic' or 'diffusion'.")


@dataclass
class RunConfig:
    """Everything one run (one dataset, model, method, K, seed) needs.

    Attributes:
        dataset: ``eurosat``, ``circuits`` or ``imagefolder:<path>``.
        data_root: folder holding the dataset; ``None``: :func:`lowres_clip.datasets.default_data_root`
            (``$LOWRES_CLIP_DATA``, else ``../shared/data``, else ``data/``). With ``smoke`` and no
            data root a tiny synthetic EuroSAT is generated under the cache root.
        exclude: image paths (relative to the dataset's image root, as error messages print them) left
            out of every split, e.g. a corrupt file that cannot be replaced; ``[]``: none. Part of the
            run's identity (it changes the data).
        model: open_clip architecture (``ViT-B-16``...), ``tiny-vit`` / ``tiny-rn`` (tests) or the
            embedded CPU model ``EffLite0-MiniLM``.
        weights: pretrained tag (``openai``...), a checkpoint path, ``random`` or ``embedded``.
        image_size: input resolution; ``None``: the model's own (224 for ViT-B/16 and the embedded
            model). The CPU profile uses 128 for EuroSAT's 64 px images (same linear-probe accuracy,
            3-4x cheaper).
        method: ``zero_shot``, ``linear_probe`` or any ``+``-combination of ``lora``, ``bitfit``,
            ``meta_adapter`` (written in the canonical order ``lora+bitfit+meta_adapter``), optionally
            followed by long-tail remedies (``resample``, ``reweight``, ``la``, ``decouple``: ``lora+la``).
        shots: K, training images per class (validation: ``min(K, 4)`` per class).
        seed: seed of the shot sampling, adapter initialisation and training (the training loop
            gets it: :meth:`train_settings`; ``train.seed`` itself is not read for a run).
        long_tail_ratio: ``None`` for balanced K-shot; else per-class shots decay from K to K/ratio.
        template: the prompt template of training and zero-shot: a name from
            ``resources/prompts.yaml`` (``clip`` = "a photo of a {}.", ``coop_eurosat`` = "a centered
            satellite photo of {}.", ``circuit_diagram``...) or a literal containing ``{}``;
            ``None``: the dataset's default template (:func:`lowres_clip.prompts.resolve_templates`).
        ensemble: use the dataset's prompt-template ensemble instead of one template (then
            ``template`` must be ``None``).
        augmentation: generated training images (:class:`AugmentConfig`).
        lora: LoRA settings (used when ``method`` contains ``lora``).
        bitfit: BitFit settings (used when ``method`` contains ``bitfit``).
        meta_adapter: Meta-Adapter settings (used when ``method`` contains ``meta_adapter``).
        resample, reweight, la, decouple: settings of the long-tail remedies (used when ``method``
            contains them, e.g. ``lora+la``; :mod:`lowres_clip.methods.remedies`).
        train: the training loop's settings (iterations, lr, batch size, validation selection...).
        test_subset: evaluate on a fixed, class-stratified subset of this many test images (drawn
            with seed 0: the same images for every method, K and seed, so runs stay comparable);
            ``None``: the full test set (the paper profile). The CPU profile uses it to fit its time budget.
        runs_root: where records, predictions and checkpoints go; ``None``: ``<repo>/runs``.
        figures_root: where figures and tables go; ``None``: ``<repo>/figures``.
        cache_root: feature / augmentation / smoke-data cache; ``None``: ``$LOWRES_CLIP_CACHE`` or
            ``<repo>/.cache/lowres_clip``.
        smoke: a tiny end-to-end run for tests (synthetic data when ``data_root`` is ``None``, fewer
            analysis samples).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        profile: name of the profile the config came from (informational, kept in the record).
        plugin_settings: the settings of methods registered outside the package
            (:func:`lowres_clip.registry.register_method`), by their ``config_field``; written in
            profiles and overrides like a field (``toy: {scale: 2}``), read by :meth:`settings_of`.
            Empty (the default) it is left out of a run's settings, so no hash changed when it came.
    """

    dataset: str = "eurosat"
    data_root: str | None = runtime_field(None, "dataset folder")
    exclude: list[str] = field(default_factory=list)
    model: str = EMBEDDED_MODEL
    weights: str = "embedded"
    image_size: int | None = None
    method: str = "zero_shot"
    shots: int = 16
    seed: int = 1
    long_tail_ratio: float | None = None
    template: str | None = None
    ensemble: bool = False
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    bitfit: BitFitConfig = field(default_factory=BitFitConfig)
    meta_adapter: MetaAdapterConfig = field(default_factory=MetaAdapterConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)
    reweight: ReweightConfig = field(default_factory=ReweightConfig)
    la: LogitAdjustConfig = field(default_factory=LogitAdjustConfig)
    decouple: DecoupleConfig = field(default_factory=DecoupleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test_subset: int | None = None
    runs_root: str | None = runtime_field(None, "records")
    figures_root: str | None = runtime_field(None, "figures")
    cache_root: str | None = runtime_field(None, "caches")
    smoke: bool = False
    device: str = runtime_field("auto", "where it runs")
    profile: str = runtime_field("", "informational")
    plugin_settings: dict[str, Any] = field(default_factory=dict, metadata={
        "absent_means": {}, "doc": "settings of methods registered outside the package"})

    def validate(self, path: str = "") -> None:
        """Check values that types cannot (method names, ranges); raise :class:`ConfigError`.

        Never changes the config: derived values (the canonical method, the training loop's seed and
        augmentation variant) are computed where they are used (:meth:`method_label`,
        :meth:`train_settings`). ``path`` prefixes the key names in messages (e.g. ``defaults``).
        """
        p = f"{path}." if path else ""
        try:
            registry.parse_method(self.method)
        except ConfigError as exc:
            raise ConfigError(p + str(exc)) from exc
        if self.shots < 1:
            raise ConfigError(f"{p}shots: must be a positive integer, got {self.shots}.")
        if self.long_tail_ratio is not None and self.long_tail_ratio < 1:
            raise ConfigError(f"{p}long_tail_ratio: must be >= 1 (head/tail shots) or null, got {self.long_tail_ratio}.")
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError(f"{p}image_size: must be at least 16 pixels or null, got {self.image_size}.")
        if self.test_subset is not None and self.test_subset < 1:
            raise ConfigError(f"{p}test_subset: must be a positive number of test images or null, got {self.test_subset}.")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"{p}device: unknown device {self.device!r}; choose one of {DEVICES} or 'cuda:<n>'.")
        self.augmentation.validate(f"{p}augmentation")
        self.check_trainable_augmentation(p)
        self._check_templates(p)
        coerce_meta_train(self.meta_adapter.train, p)  # raises for unknown keys or bad types
        fields = {f.name for f in dataclasses.fields(self)}
        for key in self.plugin_settings:
            if key not in {m.config_field for m in registry.methods().values()} or key in fields:
                raise ConfigError(f"unknown key '{p}plugin_settings.{key}': no registered method keeps its settings there.")
        checks = [(m.config_field, lambda m=m: self.settings_of(m.name))
                  for m in registry.methods().values() if m.config_field]
        for name, settings in [*checks, ("train", lambda: self.train)]:
            try:
                check = getattr(settings(), "validate", None)
                if check is not None:
                    check()
            except ValueError as exc:
                raise ConfigError(f"{p}{name}: {exc}") from exc

        try:
            self.effective_train()
        except ValueError as exc:
            raise ConfigError(f"{p}meta_adapter.train: {exc}") from exc

    def _check_templates(self, p: str) -> None:
        from ..prompts import PromptError, resolve_templates

        try:
            resolve_templates(self.dataset, self.template, self.ensemble)
        except PromptError as exc:
            raise ConfigError(f"{p}template: {exc}") from exc

    def templates(self) -> list[str]:
        """The prompt templates of this run (``template`` / ``ensemble`` resolved for ``dataset``)."""
        from ..prompts import resolve_templates

        return resolve_templates(self.dataset, self.template, self.ensemble)

    def settings_of(self, method: str) -> Any:
        """The settings of a registered ``method`` in this config (its ``config_field``: a field, or
        for a method registered outside the package its entry in :attr:`plugin_settings`, defaults
        filled in); ``None`` for a method without settings."""
        entry = registry.get(method)
        if entry.config_field is None:
            return None
        if entry.config_field in {f.name for f in dataclasses.fields(self)}:
            value = getattr(self, entry.config_field)
            if not isinstance(value, entry.config_class):
                raise ConfigError(f"method {method!r}: its config_field {entry.config_field!r} is a RunConfig "
                                  f"field of another class ({type(value).__name__}); register it under another name.")
            return value
        return from_dict(entry.config_class, self.plugin_settings.get(entry.config_field) or {}, entry.config_field)

    def train_settings(self) -> TrainConfig:
        """The training loop's settings of this run before any method's protocol: ``train`` with the
        run's ``seed`` and its augmentation ``variant`` (a new object; the config is unchanged)."""
        return dataclasses.replace(self.train, seed=self.seed, augment_variant=self.augmentation.variant)

    def effective_train(self) -> TrainConfig:
        """The training-loop settings this run's method uses: :meth:`train_settings` through each
        part's training protocol (:func:`lowres_clip.registry.effective_train`: the Meta-Adapter
        alone asks for its own)."""
        return registry.effective_train(self.train_settings(), self.method_label.parts, self.settings_of)

    @property
    def method_label(self) -> MethodLabel:
        """The parsed method label (method plus augmentation; :mod:`lowres_clip.registry`)."""
        return registry.make_label(self.method, self.augmentation.kind, self.augmentation.use)

    @property
    def label(self) -> str:
        """The method label's text (``lora+aug-classic``): the method part of the run key."""
        return str(self.method_label)

    @property
    def trains(self) -> bool:
        """Whether the run has a training loop (everything but zero-shot and the linear probe)."""
        return self.method_label.trains

    def towers(self) -> tuple[str, ...]:
        """The encoder towers the method trains (from each part's settings; registry ``towers``)."""
        out: list[str] = []
        for entry in self.method_label.entries:
            if entry.towers is not None:
                out += [t for t in entry.towers(self.settings_of(entry.name)) if t not in out]
        return tuple(out)

    @property
    def trains_vision(self) -> bool:
        """Whether the method trains the image tower (LoRA or BitFit on ``vision`` / ``both``)."""
        return "vision" in self.towers()

    def check_trainable_augmentation(self, path: str = "") -> None:
        """Raise :class:`ConfigError` when augmentation is asked for a method that cannot use it:
        one that does not train, or label-breaking pairs without a trainable image tower."""
        kind = self.augmentation.kind
        if kind == "none":
            return
        if not self.trains:
            raise ConfigError(f"{path}augmentation: {kind!r} augmentation needs a trained method; "
                              f"{self.method!r} does not train. Use e.g. lora+aug-{kind}.")
        if self.augmentation.use in ("both", "breaking") and not self.trains_vision:
            raise ConfigError(
                f"{path}augmentation: the label-breaking loss acts on image features, but {self.method!r} does "
                f"not train the image tower; add LoRA/BitFit on the vision encoder or use 'aug-{kind}-preserving'."
            )

    def with_label(self, label: str) -> "RunConfig":
        """A copy running the method label ``label`` (``lora+aug-classic``: method and augmentation)."""
        parsed = registry.parse_label(label)
        augmentation = {**self.to_dict()["augmentation"], "kind": parsed.aug_kind, "use": parsed.aug_use}
        return self.replace(method=parsed.method, augmentation=augmentation)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able nested dict (what the run record stores); :func:`from_dict` reads it back."""
        return _jsonable(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with some (possibly dotted, e.g. ``train.iterations``) fields changed."""
        return build_config(_merge(self.to_dict(), _nest(changes, "parameters")))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _nest(flat: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``{"train.iterations": 5}`` -> ``{"train": {"iterations": 5}}`` (nested mappings kept)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: keys must be strings, got {key!r}.")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: '{key}' conflicts with a non-mapping value of '{p}'.")
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _merge(node[leaf], value)
        else:
            node[leaf] = dict(value) if isinstance(value, Mapping) else value
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins; mappings merge key by key (``generator`` included)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def build_config(values: Mapping[str, Any], path: str = "") -> RunConfig:
    """A validated :class:`RunConfig` from a nested mapping (method labels with ``+aug-...`` allowed).

    ``path`` prefixes the key names in error messages (e.g. ``defaults`` for a profile).
    """
    values = dict(values)
    prefix = f"{path}." if path else ""
    if isinstance(values.get("method"), str):
        try:
            parsed = registry.parse_label(values["method"])
        except ConfigError as exc:
            raise ConfigError(prefix + str(exc)) from exc
        values["method"] = parsed.method
        if parsed.augmented:
            values["augmentation"] = _merge(values.get("augmentation") or {},
                                            {"kind": parsed.aug_kind, "use": parsed.aug_use})
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    plugin_fields = {m.config_field for m in registry.methods().values() if m.config_field} - fields
    routed = {k: values.pop(k) for k in list(values) if k in plugin_fields}
    if routed:  # a registered plugin method's settings, written like a field
        values["plugin_settings"] = _merge(values.get("plugin_settings") or {}, routed)
    meta = values.get("meta_adapter")
    if isinstance(meta, Mapping) and isinstance(meta.get("train"), Mapping):  # typed once, at construction
        values["meta_adapter"] = {**meta, "train": coerce_meta_train(meta["train"], prefix)}
    cfg = from_dict(RunConfig, values, path)
    cfg.validate(path)
    return cfg


def coerce_meta_train(overrides: Mapping[str, Any], p: str = "") -> dict[str, Any]:
    """The Meta-Adapter's training overrides typed as :class:`TrainConfig`'s fields (a new dict).

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    hints = _type_hints(TrainConfig)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in overrides.items():
        where = f"{p}meta_adapter.train.{key}"
        if key not in fields:
            raise ConfigError(f"unknown key '{where}' for TrainConfig; accepted keys: {', '.join(sorted(fields))}.")
        out[key] = _coerce(value, hints.get(key, Any), where)
    return out
