"""Paths in options made absolute, so that a run folder is reopened from anywhere.

The converters of ``--data``, ``--plugin`` (:func:`absolute_path`) and ``--net``
(:func:`absolute_spec`); they sit below :mod:`bayesdl.workflows.options`, which names them.
"""

from __future__ import annotations

from bayesdl.workflows.trust import resolved


def absolute_path(s: str) -> str:
    """A path made absolute, links resolved (a link loop is left for the reader to report)."""
    return str(resolved(s))


def absolute_spec(s: str) -> str:
    """``FILE.py:function`` with its file made absolute; anything else as it is (the reader of
    the spec says what is wrong with it)."""
    path, sep, name = s.rpartition(":")
    if not sep or not path.endswith(".py"):
        return s
    return f"{absolute_path(path)}:{name}"
