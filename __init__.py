"""bayesdl: Bayesian deep learning with Pyro."""

__version__ = "0.1.0"
