"""Settings of the image generators (classic transforms, Stable Diffusion)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from .base import AugmentError, KINDS, runtime_field


@dataclass
class GeneratorConfig:
    """Settings every generator shares.

    Attributes:
        num_samples: images generated per source image *and* strength (LRV: 5; the seed report: 3).
            A run's generator gets its augmentation variant's values unless it sets them
            (:meth:`lowres_clip.config.AugmentConfig.generator_options`); the defaults here are
            for direct use.
        seed: base seed. Each output gets its own seed derived from this one, the source path, the
            kind, the strength and the sample index (:func:`derive_seed`), so a rerun, a resumed run
            or a run over a different subset of sources makes the same image for the same source.
        preserving_strength: strength of label-preserving outputs (diffusion: img2img noise
            strength; classic: intensity of the mild transforms). Default 0.3 (LRV and the seed report).
        breaking_strengths: strengths of label-breaking outputs; ``num_samples`` outputs are made
            per strength. Default ``[0.6, 0.7, 0.8]`` (LRV's README generates at 0.6, its dataloader
            reads 0.7/0.75/0.8: variant ``lrv``; the seed report 0.6: variant ``seed``). Every one
            must exceed ``preserving_strength``.
    """

    num_samples: int = 5
    seed: int = 42
    preserving_strength: float = 0.3
    breaking_strengths: Sequence[float] = (0.6, 0.7, 0.8)

    def __post_init__(self) -> None:
        self.breaking_strengths = tuple(float(s) for s in self.breaking_strengths)
        self.preserving_strength = float(self.preserving_strength)
        if self.num_samples < 1:
            raise AugmentError(f"num_samples must be >= 1, got {self.num_samples}.")
        if not self.breaking_strengths:
            raise AugmentError("breaking_strengths is empty; give at least one strength, e.g. [0.6, 0.7, 0.8].")
        for s in (self.preserving_strength, *self.breaking_strengths):
            if not 0.0 < s <= 1.0:
                raise AugmentError(f"strengths must lie in (0, 1], got {s}.")
        if self.preserving_strength >= min(self.breaking_strengths):
            raise AugmentError(
                f"preserving_strength {self.preserving_strength} must be lower than every breaking "
                f"strength {list(self.breaking_strengths)}: low strength preserves the label, high breaks it."
            )

    def strengths(self, kind: str) -> tuple[float, ...]:
        """The strengths used for ``kind`` (``preserving``: one, ``breaking``: the list)."""
        check_kind(kind)
        return (self.preserving_strength,) if kind == "preserving" else tuple(self.breaking_strengths)

    def settings(self) -> dict[str, Any]:
        """JSON-able values of all non-runtime fields (what identifies the generated images)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("runtime"):
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def check_kind(kind: str) -> None:
    """Raise :class:`AugmentError` unless ``kind`` is ``preserving`` or ``breaking``."""
    if kind not in KINDS:
        raise AugmentError(f"kind must be one of {KINDS}, got {kind!r}.")


@dataclass
class ClassicConfig(GeneratorConfig):
    """Settings of the classic generator (see :class:`GeneratorConfig` for the shared fields).

    Attributes:
        image_size: output side length in pixels; ``None`` keeps each source image's size.
    """

    image_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size is not None and self.image_size < 8:
            raise AugmentError(f"image_size must be >= 8 pixels or None, got {self.image_size}.")


DEFAULT_MODEL_ID = "CompVis/stable-diffusion-v1-4"
DIFFUSION_PROMPTS = {
    "circuits": "a circuit diagram of {}",
    "eurosat": "a satellite photo of {}",
}
DEFAULT_PROMPT = "a photo of {}"


@dataclass
class DiffusionConfig(GeneratorConfig):
    """Settings of the diffusion generator (see :class:`GeneratorConfig` for the shared fields).

    Attributes:
        model_id: Hugging Face hub id or local folder of a Stable Diffusion (v1) pipeline.
        revision: hub revision of ``model_id`` (``None``: default branch).
        prompt_template: prompt with ``{}`` for the class name; :meth:`for_dataset` picks the
            dataset's (``a circuit diagram of {}``, ``a satellite photo of {}``).
        num_inference_steps: DDIM steps of the full schedule; img2img runs ``int(steps * strength)``.
        guidance_scale: classifier-free guidance scale.
        eta: DDIM eta (0: deterministic given the seed).
        image_size: side length the source is resized to and outputs have (pixels).
        scheduler: ``"ddim"`` replaces the pipeline's scheduler by DDIM; ``"pipeline"`` keeps it.
        batch_size: images per pipeline call (runtime: does not change the images' identity).
        device: ``None``: CUDA when present, else CPU (runtime).
        dtype: ``"auto"`` (fp16 on CUDA, fp32 on CPU), ``"fp16"`` or ``"fp32"`` (runtime).
        local_files_only: never try the network when loading (runtime).
    """

    model_id: str = DEFAULT_MODEL_ID
    revision: str | None = None
    prompt_template: str = DEFAULT_PROMPT
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    eta: float = 0.0
    image_size: int = 512
    scheduler: Literal["ddim", "pipeline"] = "ddim"
    batch_size: int = runtime_field(5, "images per pipeline call")
    device: str | None = runtime_field(None, "None: CUDA when present")
    dtype: Literal["auto", "fp16", "fp32"] = runtime_field("auto", "fp16 on CUDA when auto")
    local_files_only: bool = runtime_field(False, "never use the network")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "{}" not in self.prompt_template:
            raise AugmentError(f"prompt_template must contain '{{}}' for the class name, got {self.prompt_template!r}.")
        if self.scheduler not in ("ddim", "pipeline"):
            raise AugmentError(f"scheduler must be 'ddim' or 'pipeline', got {self.scheduler!r}.")
        if self.dtype not in ("auto", "fp16", "fp32"):
            raise AugmentError(f"dtype must be 'auto', 'fp16' or 'fp32', got {self.dtype!r}.")
        if self.batch_size < 1:
            raise AugmentError(f"batch_size must be >= 1, got {self.batch_size}.")
        weakest = min(self.strengths("preserving") + self.strengths("breaking"))
        if int(self.num_inference_steps * weakest) < 1:
            raise AugmentError(
                f"num_inference_steps={self.num_inference_steps} x strength {weakest} gives no denoising "
                f"step; use at least {int(1 / weakest) + 1} steps."
            )

    @classmethod
    def for_dataset(cls, dataset: str, **kwargs: Any) -> "DiffusionConfig":
        """Config with the dataset's prompt (:data:`DIFFUSION_PROMPTS`, else ``a photo of {}``)."""
        kwargs.setdefault("prompt_template", DIFFUSION_PROMPTS.get(dataset, DEFAULT_PROMPT))
        return cls(**kwargs)
