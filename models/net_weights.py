"""Which parameters of a network are Bayesian, and ``theta``: the chosen parameters flattened
and concatenated (:func:`select`, :func:`flatten`, :func:`unflatten`); the first piece of
:mod:`bayesdl.models.bayesian_net`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: modules whose output is linear in the weights: local reparameterization and Flipout apply
LINEAR = (nn.Linear,)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ----------------------------------------------------------------------------- which parameters


@dataclass(frozen=True)
class Weight:
    """One parameter of the network that is part of ``theta`` (``theta[offset:offset+numel]``)."""

    name: str  # "0.weight": the parameter's name in the network
    module: str  # "0": its module's name
    attr: str  # "weight"
    shape: tuple[int, ...]
    offset: int
    kind: str  # "linear", "conv" or "other": which local estimators apply
    fan_in: int  # inputs per output unit of a dense/conv weight; 1 otherwise
    groups: int = 1  # a conv's groups (dropout masks the input units of ungrouped layers)

    @property
    def numel(self) -> int:
        """Number of scalars."""
        return math.prod(self.shape)

    @property
    def slice(self) -> slice:
        """Where it lies in ``theta``."""
        return slice(self.offset, self.offset + self.numel)


Spec = str | type | Sequence[str | type] | None


def _as_list(spec: Spec) -> list:
    if spec is None:
        return []
    if isinstance(spec, str | type):
        return [spec]
    return list(spec)


def _matches(specs: list, module_name: str, module: nn.Module, param_name: str) -> bool:
    """A module type (or its class name), a module name or a parameter name (or a prefix of
    either at a ``.``) matches."""
    for s in specs:
        if isinstance(s, type) and isinstance(module, s):
            return True
        if isinstance(s, str):
            if s == type(module).__name__:
                return True
            for name in (module_name, param_name):
                if name and (name == s or name.startswith(s + ".")):
                    return True
    return False


def select(net: nn.Module, exclude: Spec = None, only: Spec = None) -> list[Weight]:
    """The network's parameters that become Bayesian, in ``named_parameters`` order:
    all of them, less those ``exclude`` matches, and only those ``only`` matches when given.

    ``exclude``/``only`` take module types (``nn.BatchNorm2d``), class names (``"LayerNorm"``),
    module names (``"4"``, ``"head"``) or parameter names (``"head.bias"``), or lists of them.
    """
    excl, keep = _as_list(exclude), _as_list(only)
    out, offset = [], 0
    for mname, module in net.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            pname = f"{mname}.{attr}" if mname else attr
            if not p.requires_grad or _matches(excl, mname, module, pname):
                continue
            if keep and not _matches(keep, mname, module, pname):
                continue
            kind = (
                "linear"
                if isinstance(module, LINEAR)
                else "conv"
                if isinstance(module, CONV)
                else "other"
            )
            fan_in = math.prod(p.shape[1:]) if kind != "other" and attr == "weight" else 1
            groups = int(getattr(module, "groups", 1)) if kind == "conv" else 1
            w = Weight(pname, mname, attr, tuple(p.shape), offset, kind, fan_in, groups)
            out.append(w)
            offset += w.numel
    return out


def flat_size(weights: Sequence[Weight]) -> int:
    """``dim theta``."""
    return sum(w.numel for w in weights)


def unflatten(weights: Sequence[Weight], theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``theta [..., D]`` as the network's parameters ``{name: [..., *shape]}`` (views)."""
    batch = theta.shape[:-1]
    return {w.name: theta[..., w.slice].reshape(*batch, *w.shape) for w in weights}


def flatten(weights: Sequence[Weight], values: dict[str, torch.Tensor]) -> torch.Tensor:
    """The inverse of :func:`unflatten` (one vector ``[D]``)."""
    return torch.cat([values[w.name].detach().reshape(-1) for w in weights])
