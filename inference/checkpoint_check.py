"""What a checkpoint may hold, checked before any of it reaches Pyro, torch or numpy.

``torch.load(weights_only=True)`` guarantees tensors and plain data only; this module checks
that they have the types, shapes and values :mod:`bayesdl.inference.checkpoint` wrote:
``step`` a count, every parameter a finite real tensor, module states dicts of tensors, the
RNG states of the sizes torch, numpy and Python use, the optimizer's state of its parameters'
shapes. A damaged or crafted checkpoint is a one-line :class:`UserError` naming the entry.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import torch

from bayesdl.inference.errors import UserError

#: entries a checkpoint needs to continue a fit (``--resume``), beyond the parameters
RESUME_KEYS = ("param_store", "optimizer", "rng")
_MT_WORDS = 624  # the Mersenne twister's state: 624 words and a position (numpy, Python)


class _Bad(Exception):
    """One entry is not what bayesdl writes there."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _tensor(v: Any, what: str, *, floating: bool = False, finite: bool = True) -> torch.Tensor:
    if not torch.is_tensor(v) or v.layout != torch.strided or v.is_complex():
        raise _Bad(f"{what} is not a real tensor")
    if floating and not v.is_floating_point():
        raise _Bad(f"{what} is {v.dtype}, not a floating tensor")
    if finite and v.is_floating_point() and not bool(torch.isfinite(v).all()):
        raise _Bad(f"{what} holds NaN or infinite values")
    return v


def _dict(v: Any, what: str) -> dict:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise _Bad(f"{what} is not a table of named entries")
    return v


def check(state: Any, path: str | Path, *, resume: bool = False) -> None:
    """Refuse a checkpoint whose entries are not what a fit writes (``resume``: also what
    ``--resume`` needs: the parameters', the optimizer's and the RNGs' states)."""
    try:
        _check(state, resume)
    except _Bad as e:
        raise UserError(
            f"checkpoint {path}: {e}; the file is damaged or was not written by bayesdl "
            "(refit the run with --overwrite)"
        ) from None


def _check(state: dict, resume: bool) -> None:
    step = state.get("step", 0)
    if not _is_int(step) or step < 0:
        raise _Bad(f"'step' is {step!r}, not a count of steps")
    if "param_store" in state:
        store = _dict(state["param_store"], "'param_store'")
        for name, value in _dict(store.get("params"), "'param_store.params'").items():
            _tensor(value, f"parameter {name!r}", floating=True)
        for name, c in _dict(store.get("constraints", {}), "'param_store.constraints'").items():
            _dict(c, f"the constraint of {name!r}")
    modules = state.get("modules")
    if modules is not None:
        if not isinstance(modules, list | tuple):
            raise _Bad("'modules' is not a list of module states")
        for i, m in enumerate(modules):
            if m is not None:
                for k, v in _dict(m, f"module state {i}").items():
                    _tensor(v, f"module state {i} entry {k!r}")
    history = state.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise _Bad("'history' is not a list of logged rows")
        for row in history:
            if not isinstance(row, dict) or not _is_int(row.get("step")):
                raise _Bad("'history' holds a row without an integer 'step'")
            if not _is_real(row.get("elbo")):
                raise _Bad(f"'history' row of step {row['step']} has no numeric 'elbo'")
    for key in RESUME_KEYS if resume else ():
        if key not in state:
            raise _Bad(f"no {key!r} state to continue from (a saved posterior, not a fit)")
    if state.get("rng") is not None:
        check_rng(state["rng"], "'rng'")
    if state.get("epoch_rng") is not None:
        check_rng(state["epoch_rng"], "'epoch_rng'")
    if "optimizer" in state:
        _optimizer(state["optimizer"])
    if state.get("scheduler") is not None:
        _plain(_dict(state["scheduler"], "'scheduler'"), "'scheduler'")
    window = state.get("window")
    if window is not None:
        window = _dict(window, "'window'")
        _tensor(window.get("running"), "'window.running'")
        if not _is_int(window.get("count")) or window["count"] < 0:
            raise _Bad("'window.count' is not a count")
    moments = state.get("moments")
    if moments is not None:
        moments = _dict(moments, "'moments'")
        rows = moments.get("rows")
        if rows is not None:
            if not isinstance(rows, list):
                raise _Bad("'moments.rows' is not a list of logged rows")
            for row in rows:
                if not isinstance(row, dict) or not _is_int(row.get("step")):
                    raise _Bad("'moments.rows' holds a row without an integer 'step'")
                for k in ("loc", "sd"):
                    v = _tensor(row.get(k), f"'moments.rows' {k!r}", floating=True)
                    if v.dim() != 1:
                        raise _Bad(f"'moments.rows' {k!r} is not a vector")
        if moments.get("window") is not None:
            _sums(moments["window"], "'moments.window'")
    if state.get("tail") is not None:
        _sums(state["tail"], "'tail'")
    batcher = state.get("batcher")
    if batcher is not None:
        batcher = _dict(batcher, "'batcher'")
        if batcher.get("perm") is not None:
            _tensor(batcher["perm"], "'batcher.perm'")
        if not _is_int(batcher.get("pos")) or batcher["pos"] < 0:
            raise _Bad("'batcher.pos' is not a position")


def _sums(v: Any, what: str) -> None:
    """An iterate average's state: ``{"sums": [tensors], "count": n}``."""
    v = _dict(v, what)
    if not isinstance(v.get("sums"), list):
        raise _Bad(f"{what}.sums is not a list of tensors")
    for i, t in enumerate(v["sums"]):
        _tensor(t, f"{what}.sums[{i}]", floating=True)
    if not _is_int(v.get("count")) or v["count"] < 0:
        raise _Bad(f"{what}.count is not a count")


def check_rng(rng: Any, what: str) -> None:
    """The RNG states of :func:`bayesdl.inference.checkpoint.rng_state`, of the right sizes."""
    rng = _dict(rng, what)
    t = rng.get("torch")
    expected = torch.get_rng_state()
    if not torch.is_tensor(t) or t.dtype != torch.uint8 or t.shape != expected.shape:
        raise _Bad(f"{what}: torch's RNG state is not a uint8 tensor of {expected.numel()} bytes")
    py = rng.get("python")
    if not (
        isinstance(py, list | tuple)
        and len(py) == 3
        and _is_int(py[0])
        and isinstance(py[1], list | tuple)
        and len(py[1]) == _MT_WORDS + 1
        and all(_is_int(i) and 0 <= i < 2**32 for i in py[1])
        and (py[2] is None or _is_real(py[2]))
    ):
        raise _Bad(f"{what}: Python's RNG state is not (version, 625 words, gauss)")
    n = _dict(rng.get("numpy"), f"{what}: numpy's RNG state")
    keys = n.get("keys")
    if (
        n.get("name") != "MT19937"
        or not torch.is_tensor(keys)
        or keys.dtype != torch.int64
        or keys.shape != (_MT_WORDS,)
        or not bool(((keys >= 0) & (keys < 2**32)).all())
        or not _is_int(n.get("pos"))
        or not 0 <= n["pos"] <= _MT_WORDS
        or not _is_int(n.get("has_gauss"))
        or not _is_real(n.get("cached_gaussian"))
    ):
        raise _Bad(f"{what}: numpy's RNG state is not MT19937's 624 words and position")
    cuda = rng.get("cuda")
    if cuda is not None and not (
        isinstance(cuda, list | tuple)
        and all(torch.is_tensor(c) and c.dtype == torch.uint8 for c in cuda)
    ):
        raise _Bad(f"{what}: the CUDA RNG states are not uint8 tensors")


def _plain(v: Any, what: str) -> None:
    """``v`` is plain data (numbers, strings, booleans, None, lists and dicts of them)."""
    if isinstance(v, dict):
        for k, x in v.items():
            _plain(x, f"{what}[{k!r}]")
    elif isinstance(v, list | tuple):
        for x in v:
            _plain(x, what)
    elif not (v is None or isinstance(v, bool | int | float | str)):
        raise _Bad(f"{what} holds a {type(v).__name__}, not plain data")


def _optimizer(opt: Any) -> None:
    opt = _dict(opt, "'optimizer'")
    groups = opt.get("param_groups")
    if not isinstance(opt.get("state"), dict) or not isinstance(groups, list):
        raise _Bad("'optimizer' is not an optimizer's state (state, param_groups)")
    for g in groups:
        if not isinstance(g, dict) or not isinstance(g.get("params"), list):
            raise _Bad("'optimizer.param_groups' holds a group without its 'params'")
    for k, s in opt["state"].items():
        for name, v in _dict(s, f"the optimizer's state of parameter {k}").items():
            if torch.is_tensor(v):
                _tensor(v, f"the optimizer's {name!r} of parameter {k}")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, refused in one line when the groups or the
    moments' shapes are not this optimizer's (torch checks the groups, not the shapes)."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UserError(
            f"the checkpoint's optimizer state does not fit this fit ({str(e).splitlines()[0]})"
        ) from None
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.dim() > 0 and v.shape != p.shape:
                    raise UserError(
                        f"the checkpoint's optimizer state {name!r} has shape "
                        f"{tuple(v.shape)}, its parameter {tuple(p.shape)}: was it made with "
                        "other options?"
                    )
