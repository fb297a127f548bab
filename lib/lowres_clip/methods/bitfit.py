"""BitFit (Ben Zaken et al., 2022): train only bias terms.

A bias is any parameter whose own name is ``bias`` (``in_proj_bias`` of a packed
``nn.MultiheadAttention`` too); ``logit_bias`` is not an encoder bias and is never trained. Biases
are grouped by where they sit:
  * ``attention``: inside an attention module (``nn.MultiheadAttention`` or a class whose name
    ends with ``Attention`` / ``AttentionPool2d``: the separated LoRA attention, open_clip's ResNet
    attention pool, BERT's ``BertAttention``), i.e. q/k/v/out projections;
  * ``mlp``: inside a transformer feed-forward block (a module named ``mlp``, or a class named
    ``*Mlp*``/``*Intermediate*``, or BERT's ``BertOutput``);
  * ``norm``: of a normalisation layer (LayerNorm, BatchNorm, GroupNorm...);
  * ``other``: everything else (convolution biases, projection heads, CNN squeeze-excite...).
``groups="all"`` (default, the original BitFit) trains every bias of the chosen encoders.
"""

from __future__ import annotations


import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..settings import BIAS_GROUPS, BitFitConfig  # noqa: F401
from ..utils import AdaptationError, check_encoders, tower_of


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.GroupNorm, _BatchNorm)) or "Norm" in type(m).__name__


def _is_attention(m: nn.Module) -> bool:
    cls = type(m).__name__
    return isinstance(m, nn.MultiheadAttention) or cls.endswith(("Attention", "AttentionPool2d"))


def _is_mlp(name: str, m: nn.Module) -> bool:
    cls = type(m).__name__
    return name.rpartition(".")[2] == "mlp" or "Mlp" in cls or "MLP" in cls or "Intermediate" in cls or cls == "BertOutput"


def bias_group(model: nn.Module, param_name: str) -> str:
    """The group (``attention``/``mlp``/``norm``/``other``) of the bias ``param_name`` of ``model``."""
    owner_name = param_name.rpartition(".")[0]
    if _is_norm(model.get_submodule(owner_name)):
        return "norm"
    parts = owner_name.split(".") if owner_name else []
    ancestors = [(".".join(parts[:i]), model.get_submodule(".".join(parts[:i]))) for i in range(1, len(parts) + 1)]
    if any(_is_attention(m) for _, m in ancestors):
        return "attention"
    if any(_is_mlp(n, m) for n, m in ancestors):
        return "mlp"
    return "other"


def is_bias(param_name: str) -> bool:
    """``bias`` parameters and the packed ``in_proj_bias`` of ``nn.MultiheadAttention``."""
    return param_name.rpartition(".")[2] in ("bias", "in_proj_bias")


def bitfit_parameters(model: nn.Module, cfg: BitFitConfig) -> list[str]:
    """Names of the biases ``cfg`` selects in ``model`` (adapter parameters such as LoRA's are skipped).

    Raises:
        AdaptationError: unknown encoders/groups, or no bias selected.
    """
    groups = cfg.group_set()
    towers = check_encoders(cfg.encoders)
    names = [
        n for n, _ in model.named_parameters()
        if is_bias(n) and "lora_" not in n and tower_of(n) in towers and bias_group(model, n) in groups
    ]
    if not names:
        raise AdaptationError(f"BitFit config {cfg} selects no bias of this model.")
    return names


def apply_bitfit(model: nn.Module, cfg: BitFitConfig) -> list[str]:
    """Make the selected biases trainable (``requires_grad=True``); other flags are left as they are.

    Returns:
        the names of the biases made trainable.
    """
    names = set(bitfit_parameters(model, cfg))
    for n, p in model.named_parameters():
        if n in names:
            p.requires_grad_(True)
    return sorted(names)


# ----------------------------------------------------------------------------- registry hooks
def apply_method(model: nn.Module, cfg: BitFitConfig, seed: int | None = 0) -> set[str]:
    """The registry's ``apply`` of BitFit (:mod:`lowres_clip.registry`): the names of the biases
    to train (:func:`bitfit_parameters`; ``seed`` is not used: nothing is initialised)."""
    return set(bitfit_parameters(model, cfg))


def parameter_group(model: nn.Module, name: str) -> str | None:
    """The registry's ``parameter_group`` of BitFit: ``bitfit.{tower}.{group}`` (``bitfit.text.norm``;
    :func:`bias_group`) for a bias of :class:`AdaptedCLIP`'s model (``model.`` prefix), ``None``
    for any other parameter."""
    inner = name.removeprefix("model.")
    if not name.startswith("model.") or not is_bias(inner) or "lora_" in inner:
        return None
    return f"bitfit.{tower_of(inner) or 'other'}.{bias_group(model, inner)}"
