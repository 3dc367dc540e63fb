"""What every fitted posterior is, whichever method fitted it: :class:`Posterior`, the one
interface of :func:`bayesdl.fit` and :func:`bayesdl.load`, and the printing and ArviZ export the
methods share.

Two implementations, one per inference method (``bayesdl.fits.methods.METHODS``):
:class:`~bayesdl.fits.guide_posterior.GuidePosterior` (VI: a fitted guide ``q(z) ~= p(z | D)``)
and :class:`~bayesdl.fits.draws.DrawsPosterior` (NUTS: draws ``z_m ~ p(z | D)``).
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bayesdl.fits.base import Run
from bayesdl.fits.fit_info import FitInfo
from bayesdl.inference.errors import UserError
from bayesdl.inference.serial import serialised


@serialised  # one model runs at a time in this process (inference.serial)
class Posterior(abc.ABC):
    """A fitted posterior ``p(z | D)``: the result of :func:`bayesdl.fit` or :func:`bayesdl.load`.

    The contract both methods keep (VI: :class:`~bayesdl.fits.guide_posterior.GuidePosterior`,
    NUTS: :class:`~bayesdl.fits.draws.DrawsPosterior`):

    - ``summary(num_samples=None, corrected=False) -> {site: {"mean", "std", "5%", "50%", "95%",
      ...}}`` of every latent and ``pyro.deterministic`` site, floats or nested lists; the same
      numbers at every call and in ``summary.json`` (VI adds ``"exact"``, NUTS ``"r_hat"`` and
      ``"n_eff"``).
    - ``sample(num_samples=None) -> {site: tensor [n, *shape]}``: posterior draws of every
      latent and ``pyro.deterministic`` site (``None``: the method's default, VI 1000 fresh
      draws of the guide, NUTS all ``chains x samples`` draws; else ``num_samples`` of them).
    - ``predict(data=None, num_samples=1000) -> {site: tensor [num_samples, ...]}``: posterior-
      predictive draws of every site at the inputs ``data`` (the model's keyword arguments;
      training arguments not given keep their values, the observations are drawn).
    - ``diagnostics() -> dict``: the method's own (VI: ``k_hat``, ``converged``, ``reliable``,
      ``checks``; NUTS: ``{site: {"r_hat", "n_eff"}}``).
    - ``save(run_dir, overwrite=False) -> Path``: a run folder :func:`bayesdl.load` reopens.
    - ``to_arviz(num_samples=None) -> arviz.InferenceData`` with the groups ``posterior``,
      ``log_likelihood``, ``posterior_predictive``, ``observed_data`` (NUTS: ``sample_stats``)
      for ``az.loo`` / ``az.waic`` / ``az.plot_ppc`` (extra ``bayesdl[arviz]``).
    - ``fit_info``: a :class:`~bayesdl.fits.fit_info.FitInfo` (steps, wall time, steps per
      second, compiled, device, converged...), the numbers of ``summary.json``.
    - ``converged``, ``reliable`` (``bool | None``), ``reliable_reasons`` (``list[str]``) and
      ``checks`` (``dict``): the run's own verdict, as ``summary.json`` holds it.
    - ``model``, ``guide`` (None for NUTS), ``data``, ``params`` (``{name: tensor}``), ``elbo``
      (``list[float]``), ``history`` (``list[dict]``), ``run_dir`` (``Path | None``) and
      ``scope()`` (the fit's parameter store as Pyro's current one).
    """

    #: the inference method that made it (a key of ``bayesdl.fits.methods.METHODS``)
    method: ClassVar[str] = ""

    def __init__(self, run: Run):
        self._run = run

    # -- what was fitted, the same for every method

    @property
    def model(self):
        """The model function (or PyroModule)."""
        return self._run.problem.model

    def scope(self) -> AbstractContextManager:
        """Context manager: this fit's parameter store as Pyro's current one (the model's and
        the guide's ``pyro.param`` values), e.g. ``with post.scope(): Predictive(...)``."""
        return self._run.problem.scope()

    @property
    def data(self) -> dict[str, Any]:
        """The keyword arguments the model was fitted to."""
        return self._run.problem.data

    @property
    def run_dir(self) -> Path | None:
        """The run folder this posterior was fitted into or loaded from."""
        return self._run.out

    @property
    def converged(self) -> bool | None:
        """Whether the fit had converged (VI: its ELBO flat and its guide settled; NUTS: split
        R-hat below 1.05); None where unknown."""
        return self._run.summary.get("converged")

    @property
    def fit_info(self) -> FitInfo:
        """What the fit did, typed (:class:`~bayesdl.fits.fit_info.FitInfo`): method, steps,
        wall time, steps per second, compiled or not, device, converged, reliable, seed --
        the numbers of ``summary.json``, also after :func:`bayesdl.load`."""
        return FitInfo.from_summary(self._run.summary)

    @property
    def checks(self) -> dict[str, dict]:
        """Every check of the run with its value and verdict (``summary.json``'s ``checks``:
        ``convergence`` and ``k_hat`` for VI; R-hat, ESS and divergences for NUTS)."""
        return dict(self._run.summary.get("checks") or {})

    @property
    def reliable(self) -> bool | None:
        """True only when the fit converged and every check passed; False when one failed;
        None when the family could not be checked (or the run predates the checks). The
        reasons: :attr:`reliable_reasons`."""
        return self._run.summary.get("reliable")

    @property
    def reliable_reasons(self) -> list[str]:
        """Why :attr:`reliable` is not True, one line per check."""
        return list(self._run.summary.get("reliable_reasons") or [])

    # -- what each method implements

    @property
    @abc.abstractmethod
    def guide(self):
        """The fitted guide (None for a method without one)."""

    @property
    @abc.abstractmethod
    def history(self) -> list[dict]:
        """The method's logged rows (VI: one per log window; NUTS: one per chain)."""

    @property
    @abc.abstractmethod
    def elbo(self) -> list[float]:
        """The ELBO history (empty for a method without an ELBO)."""

    @property
    @abc.abstractmethod
    def params(self) -> dict[str, torch.Tensor]:
        """The fitted ``pyro.param`` values of the model (constrained)."""

    @abc.abstractmethod
    def diagnostics(self) -> dict[str, Any]:
        """The method's diagnostics (see the class docstring)."""

    @abc.abstractmethod
    def sample(self, num_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Posterior draws ``{site: tensor [n, *shape]}``."""

    @abc.abstractmethod
    def summary(
        self, num_samples: int | None = None, corrected: bool = False
    ) -> dict[str, dict[str, Any]]:
        """``{site: {"mean", "std", "5%", "50%", "95%", ...}}``."""

    @abc.abstractmethod
    def predict(
        self, data: dict[str, Any] | None = None, num_samples: int = 1000
    ) -> dict[str, torch.Tensor]:
        """Posterior-predictive draws ``{site: tensor [num_samples, ...]}`` at ``data``."""

    @abc.abstractmethod
    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write a run folder that :func:`bayesdl.load` reopens; return it."""

    @abc.abstractmethod
    def to_arviz(self, num_samples: int | None = None):
        """ArviZ ``InferenceData`` (groups: see the class docstring)."""


#: the columns of :meth:`Posterior.summary` in the printed table
STAT_COLUMNS = ("mean", "std", "5%", "50%", "95%")


def summary_table(head: str, summary: dict, cols: tuple[str, ...], width: int) -> str:
    """A summary as printed: one row per element (the first 8 of a vector site)."""
    rows = [head, f"{'site':<20} " + " ".join(f"{c:>{width}}" for c in cols)]
    for name, r in summary.items():
        flat = {k: np.ravel(r[k]) for k in cols if k in r}
        n = len(flat["mean"])
        for i in range(min(n, 8)):
            label = name if n == 1 else f"{name}[{i}]"
            vals = " ".join(
                f"{flat[k][i]:>{width}.4g}" if k in flat else f"{'':>{width}}" for k in cols
            )
            rows.append(f"{label:<20} {vals}")
        if n > 8:
            rows.append(f"{name}[...]  ({n - 8} more elements)")
    return "\n".join(rows)


def check_count(n: Any, what: str) -> None:
    """Refuse a count of draws that is not a positive integer (a UserError)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{what} must be a positive integer, got {n!r}")
