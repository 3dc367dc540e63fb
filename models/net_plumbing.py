"""The network run on ``theta`` in a training step: its Bayesian parameters replaced by tensors
for one forward pass, and the local estimators of dense and conv layers; a piece of
:mod:`bayesdl.models.bayesian_net`.

:class:`Plumbing` resolves, once per network, which module attribute each parameter of
``theta`` is and which dense/conv layers a local estimator applies to; a forward pass then
puts the tensors into those modules' parameter slots and takes them out again. That is what
``torch.func.functional_call`` does (``module._parameters[name] = tensor``), without looking
every name up again at every step. The local estimators (``b`` the layer's pre-activation):

* ``"lrt"`` -- local reparameterization (Kingma et al. 2015): ``b = x mu + sqrt(x^2 sigma^2)
  eps``, ``eps ~ N(0, 1)`` per datum and output;
* ``"flipout"`` -- Wen et al. (2018): ``b = x mu + ((x * s_in) dW) * s_out`` with the shared
  perturbation ``dW = theta - mu`` decorrelated across the minibatch by random signs;
* ``"dropout"`` -- ``x * z / r``, ``z ~ Bern(r)`` per datum and input unit (channel, for
  convolutions) on the layer's input (Gal & Ghahramani 2016).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bayesdl.models.net_weights import Weight


def op(module: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The module's linear map of ``x`` by the weight ``w`` (no bias)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, w)
    return module._conv_forward(x, w, None)


def per_channel(v: torch.Tensor, out: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A bias-shaped ``[C]`` tensor broadcastable against the module's output."""
    if isinstance(module, nn.Linear):
        return v
    return v.reshape(-1, *([1] * (out.dim() - 2)))


def signs(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Random signs ``+-1`` of ``shape``."""
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


def unit_shape(module: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """One dropout mask entry per datum and input unit (channel, for convolutions)."""
    if isinstance(module, nn.Linear):
        return (x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])
    return (x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))


@dataclass(frozen=True)
class Layer:
    """A dense or conv module with a Bayesian weight and/or bias: where a local estimator acts
    (``weight``, ``bias``: their indices in ``theta``'s parameters, or ``None``)."""

    module: nn.Module
    weight: int | None
    bias: int | None


class Plumbing:
    """``theta``'s parameters in ``net``'s modules, resolved once (``slots``, in ``weights``'
    order), and the dense/conv :class:`Layer` s among them."""

    def __init__(self, net: nn.Module, weights: Sequence[Weight]):
        self.net, self.weights, self.source = net, list(weights), weights
        self.slots = [(net.get_submodule(w.module), w.attr) for w in self.weights]
        self.sizes = [w.numel for w in self.weights]  # theta's pieces, in order from 0
        if [w.offset for w in self.weights] != [
            sum(self.sizes[:i]) for i in range(len(self.sizes))
        ]:
            raise ValueError("theta's parameters must lie in order from offset 0")
        groups: dict[str, dict[str, int]] = {}
        for i, w in enumerate(self.weights):
            if w.kind != "other" and w.attr in ("weight", "bias"):
                groups.setdefault(w.module, {})[w.attr] = i
        self.layers = [
            Layer(net.get_submodule(m), ws.get("weight"), ws.get("bias"))
            for m, ws in groups.items()
        ]
        #: the layers whose input units dropout masks (a weight, and not a grouped conv)
        self.dropped = [
            la
            for la in self.layers
            if la.weight is not None and getattr(la.module, "groups", 1) == 1
        ]

    def views(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """``theta [D]`` as the parameters' shapes, in ``weights``' order (views; one split,
        whose gradient is one concatenation)."""
        parts = theta.split(self.sizes)
        return [p.view(w.shape) for p, w in zip(parts, self.weights, strict=True)]

    def call(self, x: torch.Tensor, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """``net(x)`` with its Bayesian parameters set to ``values`` (``weights``' order)."""
        saved = []
        try:
            for (module, attr), v in zip(self.slots, values, strict=True):
                saved.append(module._parameters[attr])
                module._parameters[attr] = v
            return self.net(x)
        finally:
            for (module, attr), v in zip(self.slots, saved, strict=False):
                module._parameters[attr] = v

    def call_local(
        self,
        x: torch.Tensor,
        kind: str,
        theta: torch.Tensor | None,
        mean: torch.Tensor,
        spread: torch.Tensor | None = None,
        dropout: Callable | None = None,
    ) -> torch.Tensor:
        """``net(x)`` with the local estimator ``kind`` on the dense/conv layers: their
        parameters at ``mean`` plus the estimator's noise (``spread``: ``Var_q[theta]`` for
        ``"lrt"``, ``theta - mean`` for ``"flipout"``; ``dropout(weight, module, x)``: the
        input ``x`` of the layer of ``weight``, dropped), every other parameter at ``theta``
        (``None``: at ``mean``)."""
        means = self.views(mean)
        values = list(means) if theta is None else self.views(theta)
        handles = []
        try:
            if kind == "dropout":
                for la in self.dropped:
                    values[la.weight] = means[la.weight]
                    w = self.weights[la.weight]
                    handles.append(la.module.register_forward_pre_hook(_pre(dropout, w)))
                return self.call(x, values)
            spreads = self.views(spread)
            for la in self.layers:
                pick = []
                for i in (la.weight, la.bias):
                    if i is not None:
                        values[i] = means[i]
                    pick.append(None if i is None else spreads[i])
                hook = _lrt(*pick) if kind == "lrt" else _flipout(*pick)
                handles.append(la.module.register_forward_hook(hook))
            return self.call(x, values)
        finally:
            for h in handles:
                h.remove()


def _pre(dropout: Callable, w: Weight):
    def hook(module, args):
        return (dropout(w, module, args[0]), *args[1:])

    return hook


def _lrt(var_w: torch.Tensor | None, var_b: torch.Tensor | None):
    """``b = x mu + sqrt(x^2 sigma_w^2 + sigma_b^2) eps``, ``eps ~ N(0, 1)`` per datum."""

    def hook(module, args, out):
        x = args[0]
        v = 0.0
        if var_w is not None:
            v = op(module, x * x, var_w)
        if var_b is not None:
            v = v + per_channel(var_b, out, module)
        return out + torch.sqrt(torch.as_tensor(v).clamp_min(1e-16)) * torch.randn_like(out)

    return hook


def _flipout(dw: torch.Tensor | None, db: torch.Tensor | None):
    """``b = x mu + ((x * s_in) dW) * s_out + db`` with random signs per datum (per datum and
    channel for convolutions): pseudo-independent perturbations from one draw ``dW``."""

    def hook(module, args, out):
        x = args[0]
        if dw is not None:
            dense = isinstance(module, nn.Linear)
            s_in = signs(tuple(x.shape) if dense else unit_shape(module, x), x)
            pert = op(module, x * s_in, dw)
            s_out = signs(tuple(pert.shape) if dense else unit_shape(module, pert), x)
            out = out + pert * s_out
        if db is not None:
            out = out + per_channel(db, out, module)
        return out

    return hook
