"""Minibatches: the engine chooses the indices of the model's ``pyro.plate("data", N)``.

A model written the Pyro way,

    with pyro.plate("data", len(x)) as idx:
        pyro.sample("y", Categorical(logits=f(x[idx])), obs=y[idx])

gets ``idx`` from :class:`DataSubsample` when the engine trains on minibatches, so the
likelihood is scaled by ``N / B`` and global latents are not (Pyro's plate does the scaling).
Indices come from a fresh permutation each epoch, drawn on the data's device.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

from bayesdl.inference.errors import UserError


class DataSubsample(Messenger):
    """Supply the current minibatch indices to every plate named ``name``."""

    def __init__(self, name: str = "data"):
        super().__init__()
        self.name = name
        self.indices: torch.Tensor | None = None

    def _pyro_sample(self, msg):
        if msg["name"] == self.name and type(msg["fn"]).__name__ == "_Subsample":
            if self.indices is not None and not msg["done"]:
                msg["value"] = self.indices
                msg["done"] = True


class EpochBatcher:
    """Yield index tensors of size ``batch_size`` that cover ``0..size-1`` once per epoch.

    ``rank``/``world`` split every global batch between data-parallel processes.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
    ):
        self.size = size
        self.batch_size = batch_size
        self.device = device
        self.rank, self.world = rank, world
        self.batches_per_epoch = max(1, size // batch_size)  # drop the ragged last batch
        self._perm: torch.Tensor | None = None
        self._pos = self.batches_per_epoch

    def state_dict(self) -> dict:
        """Position in the current epoch (the permutation itself is saved too)."""
        return {"perm": self._perm, "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        """Continue the epoch a checkpoint was taken in (a permutation of this data's size)."""
        perm = state["perm"]
        if perm is not None and not (
            perm.dtype == torch.int64
            and perm.shape == (self.size,)
            and torch.equal(perm.sort().values, torch.arange(self.size))
        ):
            raise UserError(
                f"the checkpoint's minibatch order is not a permutation of the {self.size} "
                "data points: was it made with other data?"
            )
        self._perm = None if perm is None else perm.to(self.device)
        self._pos = state["pos"]

    def next(self) -> torch.Tensor:
        """The indices of the next minibatch (this process's share of it)."""
        if self._pos >= self.batches_per_epoch:
            self._perm = torch.randperm(self.size, device=self.device)
            self._pos = 0
        start = self._pos * self.batch_size
        self._pos += 1
        batch = self._perm[start : start + self.batch_size]
        if self.world > 1:
            batch = batch.tensor_split(self.world)[self.rank]
        return batch
