"""Generative models p(x, z) of the lecture, one file each, as plain Pyro functions."""
