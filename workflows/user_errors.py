"""Errors of the user's model as one line: the exception, the user's line, the site it arose at.

:class:`_LastSite` follows the sample sites a model reaches; :func:`_describe` turns an
exception from the user's code into ``ValueError: ... (line 12, at site 'y')``.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

from pyro.poutine.messenger import Messenger


class _LastSite(Messenger):
    """Follows the sample sites the model reaches: ``name``, the last one entered, and whether
    it was completed; :meth:`where` says where an error arose from that."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None  # the last site entered
        self.done = False  # whether its statement completed (sampled, observed, recorded)

    def _pyro_sample(self, msg):
        if type(msg["fn"]).__name__ != "_Subsample":
            self.name, self.done = msg["name"], False

    def _pyro_post_sample(self, msg):
        if type(msg["fn"]).__name__ != "_Subsample" and msg["name"] == self.name:
            self.done = True

    def where(self) -> str | None:
        """``at site 'y'`` for an error inside the site's ``pyro.sample``, ``after site 'w'``
        for one in the code that follows it (e.g. building the next distribution)."""
        if self.name is None:
            return None
        return f"{'after' if self.done else 'at'} site {self.name!r}"


#: a message that names the site itself: Pyro's "at site \"y\"", "site y dim -1", ...
_NAMES_A_SITE = re.compile(r"\bsites?\s+['\"]?[^\s'\"]+")
_MESSAGE_LINES, _MESSAGE_CHARS = 8, 600


def _message(e: BaseException) -> str:
    """The exception's message on one line: its lines joined (Pyro's shape hints included:
    "Expected [], actual [8]; Try one of the following fixes: ..."), up to a table of trace
    shapes, within :data:`_MESSAGE_CHARS`."""
    text = ""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, line in enumerate(lines[:_MESSAGE_LINES]):
        if line.startswith("Trace Shapes:"):  # Pyro's per-site shape table: too long to quote
            break
        line = line[2:] if line.startswith("- ") else line
        text += line if i == 0 else (" " if text.endswith(":") else "; ") + line
    if len(text) > _MESSAGE_CHARS:
        text = text[: _MESSAGE_CHARS - 3].rstrip() + "..."
    return text


def _describe(
    e: BaseException, user_file: Path | None = None, site: _LastSite | str | None = None
) -> str:
    """One line: exception type, the message (its hints included), the user's line, and where
    in the model it arose (``site``: a :class:`_LastSite` that followed the model, or a name)
    unless the message names a site itself."""
    text = _message(e)
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    where = []
    if user_file is not None:
        if isinstance(e, SyntaxError) and e.lineno:
            where.append(f"line {e.lineno}")
        else:
            frames = [
                f
                for f in traceback.extract_tb(e.__traceback__)
                if Path(f.filename).resolve() == user_file
            ]
            if frames:
                where.append(f"line {frames[-1].lineno}")
    place = site.where() if isinstance(site, _LastSite) else site and f"at or after site {site!r}"
    if place and not _NAMES_A_SITE.search(text):
        where.append(place)
    return text + (f" ({', '.join(where)})" if where else "")
