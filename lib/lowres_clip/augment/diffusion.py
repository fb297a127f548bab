"""The ``diffusion`` generator: Stable Diffusion image-to-image (Zhang, Doughty, Snoek, CVPR 2024).

Little noise (strength 0.3) keeps the source's content: **label-preserving** images. More noise
(strengths 0.6, 0.7, 0.8) keeps only the source's style: **label-breaking** images. Defaults follow
the original code: SD v1 weights, DDIM scheduler, 50 steps, eta 0, guidance scale 5, 512 px,
5 samples per source image and strength, seed 42, one prompt per dataset
(:data:`DIFFUSION_PROMPTS`). The safety checker is not loaded (it blanks harmless images).

The weights are loaded lazily on the first image that must be made (a rerun over existing images
never loads them) or eagerly with :meth:`DiffusionGenerator.load`. Offline without cached weights,
loading raises :class:`~lowres_clip.augment.interface.GeneratorUnavailableError` naming the classic
fallback; the study's preflight asks :meth:`DiffusionGenerator.availability_problem`
(:func:`weights_problem`) first, so a run without the weights stops before any notebook. A pipeline
built elsewhere (e.g. a tiny random one in tests) can be passed instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..settings import DEFAULT_MODEL_ID, DEFAULT_PROMPT, DIFFUSION_PROMPTS, AugmentError, DiffusionConfig  # noqa: F401
from .interface import GeneratorUnavailableError, ImageGenerator, SourceImage


def unavailable_message(model_id: str, exc: BaseException) -> str:
    """The error text for diffusion weights that cannot be loaded."""
    return (
        f"Could not load the Stable Diffusion pipeline '{model_id}' ({type(exc).__name__}: {exc}). "
        "Without internet the weights must already be in the Hugging Face cache: download them once "
        f"(`huggingface-cli download {model_id}`) or pass a local folder as model_id. Without a "
        "diffusion model use the classic generator instead: generate(..., generator='classic') / "
        "make_generator('classic') (augmentation kind='classic')."
    )


NOT_LOADED = ("safety_checker",)
"""Pipeline parts :meth:`DiffusionGenerator.load` does not load (so their files need not be there)."""


def missing_parts(folder: Path) -> list[str]:
    """What a pipeline folder (a ``save_pretrained`` folder or a hub snapshot) lacks for loading:
    ``model_index.json``, a part's folder it names, or a model part's weights (a part with a
    ``config.json`` needs a ``.safetensors`` or ``.bin`` file)."""
    index = folder / "model_index.json"
    if not index.is_file():
        return ["model_index.json"]
    try:
        parts = json.loads(index.read_text())
    except ValueError:
        return ["a readable model_index.json"]
    missing = []
    for name, value in parts.items():
        if name.startswith("_") or name in NOT_LOADED or not (isinstance(value, list) and value and value[0]):
            continue
        part = folder / name
        files = [p for p in part.iterdir() if p.is_file()] if part.is_dir() else []
        if not files:
            missing.append(f"{name}/")
        elif (part / "config.json").is_file() and not any(p.suffix in (".safetensors", ".bin") for p in files):
            missing.append(f"{name}/ weights")
    return missing


def weights_problem(config: DiffusionConfig, probe: bool = True, timeout: float = 5.0) -> str | None:
    """One line when the pipeline ``config.model_id`` names cannot be loaded here, or ``None``.

    Nothing is loaded or downloaded. A local folder must hold a complete pipeline
    (:func:`missing_parts`); a hub id must be complete in the Hugging Face cache (``revision``), or,
    with ``probe`` and without ``local_files_only`` / ``HF_HUB_OFFLINE``, downloadable now (a HEAD
    request for its ``model_index.json``). The line says how to get the weights or point
    ``augmentation.generator.model_id`` to a local folder.
    """
    model_id = config.model_id
    folder = Path(os.path.expanduser(model_id))
    if folder.is_dir():
        missing = missing_parts(folder)
        return _advice(model_id, f"the folder lacks {', '.join(missing)}", local=True) if missing else None
    if model_id.startswith((".", "/", "~")) or os.sep + os.sep in model_id or model_id.count("/") > 1:
        return _advice(model_id, "no such folder", local=True)
    from huggingface_hub import snapshot_download

    why = "not in the Hugging Face cache"
    try:
        snapshot = Path(snapshot_download(model_id, revision=config.revision, local_files_only=True))
    except Exception as exc:  # not cached, or not a valid repo id: many error types
        if type(exc).__name__ == "HFValidationError":
            return _advice(model_id, "neither a folder nor a Hugging Face model id", local=True)
    else:
        missing = missing_parts(snapshot)
        if not missing:
            return None
        why = f"not fully cached: {snapshot} lacks {', '.join(missing)}"
    if probe and not config.local_files_only:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            why += "; HF_HUB_OFFLINE is set"
        else:
            from huggingface_hub import get_hf_file_metadata, hf_hub_url

            try:
                get_hf_file_metadata(hf_hub_url(model_id, "model_index.json", revision=config.revision), timeout=timeout)
                return None  # downloadable now: the first image loads it
            except Exception as exc:  # network errors come in many types
                why += f"; not downloadable now ({type(exc).__name__})"
    return _advice(model_id, why)


def _advice(model_id: str, why: str, local: bool = False) -> str:
    get = ("save a complete pipeline there (pipe.save_pretrained(folder) or "
           f"`huggingface-cli download {DEFAULT_MODEL_ID} --local-dir folder`)" if local else
           f"download them once where there is internet (`huggingface-cli download {model_id}`; "
           "HF_HOME must be the same here)")
    return (f"Stable Diffusion weights '{model_id}' (augmentation kind 'diffusion') are not available: {why}. "
            f"Either {get}, or point the runs to a local folder holding the pipeline with "
            "--set augmentation.generator.model_id=/path/to/folder, or use the classic generator "
            "(a method label with +aug-classic instead of +aug-diffusion).")


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

    def availability_problem(self, probe: bool = True) -> str | None:
        """The pipeline's weights, when none was given: :func:`weights_problem`."""
        return None if self._pipe is not None else weights_problem(self.config, probe=probe)

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
