"""Fits: run folders and what is read back from them. A run is fitted, reopened, evaluated and
asked for predictions by its inference method, chosen once (:mod:`.methods`: VI in :mod:`.svi`,
NUTS in :mod:`.nuts`), through :mod:`.run`; what is read back is a :class:`.posterior.Posterior`
(:mod:`.guide_posterior` for VI, :mod:`.draws` for NUTS). The folder itself: :mod:`.records`
(reading), :mod:`.folder` (writing, the lock, --resume), :mod:`.recording` (config.json)."""
