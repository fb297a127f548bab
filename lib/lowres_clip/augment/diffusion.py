"""The ``diffusion`` generator: Stable Diffusion image-to-image (Zhang, Doughty, Snoek, CVPR 2024).

Little noise (strength 0.3) keeps the source's content: **label-preserving** images. More noise
(strengths 0.6, 0.7, 0.8) keeps only the source's style: **label-breaking** images. Defaults follow
the original code: SD v1 weights, DDIM scheduler, 50 steps, eta 0, guidance scale 5, 512 px,
5 samples per source image and strength, seed 42, one prompt per dataset
(:data:`DIFFUSION_PROMPTS`). The safety checker is not loaded (it blanks harmless images).

The weights are loaded lazily on the first image that must be made (a rerun over existing images
never loads them) or eagerly with :meth:`DiffusionGenerator.load`. Offline without cached weights,
loading raises :class:`~lowres_clip.augment.base.GeneratorUnavailableError` naming the classic
fallback. A pipeline built elsewhere (e.g. a tiny random one in tests) can be passed instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from .base import (
    AugmentError,
    GeneratorConfig,
    GeneratorUnavailableError,
    ImageGenerator,
    SourceImage,
    runtime_field,
)

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


def unavailable_message(model_id: str, exc: BaseException) -> str:
    """The error text for diffusion weights that cannot be loaded."""
    return (
        f"Could not load the Stable Diffusion pipeline '{model_id}' ({type(exc).__name__}: {exc}). "
        "Without internet the weights must already be in the Hugging Face cache: download them once "
        f"(`huggingface-cli download {model_id}`) or pass a local folder as model_id. Without a "
        "diffusion model use the classic generator instead: generate(..., generator='classic') / "
        "make_generator('classic') (augmentation kind='classic')."
    )


class DiffusionGenerator(ImageGenerator):
    """Stable Diffusion img2img generator (module docstring).

    Args:
        config: a :class:`DiffusionConfig` (default: SD v1-4 with the original code's settings).
        pipeline: an already built ``StableDiffusionImg2ImgPipeline`` (or compatible callable with
            ``.scheduler``); then nothing is loaded and ``config.model_id`` must name it. A
            pipeline that knows its own hub name (``name_or_path``) must match ``config.model_id``.
    """

    name = "diffusion"

    def __init__(self, config: DiffusionConfig | None = None, pipeline: Any = None):
        self.config = config or DiffusionConfig()
        self._pipe = None
        if pipeline is not None:
            own = getattr(pipeline, "name_or_path", None)
            if own and own != self.config.model_id:
                raise AugmentError(
                    f"The given pipeline was loaded from '{own}' but config.model_id is "
                    f"'{self.config.model_id}'; set model_id to the pipeline's name so manifests say what made the images."
                )
            self._pipe = self._configure(pipeline)

    @property
    def model_id(self) -> str:
        return self.config.model_id

    def prompt(self, classname: str) -> str:
        return self.config.prompt_template.format(classname)

    @property
    def device(self) -> torch.device:
        from ..models import default_device

        return torch.device(self.config.device) if self.config.device else default_device()

    def _configure(self, pipe: Any) -> Any:
        if self.config.scheduler == "ddim":
            from diffusers import DDIMScheduler

            if not isinstance(pipe.scheduler, DDIMScheduler):
                pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def load(self) -> Any:
        """Load (once) and return the pipeline; raises :class:`GeneratorUnavailableError` offline."""
        if self._pipe is not None:
            return self._pipe
        from diffusers import StableDiffusionImg2ImgPipeline

        device = self.device
        fp16 = self.config.dtype == "fp16" or (self.config.dtype == "auto" and device.type == "cuda")
        try:
            pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
                self.config.model_id,
                revision=self.config.revision,
                dtype=torch.float16 if fp16 else torch.float32,
                safety_checker=None,
                requires_safety_checker=False,
                local_files_only=self.config.local_files_only,
            )
        except Exception as exc:  # hub, network and file errors come in many types
            raise GeneratorUnavailableError(unavailable_message(self.config.model_id, exc)) from exc
        self._pipe = self._configure(pipe.to(device))
        return self._pipe

    def make(self, source: SourceImage, image, kind: str, strength: float, seeds: Sequence[int]) -> list:
        """Run img2img on the resized source; one CPU ``torch.Generator`` per seed (device independent)."""
        from PIL import Image

        pipe = self.load()
        side = self.config.image_size
        init = image.convert("RGB").resize((side, side), Image.BICUBIC)
        prompt = self.prompt(source.classname)
        out: list = []
        for start in range(0, len(seeds), self.config.batch_size):
            chunk = seeds[start : start + self.config.batch_size]
            result = pipe(
                prompt=prompt,
                image=init,
                strength=strength,
                num_inference_steps=self.config.num_inference_steps,
                guidance_scale=self.config.guidance_scale,
                eta=self.config.eta,
                num_images_per_prompt=len(chunk),
                generator=[torch.Generator("cpu").manual_seed(int(s)) for s in chunk],
                output_type="pil",
            )
            out += list(result.images)
        return out
