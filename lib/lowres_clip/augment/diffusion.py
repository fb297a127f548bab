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

from typing import Any, Sequence

import torch

from ..settings import DEFAULT_MODEL_ID, DEFAULT_PROMPT, DIFFUSION_PROMPTS, AugmentError, DiffusionConfig  # noqa: F401
from .base import GeneratorUnavailableError, ImageGenerator, SourceImage


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

    @classmethod
    def from_options(cls, dataset: str | None = None, **config: Any) -> "DiffusionGenerator":
        """The generator with the dataset's prompt template (:data:`DIFFUSION_PROMPTS`) unless given."""
        return cls(DiffusionConfig.for_dataset(dataset, **config) if dataset else DiffusionConfig(**config))

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
