"""Compiled SVI: one whole step -- ``-ELBO``, its gradient, the optimizer's update -- traced once
into a static graph of aten ops and replayed compiled.

``(theta, s, lr, beta, x, idx) -> (-ELBO(theta; eps), theta', s')`` where ``s`` is the optimizer
state and ``eps`` the noise the graph draws from torch's RNG at each replay (``aten.normal_``,
``aten._standard_gamma`` ... stay nodes of the graph). The capture is
:func:`torch.fx.experimental.proxy_tensor.make_fx` in real mode over the fit's own loss (its
ELBO's ``differentiable_loss``, never a copy of it) and ``torch.autograd.grad``: Pyro's handlers
run once, at capture, and the graph keeps only the tensor ops. The parameters are the very
tensors the param store and the modules hold (autoguides cache theirs in ``PyroModule``
attributes), passed as graph inputs; their new values are copied back in place after each step,
as is the optimizer's state, so ``Posterior``, reports and checkpoints see what eager training
would store. The graph is then compiled by TorchInductor (CUDA graphs on a GPU), or replayed
as plain fx code when Inductor cannot compile it.

A graph is static: a model whose structure changes between steps (sites, shapes, plates) cannot
be captured. :func:`structure` is compared over a few traces at capture and again at every log
point; a mismatch returns the fit to eager steps with one line on stderr saying why.

A graph also keeps every value Python read from a tensor at capture (``if z > 0:``,
``.item()``, ``float(t)``, ``.tolist()``, ``.numpy()``): a branch on a value that keeps the same
sites is invisible to the structure check. Two guards: at capture,
:class:`~bayesdl.inference.tracing.ValueReads` stops the trace at a Python-side read of a
tensor that depends on the graph's inputs (parameters, optimizer state, data, indices) or on
its noise, and the fit runs eagerly with one line naming the read and the user's source line
(reads of tensors built from constants alone still compile, their value being the same at
every step); at log points, :meth:`CompiledStep.check_values` compares the graph's loss with
the eager loss at the same parameters on the same noise (what else a trace can bake in: a
Python global the model reads, a counter it keeps), at the first and then within
:data:`VALUE_CHECK_SHARE` of the run's time.

The step is built from explicit parts (the loss function, the parameters, the optimizer, and
the messengers whose values are graph inputs: the KL weight, the minibatch indices) and is one
of the two :class:`~bayesdl.inference.step.Step` s the Trainer calls; whether an estimator can
be compiled is its declared ``compilable`` capability (:func:`unsupported`).
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import sys
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyro
import torch

from bayesdl.inference.batching import DataSubsample
from bayesdl.inference.checkpoint import rng_state, set_rng_state
from bayesdl.inference.checkpoint_check import load_optimizer_state
from bayesdl.inference.compile_cache import known_vector_isa, shape_env
from bayesdl.inference.elbo import Estimator
from bayesdl.inference.elbo_state import StoreState, written_entries
from bayesdl.inference.estimators import names_with
from bayesdl.inference.schedules import KLScale
from bayesdl.inference.tracing import Fallback, ValueReads, difference, structure, user_line

__all__ = ["CompiledStep", "Fallback", "auto_pays_off", "structure", "unsupported"]
#: ``inductor`` (compile the traced graph) or ``fx`` (replay it uncompiled: no compile time)
BACKEND = os.environ.get("BAYESDL_COMPILE_BACKEND", "inductor")
#: on a GPU, replay Inductor's kernels as one CUDA graph (``$BAYESDL_COMPILE_CUDAGRAPHS=0``: off)
CUDA_GRAPHS = os.environ.get("BAYESDL_COMPILE_CUDAGRAPHS", "1") != "0"
#: traces compared at capture (different noise each)
STRUCTURE_TRACES = 3
#: the log-point check: the graph's loss and the eager loss on the same noise agree within
#: ``rtol * |eager| + atol`` (float32 rounding of the same ops in another order is ~1e-6)
VALUE_RTOL, VALUE_ATOL = 1e-4, 1e-4
#: the log-point loss check runs at the first log point, then at each one where the checks so
#: far took at most this share of the time since capture (one check costs an eager loss, i.e.
#: 15-20 compiled steps of the small models: at every log point of 100 steps, 15%)
VALUE_CHECK_SHARE = 0.01
#: Inductor's code for the last graphs compiled in this process, by :func:`graph_key`: a fit
#: whose step traces to the very graph of an earlier fit (the same model and guide on data of
#: the same shapes: the replications of ``bayesdl.sbc``, a sweep of seeds) reuses that code,
#: where Inductor's own (on-disk) cache still takes 1-2 s a fit on CPU. Not with CUDA graphs
#: (their replays own static buffers).
_COMPILED: OrderedDict[str, Callable] = OrderedDict()
COMPILED_KEPT = 8


def unsupported(
    estimator: Estimator, *, data_parallel: bool = False, check_args: bool = False
) -> str | None:
    """Why a fit with ``estimator`` cannot be compiled (its declared
    :class:`~bayesdl.inference.elbo.Capabilities`; a data-parallel run; ``--validate``), or
    ``None``."""
    caps = estimator.capabilities
    if not caps.compilable:
        return (
            f"--estimator {estimator.name} is not compiled (it declares no `compilable` "
            "capability: it may keep Python-side state, compute its own gradients or read its "
            "loss on the host; compiled: "
            f"{', '.join(names_with('compilable'))})"
        )
    if data_parallel:
        return "data-parallel runs average gradients across processes at every step"
    if check_args:
        return "--validate checks distribution arguments on the host at every step"
    scheduled = caps.scheduled or callable(getattr(estimator, "set_step", None))
    if scheduled and not getattr(estimator, "graph_inputs", None):
        return "the estimator changes with the step (and names no tensors it changes in place)"
    if not estimator.differentiable:
        return f"--estimator {estimator.name} has no differentiable loss"
    return None


def auto_pays_off(remaining_steps: int, eager_step_seconds: float) -> bool:
    """``--compile auto``: compile when the eager time of the remaining steps is more than
    three times the expected compile cost, taken as ``20 s + 1000 x`` one eager step (Inductor's
    fixed cost plus a graph that grows with the step's work)."""
    return remaining_steps * eager_step_seconds > 3 * (20.0 + 1000 * eager_step_seconds)


def _optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    """``adam``, ``adamw`` or ``sgd``: which update :func:`_optimizer_update` traces."""
    # exact classes: a subclass (an optimizer of the user's own) may change the update
    if type(optimizer) is torch.optim.AdamW:
        return "adamw"
    if type(optimizer) is torch.optim.Adam:
        return "adamw" if optimizer.param_groups[0].get("decoupled_weight_decay") else "adam"
    if type(optimizer) is torch.optim.SGD:
        return "sgd"
    raise Fallback(f"the optimizer {type(optimizer).__name__} is not compiled")


def _optimizer_update(kind: str, group: dict) -> Callable:
    """``(p, g, state, lr) -> (p', state')`` of ``torch.optim`` 's Adam / AdamW / SGD (as
    :data:`~bayesdl.inference.config.OPTIMIZERS` configures them), on tensors: one function the
    graph traces, with the same arithmetic as the eager single-tensor implementation."""
    if kind in ("adam", "adamw"):
        (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
        if group.get("amsgrad") or group.get("maximize"):
            raise Fallback("amsgrad/maximize Adam is not compiled")
        if kind == "adam" and wd:
            raise Fallback("Adam with weight decay is not compiled")

        def adam(p, g, st, lr):
            step = st["step"] + 1
            if kind == "adamw":
                p = p * (1 - lr * wd)
            m = torch.lerp(st["exp_avg"], g, 1 - b1)
            v = st["exp_avg_sq"] * b2 + (1 - b2) * g * g
            bc1 = 1 - torch.pow(b1, step)
            bc2 = 1 - torch.pow(b2, step)
            denom = v.sqrt() / bc2.sqrt() + eps
            p = p - (lr / bc1) * m / denom
            return p, {"step": step, "exp_avg": m, "exp_avg_sq": v}

        return adam
    if kind == "sgd":
        mom, damp, wd = group["momentum"], group["dampening"], group["weight_decay"]
        if damp or wd or group.get("nesterov") or group.get("maximize"):
            raise Fallback("SGD with dampening, weight decay or Nesterov is not compiled")

        def sgd(p, g, st, lr):
            buf = st["momentum_buffer"] * mom + g  # a zero buffer: eager's first step, buf = g
            return p - lr * buf, {"momentum_buffer": buf}

        return sgd
    raise Fallback(f"--optimizer {kind} is not compiled")


def _init_state(kind: str, p: torch.Tensor) -> dict:
    """The optimizer state eager ``torch.optim`` would create at its first step."""
    if kind in ("adam", "adamw"):
        return {
            "step": torch.tensor(0.0),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    return {"momentum_buffer": torch.zeros_like(p, memory_format=torch.preserve_format)}


def graph_key(graph: torch.fx.GraphModule, inputs: list[torch.Tensor], options: dict) -> str:
    """What decides a compiled graph: its code, the values of the constants it holds
    (``get_attr`` tensors), the layout of every input, the compiler's options."""
    h = hashlib.sha256(graph.code.encode())
    for node in graph.graph.nodes:
        if node.op != "get_attr":
            continue
        value = operator.attrgetter(node.target)(graph)
        if torch.is_tensor(value):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{node.target}:{t.dtype}:{tuple(value.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{node.target}={value!r}".encode())
    for x in inputs:
        h.update(f"{tuple(x.shape)}:{x.stride()}:{x.dtype}:{x.device}".encode())
    h.update(repr(sorted(options.items())).encode())
    return h.hexdigest()


class CompiledStep:
    """One fit's SVI step, captured and compiled (see the module docstring): a
    :class:`~bayesdl.inference.step.Step` built from explicit parts.

    :param loss_fn: ``loss_fn(**data) -> -ELBO``, differentiable (the estimator's own loss on
        the wrapped model and guide).
    :param params: the trained tensors, by name (the optimizer's, in its order).
    :param optimizer: Adam, AdamW or SGD over ``params`` (its state loaded when resuming);
        the graph reads its learning rate at every step.
    :param data: the step's keyword arguments (tensors become graph inputs).
    :param model: the model as ``loss_fn`` runs it (its structure is checked).
    :param guide: the guide as ``loss_fn`` runs it.
    :param clip_norm: clip the gradients' global 2-norm (``None``: no clipping).
    :param kl: the KL-annealing messenger whose ``beta`` is a graph input (``None``: no KL
        warm-up in this fit).
    :param subsample: the minibatch messenger whose ``indices`` are a graph input (``None``:
        full batches).
    :param untrained: called with the loss at capture
        (:class:`~bayesdl.inference.params.UntrainedCheck`).
    :param device: where the learning rate and KL weight live (default: the parameters').
    :param scalars: tensors the model or guide reads that the fit changes in place between
        steps (an estimator's ``graph_inputs``: the relaxed estimator's temperature).
    :param backend: ``"inductor"`` (compile; plain replay if that fails) or ``"fx"`` (replay
        the traced graph without compiling); default :data:`BACKEND`
        (``$BAYESDL_COMPILE_BACKEND``, else ``inductor``).
    :raises Fallback: the step cannot be captured (the message says why).
    """

    compiled = True

    def __init__(
        self,
        loss_fn: Callable[..., torch.Tensor],
        params: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        data: dict[str, Any],
        *,
        model: Callable,
        guide: Callable,
        clip_norm: float | None = None,
        kl: KLScale | None = None,
        subsample: DataSubsample | None = None,
        untrained: Callable[[torch.Tensor], None] | None = None,
        device: torch.device | None = None,
        backend: str | None = None,
        scalars: Sequence[torch.Tensor] = (),
    ):
        backend = BACKEND if backend is None else backend
        self.loss_fn, self.optimizer, self.model, self.guide = loss_fn, optimizer, model, guide
        self.clip_norm, self.kl, self.subsample = clip_norm, kl, subsample
        self.untrained = untrained
        self.scalars = list(scalars)
        self.params = list(params.values())
        self.device = device if device is not None else self.params[0].device
        self.keys = [k for k, v in data.items() if torch.is_tensor(v)]
        self.constants = {k: v for k, v in data.items() if not torch.is_tensor(v)}
        self.shapes = {k: self._layout(data[k]) for k in self.keys}
        self.kind = _optimizer_kind(optimizer)
        self.update_fn = _optimizer_update(self.kind, optimizer.param_groups[0])
        self._bind_states()
        self.lr = torch.zeros((), device=self.device)
        self.beta = torch.ones((), device=self.device)
        self.backend = "fx"
        self.reused = False  # Inductor's code of an earlier fit's identical graph (_COMPILED)
        t0 = time.perf_counter()
        rng = rng_state()  # capture and checks draw noise: the run's RNG stays as it was
        try:
            self.signature = self._check_structure(data)
            self.elbo_state = StoreState(written_entries(loss_fn, data))
            self.graph = self._trace(data)
            self.fn = self.graph
            if backend == "inductor":
                self.fn, self.backend = self._compile(data)
        finally:
            set_rng_state(rng)
        self.compile_seconds = time.perf_counter() - t0
        self.compiled_at = time.perf_counter()
        self.value_checks, self.value_check_seconds = 0, 0.0
        self.last_value_difference = 0.0

    def _bind_states(self) -> None:
        """The optimizer's state tensors, flat, as graph inputs (created as eager
        ``torch.optim`` would at its first step where there are none yet)."""
        opt = self.optimizer
        for p in self.params:
            if not opt.state.get(p):
                opt.state[p] = _init_state(self.kind, p)
        self.state_keys = sorted(opt.state[self.params[0]])
        self.flat_states = [opt.state[p][k] for p in self.params for k in self.state_keys]
        self._fixed: list | None = None

    # -- capture

    def _check_structure(self, data: dict[str, Any]) -> tuple:
        sigs = [structure(self.model, self.guide, data) for _ in range(STRUCTURE_TRACES)]
        for other in sigs[1:]:
            if other != sigs[0]:
                raise Fallback(difference(sigs[0], other))
        return sigs[0]

    def _inputs(self, data: dict[str, Any]) -> list[torch.Tensor]:
        """The graph's inputs, flat: parameters, optimizer states, the ELBO's own state
        (:mod:`~bayesdl.inference.elbo_state`), lr, beta, data, indices."""
        idx = [self.subsample.indices] if self.subsample is not None else []
        return [
            *self.params,
            *self.flat_states,
            *self.elbo_state.tensors,
            self.lr,
            self.beta,
            *self.scalars,
            *map(data.get, self.keys),
            *idx,
        ]

    def _flat_step(self, *flat: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`_step` on the flat inputs of :meth:`_inputs`, returning a flat list."""
        n, k, m = len(self.params), len(self.state_keys), len(self.keys)
        params, flat = list(flat[:n]), flat[n:]
        states = [list(flat[i * k : (i + 1) * k]) for i in range(n)]
        e = len(self.elbo_state)
        elbo_state, flat = list(flat[n * k : n * k + e]), flat[: n * k] + flat[n * k + e :]
        a = n * k + 2 + len(self.scalars)  # the scalars are read where they live
        lr, beta, xs, idx = flat[n * k], flat[n * k + 1], flat[a : a + m], flat[a + m :]
        new_elbo_state: list[torch.Tensor] = []
        with self.elbo_state.bound(elbo_state, new_elbo_state):
            loss, new_params, new_states = self._step(params, states, lr, beta, list(xs), list(idx))
        return [loss, *new_params, *(t for st in new_states for t in st), *new_elbo_state]

    def _step(self, params, states, lr, beta, xs, idx):
        """The traced function: its inputs are the real tensors, so every use of them inside
        Pyro's handlers becomes a use of a graph input."""
        data = dict(zip(self.keys, xs, strict=True)) | self.constants
        if idx:
            self.subsample.indices = idx[0]
        if self.kl is not None:
            self.kl.beta = beta
        with pyro.validation_enabled(False):
            loss = self.loss_fn(**data)
        if self.untrained is not None:
            self.untrained(loss)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        used = [g is not None for g in grads]
        clip = self.clip_norm
        if clip is not None and any(used):
            norms = torch.stack([g.detach().norm(2) for g in grads if g is not None])
            coef = torch.clamp(clip / (norms.norm(2) + 1e-6), max=1.0)
            grads = [None if g is None else g * coef for g in grads]
        new_params, new_states = [], []
        for p, g, st in zip(params, grads, states, strict=True):
            if g is None:  # eager torch.optim skips a parameter without a gradient
                new_params.append(p.detach())
                new_states.append(list(st))
                continue
            p2, st2 = self.update_fn(p.detach(), g, dict(zip(self.state_keys, st, strict=True)), lr)
            new_params.append(p2)
            new_states.append([st2[k] for k in self.state_keys])
        return loss.detach(), new_params, new_states

    def _trace(self, data: dict[str, Any]) -> torch.fx.GraphModule:
        from torch.fx.experimental.proxy_tensor import make_fx

        kl_beta = self.kl.beta if self.kl is not None else None
        try:
            with torch.enable_grad():

                def step(*flat):  # make_fx reads the signature: no bound method
                    with ValueReads():
                        return self._flat_step(*flat)

                return make_fx(step, tracing_mode="real")(*self._inputs(data))
        except Fallback:
            raise
        except Exception as e:  # noqa: BLE001 -- any failure to trace means: run eagerly
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "get value out of a tracing tensor" in first:  # make_fx's own check, an op's read
                where = user_line(traceback.extract_tb(e.__traceback__))
                raise Fallback(
                    f"the model or guide reads a tensor's value{where}: a compiled graph would "
                    "keep the value its capture saw"
                ) from e
            raise Fallback(f"the step cannot be traced ({type(e).__name__}: {first})") from e
        finally:
            if self.kl is not None:
                self.kl.beta = kl_beta

    def _compile(self, data: dict[str, Any]) -> tuple[Callable, str]:
        """Inductor over the traced aten graph (``compile_fx``, as ``torch.compile`` 's
        backend does, without Dynamo's guards at every call), run once: the compile happens
        there; the graph returns new values and mutates none of its inputs. The plain graph if
        Inductor fails."""
        try:
            import torch._inductor.config as inductor_config
            from torch._inductor.compile_fx import compile_fx

            inputs = self._inputs(data)
            cuda = self.device.type == "cuda"
            # inputs keep their capture-time shapes and strides (:meth:`accepts` checks new
            # data), so the wrapper's per-call size/stride asserts are dropped (15% on coin)
            options = {
                "triton.cudagraphs": cuda and CUDA_GRAPHS,
                "size_asserts": False,
                # aten's random ops, not Inductor's own RNG (which drew other noise than eager
                # for the BNN): the compiled run draws eager's noise, and check_values holds
                "fallback_random": True,
            }
            key = None if options["triton.cudagraphs"] else graph_key(self.graph, inputs, options)
            if key in _COMPILED:
                _COMPILED.move_to_end(key)
                self.reused = True
                return _COMPILED[key], "inductor"
            with (
                torch.no_grad(),
                inductor_config.patch(options),
                warnings.catch_warnings(),
                shape_env(),  # Inductor's on-disk FX graph cache: see compile_cache
                known_vector_isa(),
            ):
                # Inductor's own deprecation notices (torch._prims_common.check in lowering
                # masked ops) are not the user's to act on
                warnings.filterwarnings(
                    "ignore", category=FutureWarning, module=r"torch\._inductor"
                )
                fn = compile_fx(self.graph, inputs)  # an inference graph: no autograd
                fn(*inputs)
            if key is not None:
                _COMPILED[key] = fn
                while len(_COMPILED) > COMPILED_KEPT:
                    _COMPILED.popitem(last=False)
            return fn, "inductor"
        except Exception as e:  # noqa: BLE001 -- e.g. no C compiler: the fx replay still runs
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"--compile: Inductor failed ({first}); replaying the graph", file=sys.stderr)
            return self.graph, "fx"

    # -- replay

    def __call__(self, data: Mapping[str, Any]) -> torch.Tensor:
        """One compiled step on ``data`` (same keys and shapes as at capture), at the
        optimizer's current learning rate and the current KL weight; updates the parameters
        and the optimizer state in place and returns the detached loss."""
        if self._fixed is None:  # the inputs that are the same tensors at every step
            self._fixed = [*self.params, *self.flat_states, *self.elbo_state.tensors]
            self._fixed += [self.lr, self.beta, *self.scalars]
            self._targets = [*self.params, *self.flat_states, *self.elbo_state.tensors]
            self._cuda = self.device.type == "cuda"
        self.lr.fill_(self.optimizer.param_groups[0]["lr"])
        if self.kl is not None:
            self.beta.fill_(self.kl.beta)
        inputs = self._fixed + [data[k] for k in self.keys]
        if self.subsample is not None:
            inputs.append(self.subsample.indices)
        with torch.no_grad():
            out = self.fn(*inputs)
            torch._foreach_copy_(self._targets, out[1:])
        # a CUDA graph's outputs are overwritten by its next replay: the loss is kept
        return out[0].clone() if self._cuda else out[0]

    def state_dict(self) -> dict:
        """The optimizer's ``state_dict()``: the graph's new states are copied into its own
        tensors after every step, so this is what eager steps would have written."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Load a saved optimizer state (checked) and take its tensors as the graph's inputs."""
        load_optimizer_state(self.optimizer, state)
        self._bind_states()

    @staticmethod
    def _layout(t: torch.Tensor) -> tuple:
        return t.shape, t.stride(), t.dtype, t.device

    def accepts(self, data: dict[str, Any]) -> str | None:
        """Why new data (an epoch's ``data_hook``) does not fit the graph, or ``None``."""
        for k, v in data.items():
            if k in self.shapes:
                if not torch.is_tensor(v) or self._layout(v) != self.shapes[k]:
                    return f"the data {k!r} changed shape, strides, dtype or device"
            elif k not in self.constants or self.constants[k] is not v:
                return f"the data {k!r} changed"
        return None

    def check(self, data: dict[str, Any]) -> str | None:
        """Re-trace the model and guide eagerly (RNG untouched); why the structure no longer
        matches the captured one, or ``None``."""
        rng = rng_state()
        try:
            sig = structure(self.model, self.guide, data)
        finally:
            set_rng_state(rng)
        return None if sig == self.signature else difference(self.signature, sig)

    def value_check_due(self) -> bool:
        """Whether the loss check (:meth:`check_values`) runs at this log point: at the first,
        then while the checks keep within :data:`VALUE_CHECK_SHARE` of the time since capture."""
        spent = time.perf_counter() - self.compiled_at
        return self.value_checks == 0 or self.value_check_seconds <= VALUE_CHECK_SHARE * spent

    def check_values(self, data: dict[str, Any]) -> str | None:
        """Run the graph once more at the current parameters, keeping none of its new values,
        and the fit's loss eagerly from the same RNG state (the graph draws its noise from
        torch's RNG in eager's order); why the two losses differ beyond float32 rounding, or
        ``None``. Every RNG is left as it was."""
        t0 = time.perf_counter()
        rng = rng_state()
        try:
            with torch.no_grad():
                compiled = float(self.fn(*self._inputs(data))[0])
            set_rng_state(rng)
            # as in training, gradients on: a model may choose its estimator by
            # torch.is_grad_enabled() (a BNN's local reparameterization does)
            with torch.enable_grad(), pyro.validation_enabled(False):
                eager = float(self.loss_fn(**data).detach())
            self.elbo_state.restore()  # the eager loss replaced them: training keeps its own
        except Exception as e:  # noqa: BLE001 -- the eager step will say what fails, and where
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return f"the eager loss failed ({type(e).__name__}: {first})"
        finally:
            set_rng_state(rng)
            self.value_checks += 1
            self.value_check_seconds += time.perf_counter() - t0
        # |compiled - eager| / max(|eager|, 1) at the last check (the benchmark reports it)
        if not (math.isfinite(compiled) or math.isfinite(eager)):
            return None  # diverged either way: the log point's NaN check says so
        self.last_value_difference = abs(compiled - eager) / max(abs(eager), 1.0)
        if abs(compiled - eager) <= VALUE_RTOL * abs(eager) + VALUE_ATOL:
            return None
        return (
            f"the compiled loss {compiled:.6g} is not the eager loss {eager:.6g} on the same "
            "noise (the model or guide computes something the graph kept from its capture: a "
            "value read in Python, a global, a counter)"
        )
