"""A posterior held as draws: what ``bayesdl.fit(..., method="nuts")`` returns.

The :class:`~bayesdl.fits.posterior.Posterior` interface (as a VI fit's guide), over NUTS draws
``z_m ~ p(z | D)`` (``[chains, samples, *shape]`` per site) instead of a guide: the summary
adds split R-hat and the effective sample size per site, predictions are Pyro's
``Predictive(model, posterior_samples=...)``, ``to_arviz`` keeps the chains, and ``save``
writes a run folder with ``draws.npz`` (numpy arrays, never a pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pyro import poutine

from bayesdl.fits.arviz_data import inference_data
from bayesdl.fits.draws_file import DRAWS, save_draws
from bayesdl.fits.folder import claimed, prepare_out, write_json, write_text
from bayesdl.fits.posterior import (
    STAT_COLUMNS,
    Posterior,
    check_count,
    summary_table,
)
from bayesdl.fits.recording import folder_record, write_record
from bayesdl.fits.records import METRICS, SUMMARY
from bayesdl.inference.mcmc import (
    MCMCResult,
    diagnostics,
    draws_table,
    predictive,
    with_deterministic,
)
from bayesdl.inference.predictive import observation_keys, predictive_inputs
from bayesdl.inference.serial import serialised
from bayesdl.workflows.inputs import model_errors, predict_inputs


@serialised  # one model runs at a time in this process (inference.serial)
class DrawsPosterior(Posterior):
    """NUTS draws of a model's posterior (:func:`bayesdl.fit` with ``method="nuts"``, or
    :func:`bayesdl.load` of a NUTS run): the :class:`~bayesdl.fits.posterior.Posterior`
    interface, and ``.draws`` (by chain), ``.result``, ``.observed_sites()``.
    """

    method = "nuts"

    @property
    def result(self) -> MCMCResult:
        """The sampler's result: draws and per-chain statistics."""
        return self._run.result

    @property
    def draws(self) -> dict[str, torch.Tensor]:
        """``{site: tensor [chains, samples, *shape]}`` of every continuous latent site
        (enumerated discrete sites are summed out by NUTS and not drawn)."""
        return {k: v.clone() for k, v in self.result.draws.items()}

    @property
    def guide(self):
        """None: NUTS has no guide."""
        return None

    @property
    def history(self) -> list[dict]:
        """One row per chain: draws, divergences, acceptance rate, step size, seconds."""
        return [{"chain": i + 1, **row} for i, row in enumerate(self.result.chains)]

    @property
    def elbo(self) -> list[float]:
        """Empty: a sampler has no ELBO."""
        return []

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Empty: NUTS fits no ``pyro.param``."""
        return {}

    def diagnostics(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{site: {"r_hat", "n_eff"}}``: split R-hat and effective sample size per element."""
        return diagnostics(self.result.draws)

    # -- draws

    def _deterministic(self) -> list[str]:
        problem = self._run.problem
        with torch.no_grad(), poutine.block():
            tr = poutine.trace(problem.model).get_trace(**problem.data)
        return [
            n
            for n, s in tr.nodes.items()
            if s["type"] == "sample" and s["infer"].get("_deterministic")
        ]

    def _pick(self, num_samples: int | None) -> dict[str, torch.Tensor]:
        """All draws (chains one after another), or ``num_samples`` of them: without
        replacement where there are enough, else with."""
        flat = self.result.flat()
        if num_samples is None:
            return flat
        check_count(num_samples, "num_samples")
        m = next(iter(flat.values())).shape[0]
        device = next(iter(flat.values())).device
        idx = (
            torch.randperm(m, device=device)[:num_samples]
            if num_samples <= m
            else torch.randint(m, (num_samples,), device=device)
        )
        return {k: v[idx] for k, v in flat.items()}

    def sample(self, num_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Posterior draws of every continuous latent (and ``pyro.deterministic``) site,
        ``{site: tensor [n, *shape]}``: all ``chains x samples`` draws by default, else
        ``num_samples`` picked at random."""
        draws = self._pick(num_samples)
        det = self._deterministic()
        if det and draws:
            problem = self._run.problem
            draws.update(predictive(problem.model, draws, problem.data, det))
        return draws

    def summary(
        self, num_samples: int | None = None, corrected: bool = False
    ) -> dict[str, dict[str, Any]]:
        """``{site: {"mean", "std", "5%", "50%", "95%", "r_hat", "n_eff"}}`` from all draws, of
        every latent and ``pyro.deterministic`` site (computed per draw); ``num_samples`` is
        ignored: every draw counts; ``corrected`` too: NUTS draws are the posterior's own, there
        is no guide to correct. The numbers of ``summary.json``."""
        del num_samples, corrected
        return draws_table(self._with_deterministic())

    def _with_deterministic(self) -> dict[str, torch.Tensor]:
        problem = self._run.problem
        return with_deterministic(problem.model, self.result.draws, problem.data)

    def observed_sites(self) -> list[str]:
        """The model's observed sites."""
        problem = self._run.problem
        with torch.no_grad(), poutine.block():
            tr = poutine.trace(problem.model).get_trace(**problem.data)
        return [n for n, s in tr.nodes.items() if s["type"] == "sample" and s["is_observed"]]

    def predict(
        self, data: dict[str, Any] | None = None, num_samples: int = 1000
    ) -> dict[str, torch.Tensor]:
        """Posterior-predictive draws ``{site: tensor [num_samples, ...]}`` of every site of
        the model at the inputs ``data`` (as :meth:`Posterior.predict`), from
        ``Predictive(model, posterior_samples=...)``; a discrete site summed out by NUTS is
        drawn given each draw (right for new data points)."""
        check_count(num_samples, "num_samples")
        problem = self._run.problem
        data = predict_inputs(problem.model, problem.data, data)  # one UserError per problem
        observed = observation_keys(problem.model, problem.data)
        inputs = predictive_inputs(problem.data, data, observed)
        with model_errors("predict"):
            with torch.no_grad(), poutine.block():
                tr = poutine.trace(problem.model).get_trace(**inputs)
            sites = [
                n
                for n, s in tr.nodes.items()
                if s["type"] == "sample" and type(s["fn"]).__name__ != "_Subsample"
            ]
            return predictive(problem.model, self._pick(num_samples), inputs, sites)

    # -- saving

    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write a NUTS run folder (``config.json``, ``draws.npz``, ``summary.json``,
        ``metrics.jsonl``; the data as ``data.npz`` when given from Python)."""
        out = Path(run_dir)
        if self._run.out is not None and out.resolve() == Path(self._run.out).resolve():
            return out
        prepare_out(out, resume=False, overwrite=overwrite, make=False)
        workflow = self._run.workflow
        record, arrays = folder_record(workflow)
        args = record["args"] = dict(record["args"])
        if not isinstance(args.get("guide"), str):
            args["guide"] = None  # NUTS used none
        with claimed(out, resume=False, overwrite=overwrite):  # made, locked, emptied
            save_draws(out / DRAWS, self.result.draws)
            write_record(out, record, arrays)
            write_json(out / SUMMARY, self._run.summary)
            write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in self.history))
        return out

    def to_arviz(self, num_samples: int | None = None):
        """ArviZ ``InferenceData`` that keeps the chains (``chains x samples`` draws):
        ``posterior`` (every continuous latent and ``pyro.deterministic`` site),
        ``log_likelihood``, ``posterior_predictive``, ``observed_data``
        (:mod:`bayesdl.fits.arviz_data`) and, for a fit of this session, ``sample_stats`` per
        draw: ``diverging``, ``acceptance_rate``, ``lp``, ``step_size``."""
        del num_samples
        return inference_data(
            self.model, self.data, self._with_deterministic(), sample_stats=self.result.stats
        )

    def __repr__(self) -> str:
        s = self._run.summary
        head = (
            f"Posterior of {s.get('model')} (NUTS, {self.result.num_chains} chain(s) x "
            f"{self.result.num_samples} draws, {s.get('divergences', 0)} divergences)"
        )
        cols = (*STAT_COLUMNS, "r_hat", "n_eff")
        return summary_table(head, self.summary(), cols, width=9)
