"""Data: reading user files (``io``) and the bundled and MNIST data sets (``bundled``).

Kept out of the engine: :mod:`bayesdl.inference` never reads a file of data.
"""
