"""Fits: run folders and what is loaded from them: a run's records (config.json, summary.json,
metrics.jsonl), fitting a run by SVI (:mod:`.run`) or NUTS (:mod:`.nuts`), the checks of its
result (:mod:`.checks`), and the posteriors read back (:mod:`.posterior`, :mod:`.draws`)."""
