"""What the tour's lecture-claim sections share (:mod:`bayesdl.reports.tour_lecture`): the
:class:`Context` one section fills and the next reads, quiet fits through the public API, the
run folder's summary, the simulated coin, and the HTML of a section."""

from __future__ import annotations

import html
import time
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import bayesdl
from bayesdl.inference.convergence import ConvergenceWarning
from bayesdl.reports import page as report

PI_TRUE = 0.3  # the simulated coin's P(heads)


@dataclass
class Context:
    """What the sections share: ``quick`` (tiny settings, for tests), ``overwrite``, the digits
    BNNs one section fits and the next reuses, and ``record``: each section's key numbers."""

    quick: bool = False
    overwrite: bool = False
    fits: dict[int, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


#: where :func:`quiet_fit` notes ``(model, converged)`` of each fit, while a section is built
#: (:func:`bayesdl.reports.lecture_verdicts.judged` sets it): its verdict says how many converged
FITS: ContextVar[list | None] = ContextVar("bayesdl_lecture_fits", default=None)


def quiet_fit(model: Any, data: Any = None, **options: Any):
    """:func:`bayesdl.fit`, quietly: these short fits are judged by their numbers, not flagged
    one by one (their convergence is counted in the section's verdict, :data:`FITS`)."""
    options.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        post = bayesdl.fit(model, data, **options)
    seen = FITS.get()
    if seen is not None:
        name = model if isinstance(model, str) else "bnn"
        seen.append((f"{name} #{len(seen) + 1}", post.converged))
    return post


def summary_of(post) -> dict[str, Any]:
    """The run folder's ``summary.json`` (the model's exact-versus-fitted numbers)."""
    from bayesdl.fits.records import read_summary

    return read_summary(Path(post.run_dir))


def _quote(text: str) -> str:
    return f"<blockquote>&ldquo;{html.escape(text)}&rdquo; (lecture)</blockquote>"


def section(title: str, quote: str, body: str, figure: Path, tables: list[str], t0: float) -> str:
    """A section: title, the lecture's words, the text, the figure, the tables, the time."""
    return "\n".join(
        [
            f"<section><h2>{html.escape(title)}</h2>",
            _quote(quote),
            f"<p>{body}</p>",
            f"<div class=figs>{report.image(figure)}</div>",
            *tables,
            f"<p class=meta>{time.perf_counter() - t0:.1f} s; figure "
            f"<code>{html.escape(str(figure))}</code></p></section>",
        ]
    )


def simulated_flips(n: int, seed: int) -> np.ndarray:
    """``n`` flips of the coin with ``P(heads) = PI_TRUE`` (0/1)."""
    return (np.random.default_rng(seed).random(n) < PI_TRUE).astype(int)


def csv(x: np.ndarray) -> str:
    """Flips as the ``flips=`` option takes them (``1,0,1``)."""
    return ",".join(str(int(v)) for v in x)
