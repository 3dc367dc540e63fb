"""One SVI step behind one interface, built from explicit parts.

``theta_{t+1} = U(theta_t, grad_theta L(theta_t; eps_t, x_t), s_t)``: ``L = -ELBO`` is the
estimator's loss (its ELBO's own ``differentiable_loss``) on this step's data ``x_t`` and noise
``eps_t``, ``U`` the optimizer's update with state ``s_t``. A :class:`Step` is built from those
parts -- the loss function, the parameters ``theta``, the optimizer -- and nothing else; two
implementations:

* :class:`EagerStep`: autograd and ``torch.optim``, for every estimator;
* :class:`~bayesdl.inference.compiled.CompiledStep`: the same step traced once into a graph
  and replayed compiled (for the estimators whose
  :class:`~bayesdl.inference.elbo.Capabilities` say ``compilable``).

The :class:`~bayesdl.inference.train.Trainer` owns everything around a step: it sets the
schedules (the optimizer's learning rate, the KL weight, the minibatch indices) before each
call, logs, checkpoints (:meth:`Step.state_dict`) and tests convergence; it calls ``step(data)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from bayesdl.inference.checkpoint_check import load_optimizer_state

__all__ = ["Diverged", "EagerStep", "OptimizerFailed", "Step", "all_finite"]


@runtime_checkable
class Step(Protocol):
    """One optimizer step of SVI: the parameters and the optimizer's state change in place."""

    #: whether the step runs as a compiled graph
    compiled: bool

    def __call__(self, data: Mapping[str, Any]) -> torch.Tensor:
        """One step on ``data`` (the keyword arguments of model and guide); returns the
        detached loss ``-ELBO``, left on the device (no host synchronisation)."""
        ...

    def state_dict(self) -> dict:
        """The optimizer's state as ``torch.optim`` writes it (the same for both steps, so a
        checkpoint of either resumes with either)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (checked against the parameters)."""
        ...


class Diverged(Exception):
    """The loss failed and a parameter is NaN or infinite (the cause is chained)."""


class OptimizerFailed(Exception):
    """``optimizer.step()`` failed (e.g. a step size beyond float32); the message is the first
    line of the cause."""


def all_finite(params: Mapping[str, torch.Tensor]) -> bool:
    """Whether every parameter is finite (reads the device)."""
    return all(bool(torch.isfinite(p).all()) for p in params.values())


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


class EagerStep:
    """``loss.backward()``, optional clipping of the global gradient norm to ``clip_norm``,
    ``optimizer.step()``.

    :param params: the trained tensors, by name (those the optimizer holds).
    :param optimizer: a ``torch.optim`` optimizer over ``params``.
    :param loss_fn: ``loss_fn(**data) -> -ELBO``, differentiable; or, for an ELBO without a
        differentiable loss, ``loss_and_grads``: ``(**data) -> -ELBO`` (detached) after
        accumulating the gradient into ``.grad`` (exactly one of the two).
    :param clip_norm: clip the gradients' global 2-norm (``None``: no clipping).
    :param untrained: called with the first differentiable loss
        (:class:`~bayesdl.inference.params.UntrainedCheck`).
    :param device: where a ``loss_and_grads`` loss is moved (the loss of ``loss_fn`` stays
        where it was computed).
    """

    compiled = False

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        *,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        loss_and_grads: Callable[..., torch.Tensor] | None = None,
        clip_norm: float | None = None,
        untrained: Callable[[torch.Tensor], None] | None = None,
        device: torch.device | None = None,
    ):
        if (loss_fn is None) == (loss_and_grads is None):
            raise TypeError("give one of loss_fn and loss_and_grads")
        self.params, self.optimizer = params, optimizer
        self.loss_fn, self.loss_and_grads = loss_fn, loss_and_grads
        self.clip_norm, self.untrained, self.device = clip_norm, untrained, device
        self._trained = list(params.values())

    def __call__(self, data: Mapping[str, Any]) -> torch.Tensor:
        """One step (see :class:`Step`). :raises Diverged: the loss failed at non-finite
        parameters. :raises OptimizerFailed: the optimizer's update failed."""
        try:
            if self.loss_fn is not None:
                loss = self.loss_fn(**data)
                if self.untrained is not None:
                    self.untrained(loss)  # networks the optimizer cannot see (once per fit)
                loss.backward()
                loss = loss.detach()
            else:
                loss = self.loss_and_grads(**data)
                if self.device is not None:
                    loss = loss.to(self.device)
        except (ValueError, RuntimeError) as e:
            if not all_finite(self.params):
                raise Diverged() from e
            raise
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._trained, self.clip_norm)
        try:
            self.optimizer.step()
        except RuntimeError as e:
            raise OptimizerFailed(_first_line(e)) from e
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def state_dict(self) -> dict:
        """The optimizer's ``state_dict()``."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Load a saved optimizer state (checked: :func:`load_optimizer_state`)."""
        load_optimizer_state(self.optimizer, state)
