"""What a fit produced: :class:`FitResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import torch


@dataclass
class FitResult:
    """What a fit produced.

    ``params`` is the fit's own parameter store (``{"params", "constraints"}``, Pyro's
    ``ParamStoreDict`` state): use the guide inside ``pyro.get_param_store().scope(params)``.
    """

    steps: int
    final_elbo: float
    wall_seconds: float
    device: str
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False
    params: dict = field(default_factory=lambda: {"params": {}, "constraints": {}})
    #: the ELBO test's verdict (:meth:`inference.convergence.StepPlan.verdict`)
    convergence: dict = field(default_factory=dict)
    #: whether the steps ran as a compiled graph (``--compile``), and what capture cost
    compiled: bool = False
    compile_seconds: float = 0.0
    #: steps per second of the loop after compilation (of the whole loop when eager)
    steps_per_second: float = float("nan")
    #: the torch threads the steps ran on (``--threads``, else chosen by the step's size:
    #: :func:`~bayesdl.inference.devices.auto_threads`)
    threads: int = 1

    def param(self, name: str) -> torch.Tensor:
        """The fitted value of ``pyro.param(name)`` (constrained), from this fit's store."""
        with pyro.get_param_store().scope(self.params):
            return pyro.param(name).detach()

    def param_values(self) -> dict[str, torch.Tensor]:
        """Every fitted ``pyro.param`` of this fit (constrained), by name."""
        with pyro.get_param_store().scope(self.params):
            store = pyro.get_param_store()
            return {name: store[name].detach() for name in list(store.keys())}
