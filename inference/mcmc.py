"""NUTS beside SVI: Pyro's ``MCMC(NUTS(model))``, its chains drawn one after another.

The No-U-Turn sampler (Hoffman and Gelman 2014, JMLR 15) draws from ``p(z | x)`` itself, with
no variational family: the reference a VI fit is checked against. This module is a thin layer
over :class:`pyro.infer.MCMC` and :class:`pyro.infer.NUTS` (discrete sites that can be
enumerated are summed out by NUTS, given ``max_plate_nesting``) and over Pyro's diagnostics
(:func:`pyro.infer.mcmc.util.diagnostics`: split R-hat and the effective sample size per
element). What it adds: one ``MCMC`` per chain, so chains run in this process on any machine
and Ctrl-C keeps the chains (or the draws of the first chain) finished so far; a warning for
models too big to sample; and draws ``{site: [chains, samples, *shape]}``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.util import diagnostics as pyro_diagnostics

from bayesdl.inference.errors import UserError
from bayesdl.inference.moments import site_stats
from bayesdl.inference.predictive import conditioned
from bayesdl.inference.where import warn_at

#: a model with more latent dimensions than this is sampled, but warned about
LARGE_MODEL = 1000
#: R-hat above this: the chains disagree
RHAT_LIMIT = 1.05
METHODS = ("vi", "nuts")


@dataclass(frozen=True)
class MCMCConfig:
    """The options of ``bayesdl fit --inference nuts`` (Python: ``method="nuts"``)."""

    method: str = field(
        default="vi",
        metadata={
            "help": "vi: fit the guide by SVI (default); nuts: draw from the posterior with "
            "Pyro's NUTS sampler (no guide)",
            "flag": "--inference",
            "choices": METHODS,
        },
    )
    num_samples: int = field(
        default=1000,
        metadata={
            "help": "NUTS: draws kept per chain (default %(default)s)",
            "flag": "--samples",
            "metavar": "N",
        },
    )
    warmup: int = field(
        default=500, metadata={"help": "NUTS: adaptation steps per chain (default %(default)s)"}
    )
    chains: int = field(
        default=2, metadata={"help": "NUTS: chains, drawn one after another (default %(default)s)"}
    )
    target_accept: float = field(
        default=0.8, metadata={"help": "NUTS: target acceptance probability (default 0.8)"}
    )
    max_tree_depth: int = field(
        default=10, metadata={"help": "NUTS: largest tree depth (default 10)"}
    )
    dense_mass: bool = field(
        default=False,
        metadata={"help": "NUTS: adapt a dense mass matrix (correlated posteriors, few latents)"},
    )

    def validate(self) -> None:
        """Reject impossible settings with a :class:`UserError`."""
        if self.method not in METHODS:
            raise UserError(f"--inference must be one of {', '.join(METHODS)}, got {self.method!r}")
        for flag, v, low in (
            ("--samples", self.num_samples, 1),
            ("--warmup", self.warmup, 0),
            ("--chains", self.chains, 1),
            ("--max-tree-depth", self.max_tree_depth, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UserError(f"{flag} must be an integer >= {low}, got {v!r}")
        if not 0 < self.target_accept < 1:
            raise UserError(f"--target-accept must be in (0, 1), got {self.target_accept}")


@dataclass
class MCMCResult:
    """What :func:`run_nuts` drew: ``draws[site]`` is ``[chains, samples, *shape]``."""

    draws: dict[str, torch.Tensor]
    wall_seconds: float
    device: str
    chains: list[dict] = field(default_factory=list)  # per chain: samples, divergences, ...
    interrupted: bool = False
    #: per draw, ``[chains, samples]``: ``diverging``, ``acceptance_rate`` (the draw's mean
    #: Metropolis acceptance over its tree), ``lp`` (minus the potential energy), ``step_size``
    #: (Pyro's NUTS keeps no tree depth or energy per draw)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0] if self.draws else 0

    @property
    def num_samples(self) -> int:
        return next(iter(self.draws.values())).shape[1] if self.draws else 0

    def flat(self) -> dict[str, torch.Tensor]:
        """The draws of every chain one after another: ``[chains * samples, *shape]``."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.draws.items()}


def latent_dimension(model: Callable, data: Mapping[str, Any]) -> int:
    """The number of continuous latent dimensions of one draw of the model's prior."""
    with torch.no_grad(), poutine.block():
        tr = poutine.trace(model).get_trace(**data)
    return sum(
        s["value"].numel()
        for s in tr.nodes.values()
        if s["type"] == "sample"
        and not s["is_observed"]
        and type(s["fn"]).__name__ != "_Subsample"
        and not s["infer"].get("_deterministic")
        and not s["fn"].support.is_discrete
    )


def param_sites(model: Callable, data: Mapping[str, Any]) -> list[str]:
    """The ``pyro.param`` sites of the model (a ``PyroModule``'s parameters included), found on
    one run in a throwaway parameter store."""
    with pyro.get_param_store().scope(), torch.no_grad(), poutine.block():
        tr = poutine.trace(model).get_trace(**data)
    return [n for n, s in tr.nodes.items() if s["type"] == "param"]


def refuse_params(model: Callable, data: Mapping[str, Any], name: str = "the model") -> None:
    """A :class:`UserError` for a model with ``pyro.param`` sites: NUTS draws latent sites only
    (Pyro's NUTS would leave each parameter at its initial value without a word)."""
    params = param_sites(model, data)
    if params:
        shown = ", ".join(params[:5]) + (f" and {len(params) - 5} more" if len(params) > 5 else "")
        raise UserError(
            f"{name} has pyro.param sites ({shown}), which NUTS does not fit (it samples latent "
            "sites only; they would keep their initial values): make each a latent site with "
            "a prior (pyro.sample), or fit with VI (--inference vi, method='vi')"
        )


def run_nuts(
    model: Callable,
    data: Mapping[str, Any],
    config: MCMCConfig,
    *,
    seed: int = 0,
    progress: bool = True,
    max_plate_nesting: float = math.inf,
    device: str | torch.device = "cpu",
    name: str = "the model",
    init_strategy: Callable | None = None,
) -> MCMCResult:
    """Draw ``config.chains`` NUTS chains from ``p(z | data)``, one after another.

    :param max_plate_nesting: of the model (``inf``: Pyro guesses it from a trace); needed to
        sum out enumerable discrete sites.
    :param progress: Pyro's progress bar per chain (on a terminal only).
    :param init_strategy: where each chain starts (Pyro's ``init_to_*``; None: Pyro's
        default, ``init_to_uniform``).
    :param name: the model in messages (a model with ``pyro.param`` sites is refused,
        :func:`refuse_params`).

    Ctrl-C ends sampling: the finished chains are kept (or, during the first, its draws so
    far) and the result says ``interrupted``; nothing kept raises ``KeyboardInterrupt``.
    """
    config.validate()
    device = torch.device(device)
    data = {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}
    _check_model(model, data, name)
    nesting = None if math.isinf(max_plate_nesting) else int(max_plate_nesting)
    pyro.set_rng_seed(seed)
    chains: list[dict[str, torch.Tensor]] = []
    stats: list[dict] = []
    per_draw: list[dict[str, torch.Tensor]] = []
    interrupted = False
    bar = bool(progress) and sys.stderr.isatty()
    wall0 = time.perf_counter()
    for c in range(config.chains):
        draws, chain_stats, interrupted = _run_chain(
            model, data, config, c, nesting, bar, keep_partial=not chains, init=init_strategy
        )
        if draws is not None:
            chains.append(draws)
            per_draw.append(chain_stats.pop("per_draw"))
            stats.append(chain_stats)
        if interrupted:
            break
    if not chains:
        raise KeyboardInterrupt
    draws = {k: torch.stack([ch[k] for ch in chains]) for k in sorted(chains[0])}
    n = min(next(iter(ch.values())).shape[0] for ch in chains) if draws else 0
    return MCMCResult(
        stats={k: torch.stack([d[k][:n] for d in per_draw]) for k in per_draw[0]},
        draws=draws,
        wall_seconds=time.perf_counter() - wall0,
        device=str(device),
        chains=stats,
        interrupted=interrupted,
    )


def _check_model(model: Callable, data: dict[str, Any], name: str) -> None:
    """Refuse a model with ``pyro.param`` sites; warn when its latent dimension is large."""
    refuse_params(model, data, name)
    dims = latent_dimension(model, data)
    if dims > LARGE_MODEL:
        warn_at(
            f"NUTS on {dims} latent dimensions: expect minutes or more per chain (each draw "
            "takes up to 2^max_tree_depth gradient evaluations); VI is the usual tool here",
            UserWarning,
            model,
        )


def _run_chain(
    model: Callable,
    data: dict[str, Any],
    config: MCMCConfig,
    c: int,
    nesting: int | None,
    bar: bool,
    *,
    keep_partial: bool,
    init: Callable | None = None,
) -> tuple[dict[str, torch.Tensor] | None, dict | None, bool]:
    """Chain ``c`` (0-based): its draws (constrained), its statistics, and whether Ctrl-C
    ended it. An interrupted chain's draws so far are kept only when ``keep_partial`` (the
    first chain) and there are at least two."""
    kept: list[dict[str, torch.Tensor]] = []  # this chain's draws (unconstrained)

    mean_accept: list[float] = []  # NUTS's running mean after each draw
    lp: list[float] = []
    steps: list[float] = []

    def keep(kernel, params, stage, i):  # noqa: ARG001
        if stage.startswith("Sample"):
            kept.append({k: v.detach().clone() for k, v in params.items()})
            mean_accept.append(float(kernel._mean_accept_prob))
            pe = kernel._potential_energy_last
            lp.append(float("nan") if pe is None else -float(pe))
            steps.append(float(kernel.step_size))

    def per_draw() -> dict[str, torch.Tensor]:
        m = torch.tensor(mean_accept, dtype=torch.float64)
        k = torch.arange(1, len(m) + 1, dtype=torch.float64)
        accept = k * m - (k - 1) * torch.cat([m.new_zeros(1), m[:-1]])  # a_n from the means
        diverging = torch.zeros(len(m), dtype=torch.bool)
        diverging[[d for d in kernel._divergences if d < len(m)]] = True
        return {
            "diverging": diverging,
            "acceptance_rate": accept,
            "lp": torch.tensor(lp, dtype=torch.float64),
            "step_size": torch.tensor(steps, dtype=torch.float64),
        }

    kernel = NUTS(
        model,
        target_accept_prob=config.target_accept,
        max_tree_depth=config.max_tree_depth,
        full_mass=config.dense_mass,
        max_plate_nesting=nesting,
        **({} if init is None else {"init_strategy": init}),
    )
    mcmc = MCMC(
        kernel,
        num_samples=config.num_samples,
        warmup_steps=config.warmup,
        num_chains=1,
        hook_fn=keep,
        disable_progbar=not bar,
    )
    t0 = time.perf_counter()
    try:
        mcmc.run(**data)
    except KeyboardInterrupt:
        if keep_partial and len(kept) >= 2:
            partial = _chain_stats(len(kept), len(kernel._divergences), None, t0, kernel.step_size)
            return _constrained(kernel, kept), {**partial, "per_draw": per_draw()}, True
        return None, None, True
    except (ValueError, RuntimeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"NUTS failed in chain {c + 1}: {type(e).__name__}: {first}") from e
    samples = mcmc.get_samples(group_by_chain=True)
    # the kernel's own statistics, as MCMC.diagnostics() lists them per chain (without its
    # R-hat, which needs 4 draws)
    diag = (getattr(mcmc, "_diagnostics", None) or [None])[0] or {}
    divergences = len(diag.get("divergences", []))
    accept = diag.get("acceptance rate")
    chain_stats = _chain_stats(config.num_samples, divergences, accept, t0, kernel.step_size)
    return {k: v[0] for k, v in samples.items()}, {**chain_stats, "per_draw": per_draw()}, False


def _constrained(kernel: NUTS, kept: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Draws of an interrupted chain, from the sampler's unconstrained space to the sites'."""
    out = {}
    for name in kept[0]:
        z = torch.stack([d[name] for d in kept])
        transform = (kernel.transforms or {}).get(name)
        out[name] = transform.inv(z) if transform is not None else z
    return out


def _chain_stats(
    samples: int, divergences: int, acceptance: float | None, t0: float, step_size: float
) -> dict:
    return {
        "samples": samples,
        "divergences": divergences,
        "acceptance_rate": None if acceptance is None else round(float(acceptance), 4),
        "step_size": float(step_size),
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }


def diagnostics(draws: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split R-hat and effective sample size of every element of every site (Pyro's
    :func:`~pyro.infer.mcmc.util.diagnostics`): ``{site: {"r_hat", "n_eff"}}`` of the site's
    shape; draws are ``[chains, samples, *shape]``."""
    out = {}
    for name, v in draws.items():
        if v.shape[1] < 4:  # split R-hat needs 4 draws a chain: none yet
            nan = torch.full(v.shape[2:], math.nan)
            out[name] = {"r_hat": nan, "n_eff": nan}
            continue
        stats = pyro_diagnostics({name: v}, group_by_chain=True)[name]
        out[name] = {"r_hat": stats["r_hat"], "n_eff": stats["n_eff"]}
    return out


def predictive(
    model: Callable,
    samples: Mapping[str, torch.Tensor],
    data: Mapping[str, Any],
    return_sites: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Draws of the model's sites given posterior ``samples`` (``[n, *shape]`` each), one per
    sample: :func:`bayesdl.inference.predictive.conditioned`. ``return_sites=None``: every
    site not in ``samples``."""
    return conditioned(model, samples, data, return_sites)


def with_deterministic(
    model: Callable, draws: Mapping[str, torch.Tensor], data: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """``draws`` (``[chains, samples, *shape]``) and the model's ``pyro.deterministic`` sites,
    computed per draw, in the same layout."""
    with torch.no_grad(), poutine.block():
        tr = poutine.trace(model).get_trace(**data)
    det = [
        n for n, s in tr.nodes.items() if s["type"] == "sample" and s["infer"].get("_deterministic")
    ]
    if not det or not draws:
        return dict(draws)
    lead = next(iter(draws.values())).shape[:2]
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
    out = predictive(model, flat, data, det)
    return {**draws, **{k: v.reshape(*lead, *v.shape[1:]) for k, v in out.items()}}


def draws_table(
    draws: Mapping[str, torch.Tensor], max_elements: int | None = None
) -> dict[str, dict[str, Any]]:
    """``{site: {"mean", "std", "5%", "50%", "95%", "r_hat", "n_eff"}}`` of draws ``[chains,
    samples, *shape]`` over every draw (sites above ``max_elements`` left out), as floats or
    nested lists: what ``DrawsPosterior.summary()`` and a NUTS run's ``summary.json`` hold."""
    small = {
        k: v
        for k, v in draws.items()
        if max_elements is None or math.prod(v.shape[2:]) <= max_elements
    }
    table = {}
    for name, d in diagnostics(small).items():
        row = site_stats(small[name].reshape(-1, *small[name].shape[2:]))
        row["r_hat"] = _plain(d["r_hat"])
        row["n_eff"] = _plain(d["n_eff"])
        table[name] = row
    return table


def _plain(t: Any) -> Any:
    t = torch.as_tensor(t)
    return t.item() if t.dim() == 0 else t.tolist()
