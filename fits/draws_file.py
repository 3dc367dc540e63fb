"""``draws.npz``, a NUTS run's draws: one plain numpy array per site, ``[chains, samples,
*shape]``, written atomically, read without unpickling and checked against the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine

from bayesdl.fits.records import DRAWS
from bayesdl.inference import files
from bayesdl.inference.errors import UserError
from bayesdl.workflows.base import Problem

__all__ = ["DRAWS", "check_sites", "load_draws", "save_draws"]


def save_draws(path: Path, draws: dict[str, torch.Tensor]) -> None:
    """``draws.npz``: one array per site, ``[chains, samples, *shape]``, written atomically
    (never through a link)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in draws.items()}
    files.write_with(Path(path), lambda f: np.savez(f, **arrays))


def load_draws(path: Path) -> dict[str, torch.Tensor]:
    """The draws of ``draws.npz`` (never unpickled; a regular file, not a link, of ``.npy``
    members stored as ``np.savez`` writes them), checked: finite numeric arrays of one shape
    ``[chains, samples, ...]`` in front, at least one."""
    arrays = files.load_npz(path, "the draws", follow=False, stored=True)
    if not arrays:
        raise UserError(f"the draws {path} hold no arrays")
    lead = None
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf" or a.ndim < 2 or (lead is not None and a.shape[:2] != lead):
            raise UserError(
                f"{path}: {k!r} is not a numeric array of draws [chains, samples, ...] like "
                "the others"
            )
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise UserError(f"{path}: the draws of {k!r} hold NaN or infinite values")
        lead = a.shape[:2]
    return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}


def check_sites(problem: Problem, draws: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse draws that are not of the model's continuous latent sites, all of them, each of
    its site's shape (a model run with other draws would sample the rest from the prior)."""
    with torch.no_grad(), pyro.get_param_store().scope(), poutine.block():
        tr = poutine.trace(problem.model).get_trace(**problem.data)
    sites = {
        n: s
        for n, s in tr.nodes.items()
        if s["type"] == "sample"
        and not s["is_observed"]
        and type(s["fn"]).__name__ != "_Subsample"
        and not s["infer"].get("_deterministic")
    }
    unknown = sorted(set(draws) - set(sites))
    missing = sorted(n for n, s in sites.items() if not s["fn"].support.is_discrete)
    missing = [n for n in missing if n not in draws]
    wrong = [n for n in draws if n in sites and draws[n].shape[2:] != sites[n]["value"].shape]
    if unknown or missing or wrong:
        why = "; ".join(
            f"{what} {', '.join(map(repr, names))}"
            for what, names in (("no site", unknown), ("no draws of", missing), ("shape", wrong))
            if names
        )
        raise UserError(f"{path} does not hold draws of this model's latent sites ({why})")
