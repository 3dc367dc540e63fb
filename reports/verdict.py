"""The verdict that ends each section of the tour, and the warnings its fits printed.

A verdict says three things, each read from numbers the section already has, never re-derived:

* **converged**: every fit's own verdict (``summary.json``'s ``converged``: the ELBO test of
  :mod:`bayesdl.inference.convergence` for VI, split R-hat for NUTS);
* **diagnostics**: the fits' checks (``summary.json``'s ``checks``: Pareto k-hat for VI,
  R-hat, ESS and divergences for NUTS), each with its own verdict;
* **agreement**: the section's numbers against its reference (a closed form, NUTS, or the bound
  the lecture's claim states), within the tolerance the section names.

A part is ``True``, ``False`` or ``None`` (not applicable, or not tested); the section fails
when any part is ``False``, passes when none is and the reference was compared.
:func:`collect_warnings` records every warning shown while a section is built, in the words
the console prints (``ConvergenceWarning: the fit has not converged: ...``), and still prints
it; :func:`finish` puts those words and the verdict at the end of the section's HTML.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: check verdicts (``summary.json``'s ``checks``) that mean the check failed
FAILED = ("fail", "bad", "shifted")


@dataclass(frozen=True)
class Verdict:
    """One section's verdict (see the module docstring)."""

    converged: bool | None
    fits: str
    diagnostics: tuple[str, ...] = ()
    diagnostics_ok: bool | None = None
    agrees: bool | None = None
    agreement: str = ""

    @property
    def status(self) -> str:
        """``fail`` when a part is False; ``pass`` when none is and the reference agreed;
        else ``incomplete`` (nothing compared)."""
        parts = (self.converged, self.diagnostics_ok, self.agrees)
        if False in parts:
            return "fail"
        return "pass" if self.agrees else "incomplete"

    def line(self) -> str:
        """The verdict in one line of text."""
        word = {"pass": "PASS", "fail": "FAIL", "incomplete": "INCOMPLETE"}[self.status]
        pieces = [f"fits: {self.fits}"]
        if self.diagnostics:
            pieces.append("diagnostics: " + ", ".join(self.diagnostics))
        if self.agreement:
            pieces.append("reference: " + self.agreement)
        return f"Verdict: {word}. " + "; ".join(pieces) + "."

    def html(self) -> str:
        """The line as the section's last paragraph (``class="verdict pass|fail|incomplete"``)."""
        return f"<p class='verdict {self.status}'>{html.escape(self.line())}</p>"


def no_fit(why: str) -> Verdict:
    """The verdict of a section that fits nothing."""
    return Verdict(None, f"none ({why})")


def fits_converged(fits: Sequence[tuple[str, bool | None]]) -> tuple[bool | None, str]:
    """``(all converged, "2 of 3 converged; NOT: a, b")`` from ``(name, converged)`` pairs
    (``None``: that fit's convergence was not tested)."""
    if not fits:
        return None, "none"
    bad = [name for name, ok in fits if ok is False]
    unknown = [name for name, ok in fits if ok is None]
    good = len(fits) - len(bad) - len(unknown)
    text = f"{good} of {len(fits)} converged"
    if bad:
        text += "; NOT converged: " + ", ".join(bad)
    if unknown:
        text += "; not tested: " + ", ".join(unknown)
    return (False if bad else None if unknown else True), text


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_diagnostics(
    summary: dict[str, Any], name: str = ""
) -> tuple[list[str], bool | None, list[str]]:
    """The checks of one fit (``summary.json``'s ``checks``, convergence apart) as short
    strings, whether they all passed (``None``: none was run), and the checks not run."""
    shown, verdicts, unchecked = [], [], []
    for check, c in (summary.get("checks") or {}).items():
        if check == "convergence":
            continue
        v = c.get("verdict")
        label = check.replace("_", "-").replace("ess", "ESS").replace("r-hat", "R-hat")
        if v == "not checked":
            unchecked.append(label)
            continue
        verdicts.append(v not in FAILED)
        shown.append(f"{name}{label} {_value(c.get('value'))} ({v})")
    return shown, (all(verdicts) if verdicts else None), unchecked


def runs_verdict(
    summaries: Sequence[tuple[str, dict[str, Any]]],
    agrees: bool | None = None,
    agreement: str = "",
) -> Verdict:
    """A section of fits: each ``(name, summary)`` read for convergence and checks (a check
    not run is counted, not listed per fit)."""
    converged, fits = fits_converged([(n, s.get("converged")) for n, s in summaries])
    shown, oks, unchecked = [], [], {}
    for name, s in summaries:
        d, ok, missing = summary_diagnostics(s, f"{name} " if len(summaries) > 1 else "")
        shown += d
        oks.append(ok)
        for label in missing:
            unchecked[label] = unchecked.get(label, 0) + 1
    shown += [f"{label} not checked ({n} of {len(summaries)} fits)" if len(summaries) > 1
              else f"{label} not checked" for label, n in unchecked.items()]  # fmt: skip
    diag_ok = False if False in oks else (True if True in oks else None)
    return Verdict(converged, fits, tuple(shown), diag_ok, agrees, agreement)


def within(
    checks: Iterable[tuple[str, float, float, float]], what: str = "within tolerance"
) -> tuple[bool | None, str]:
    """``(all inside, text)`` for ``(name, value, lo, hi)``: each value inside ``[lo, hi]``
    (a NaN is outside); the text names the ones outside and their bounds."""
    checks = list(checks)
    if not checks:
        return None, "nothing to compare"
    out = [c for c in checks if not (c[2] <= c[1] <= c[3])]  # NaN: outside
    if not out:
        return True, f"{len(checks)} of {len(checks)} {what}"
    shown = ", ".join(
        f"{n} {_value(float(v))} not in [{_b(lo)}, {_b(hi)}]" for n, v, lo, hi in out[:4]
    )
    more = f" and {len(out) - 4} more" if len(out) > 4 else ""
    return False, f"{len(checks) - len(out)} of {len(checks)} {what}; NOT: {shown}{more}"


def rows_agreement(runs: Sequence[tuple[str, list[tuple]]]) -> tuple[bool | None, str]:
    """Agreement of the comparison rows (:func:`bayesdl.reports.page.comparison_row`) of each
    ``(run name, rows)`` that state an accepted range; the others are shown, not judged."""
    from bayesdl.reports.page import comparison_row

    checks = []
    for name, rows in runs:
        for r in map(comparison_row, rows):
            if r["accepted"] is not None and isinstance(r["fitted"], int | float):
                label = f"{name}: {r['quantity']}" if len(runs) > 1 else str(r["quantity"])
                checks.append((label, float(r["fitted"]), *map(float, r["accepted"])))
    if not checks:
        return None, "no row with an accepted range (nothing exact to compare at these settings)"
    return within(checks, "rows within their accepted range")


def _b(x: float) -> str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:.3g}"


# ---------------------------------------------------------------------------- warnings


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Record every warning shown inside the block as ``"Category: message"`` (the console's
    words), in order, once each; the warning is still shown as before (printed, or recorded
    by an outer ``catch_warnings(record=True)``). Filters are untouched: what a filter hides
    is neither printed nor recorded."""
    caught: list[str] = []
    with warnings.catch_warnings():
        previous = warnings.showwarning

        def tee(message, category, filename, lineno, file=None, line=None):
            text = f"{category.__name__}: {message}"
            if text not in caught:
                caught.append(text)
            previous(message, category, filename, lineno, file, line)

        warnings.showwarning = tee
        yield caught


def warnings_html(caught: Sequence[str]) -> str:
    """The warnings a section's fits printed, as a list (empty string when none)."""
    if not caught:
        return ""
    items = "".join(f"<li><code>{html.escape(w)}</code></li>" for w in caught)
    head = "<b>Warnings printed by this section's fits</b>"
    return f"<div class=warnings>{head}<ul>{items}</ul></div>"


def shown(make: Callable[..., tuple[str, Verdict]], *args: Any, **kwargs: Any) -> str:
    """``make(*args, **kwargs) -> (html, verdict)`` called with its warnings collected; the
    section :func:`finish` ed."""
    with collect_warnings() as caught:
        section, v = make(*args, **kwargs)
    return finish(section, v, caught)


def finish(section: str, verdict: Verdict, caught: Sequence[str] = ()) -> str:
    """``section`` (HTML ending in ``</section>``) with the warnings and the verdict line as
    its last parts."""
    tail = warnings_html(caught) + verdict.html()
    head, sep, rest = section.rpartition("</section>")
    return f"{head}{tail}{sep}{rest}" if sep else section + tail
