"""State an ELBO keeps between steps in the parameter store, carried through a compiled step.

Pyro's score-function estimator keeps a decaying average of each site's downstream cost,
``b_t = beta b_{t-1} + (1 - beta) c_t`` (``TraceGraph_ELBO`` with
``use_decaying_avg_baseline``), as a parameter-store entry it *replaces* at every step
(``param_store[name] = b_t``); no optimizer trains it. A graph traced once would read the
``b`` its capture saw at every replay. :func:`written_entries` finds the entries a loss
replaces (a dry run, undone); :class:`StoreState` makes them inputs and outputs of the graph
and copies the new values into the very tensors the store holds, as eager steps would leave
them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyro
import torch
from pyro import poutine
from pyro.ops.provenance import detach_provenance


def written_entries(loss_fn: Callable[..., torch.Tensor], data: dict) -> dict[str, torch.Tensor]:
    """The parameter-store entries ``loss_fn(**data)`` replaces (not trains), by name, with
    the unconstrained value each held before; the store is left as it was (entries the loss
    created are kept at the value they were created with)."""
    store = pyro.get_param_store()
    before = dict(store._params)
    with torch.enable_grad(), pyro.validation_enabled(False), poutine.trace(param_only=True) as tr:
        loss_fn(**data)
    written = {}
    for name, site in tr.trace.nodes.items():
        if site["type"] != "param" or name not in store._params:
            continue
        old = before.get(name)
        if old is None:  # created by the loss: the value it read then, unconstrained
            old = _unconstrained(name, site["value"])
        if store._params[name] is not old:
            # a plain tensor: Pyro's score-function ELBO stores a ProvenanceTensor, whose ops
            # run on an inner tensor a trace would not know as the graph's input
            written[name] = store._params[name] = detach_provenance(old)
            store._param_to_name[written[name]] = name
    return written


def _unconstrained(name: str, value: torch.Tensor) -> torch.Tensor:
    constraint = pyro.get_param_store()._constraints.get(name, torch.distributions.constraints.real)
    with torch.no_grad():
        return torch.distributions.transform_to(constraint).inv(value).contiguous()


class StoreState:
    """The store entries a loss replaces, as graph inputs and outputs.

    :param entries: name -> the tensor the store holds (:func:`written_entries`); these very
        tensors receive the new values (:meth:`targets`), so reports, checkpoints and an
        eager fallback read what eager steps would have written.
    """

    def __init__(self, entries: dict[str, torch.Tensor]):
        self.names = list(entries)
        self.tensors = [entries[n] for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    @contextmanager
    def bound(self, values: list[torch.Tensor], out: list[torch.Tensor]) -> Iterator[None]:
        """While active, the store holds ``values`` under the names; at exit ``out`` gets what
        the loss wrote there (detached) and the store holds :attr:`tensors` again."""
        store = pyro.get_param_store()
        for name, value in zip(self.names, values, strict=True):
            store._params[name] = value
        try:
            yield
            out[:] = [detach_provenance(store._params[n]).detach() for n in self.names]
        finally:
            self.restore()

    def restore(self) -> None:
        """Put :attr:`tensors` back in the store (after an eager loss replaced them)."""
        store = pyro.get_param_store()
        for name, t in zip(self.names, self.tensors, strict=True):
            store._params[name] = t
