"""Variational families q(z | lambda), in the file named like their model's."""
