"""The tour's report: one self-contained HTML page, figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


#: a figure this many pixels wide or more (at 120 dpi: 6 inches) is wide: it gets a row of
#: its own at the page's full width, where its labels are as large as a narrow figure's
WIDE_PX = 720
#: the smallest share of its own size a wide figure is shown at (its 7-point legends stay
#: about 8 px high); on a narrower screen it scrolls sideways inside its own box, the page not
LEGIBLE = 0.7


def png_width(raw: bytes) -> int:
    """The width in pixels a PNG's header states (0 when ``raw`` is not a PNG)."""
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or len(raw) < 24:
        return 0
    return int.from_bytes(raw[16:20], "big")


def _img(path: Path) -> str:
    """A figure the tour just wrote, embedded (a regular file, never through a link); a wide
    one (:data:`WIDE_PX`) in a ``div class=wide`` (a row of its own)."""
    from bayesdl.inference import files

    raw = files.read_bytes(path, "figure", files.FIGURE_LIMIT, follow=False)
    data = base64.b64encode(raw).decode()
    width = png_width(raw)
    img = f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"'
    if width < WIDE_PX:
        return img + ">"
    return f"<div class=wide>{img} style='min-width:{round(LEGIBLE * width)}px'></div>"


def figures(paths: list[Path]) -> str:
    """The figures of a section: narrow ones side by side, wide ones a row each."""
    return "<div class=figs>" + "".join(_img(Path(p)) for p in paths if Path(p).exists()) + "</div>"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """An HTML table of any number of columns (numbers to 4 significant digits)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path) -> str:
    """A PNG embedded in the page (nothing if the file is missing)."""
    path = Path(path)
    return _img(path) if path.exists() else ""


#: what a reference value is, by the ``kind`` of a comparison row: the true answer (a closed
#: form, or NUTS) has its own column; an ideal, a bound, a published figure or a baseline is
#: shown in the other column with its kind
TRUE_KINDS = ("exact", "nuts")


def comparison_row(row: tuple) -> dict[str, Any]:
    """A row of a workflow's ``comparison``: ``(quantity, reference, fitted)``, optionally
    followed by its ``kind`` (``exact``, ``nuts``, ``ideal``, ``bound``, ``paper``,
    ``baseline``, ``target``; default ``reference``) and the ``(lo, hi)`` range the fitted
    value is accepted in (none: shown, not judged)."""
    quantity, reference, fitted = row[:3]
    kind = row[3] if len(row) > 3 else "reference"
    accepted = row[4] if len(row) > 4 else None
    ok = None
    if accepted is not None and isinstance(fitted, int | float):
        ok = bool(accepted[0] <= fitted <= accepted[1])
    return {"quantity": quantity, "reference": reference, "fitted": fitted, "kind": kind,
            "accepted": accepted, "ok": ok}  # fmt: skip


def _range(accepted: tuple[float, float] | None) -> str:
    if accepted is None:
        return "&ndash;"
    lo, hi = (_fmt(float(v)) if abs(v) != float("inf") else ("-" if v < 0 else "") + "inf"
              for v in accepted)  # fmt: skip
    return f"[{lo}, {hi}]"


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """Quantity, the true answer (exact or NUTS), the other references labelled with their kind
    (ideal, bound, paper, baseline), the fitted value, the accepted range and its verdict."""
    head = ("<tr><th>quantity</th><th>exact / NUTS reference</th>"
            "<th>ideal, bound, paper or baseline</th><th>fitted</th><th>accepted</th>"
            "<th>within?</th></tr>")  # fmt: skip
    body = []
    for r in rows:
        true = r["kind"] in TRUE_KINDS
        ref = _fmt(r["reference"])
        other = "&ndash;" if true or r["reference"] is None else f"{ref} ({_fmt(r['kind'])})"
        ok = {None: "&ndash;", True: "yes", False: "<b>NO</b>"}[r["ok"]]
        body.append(
            f"<tr><td>{_fmt(r['quantity'])}</td><td>{ref if true else '&ndash;'}</td>"
            f"<td>{other}</td><td>{_fmt(r['fitted'])}</td><td>{_range(r['accepted'])}</td>"
            f"<td>{ok}</td></tr>"
        )
    return f"<div class=scroll><table>{head}{''.join(body)}</table></div>"


def _run_meta(run: dict[str, Any]) -> str:
    from bayesdl.fits.checks import verdict_line

    s = run["summary"]
    return (
        f"<h3>{html.escape(run['label'])}</h3><p class=meta>"
        f"guide <b>{_fmt(s.get('guide'))}</b>, "
        f"estimator <b>{_fmt(s.get('estimator'))}</b>, {s.get('steps')} steps, "
        f"final ELBO {_fmt(s.get('final_elbo'))}, "
        f"{s.get('wall_seconds')} s on {s.get('device')}; checks: "
        f"<b>{html.escape(verdict_line(s))}</b>; "
        f"command: <code>{html.escape(run['command'])}</code></p>"
    )


def section(title: str, description: str, runs: list[dict[str, Any]]) -> str:
    """One model's section: per run, its reference-versus-fitted table, figures and summary."""
    parts = [f"<section><h2>{html.escape(title)}</h2><p>{html.escape(description)}</p>"]
    for run in runs:
        s, folder = run["summary"], Path(run["dir"])
        parts.append(_run_meta(run))
        rows = [comparison_row(r) for r in run["rows"]]
        if rows:
            parts.append(comparison_table(rows))
        figs = [folder / name for name in s.get("figures", []) if (folder / name).exists()]
        parts.append(figures(figs))
        parts.append(
            "<details><summary>summary.json</summary><pre>"
            + html.escape(json.dumps(s, indent=1, default=str)[:20000])
            + "</pre></details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def verdict_counts(sections: list[str]) -> str:
    """How many sections passed, failed, or compared nothing (their verdict lines' classes)."""
    counts = {k: sum(f"class='verdict {k}'" in s for s in sections)
              for k in ("pass", "fail", "incomplete")}  # fmt: skip
    return (
        f"Verdicts: {counts['pass']} of {len(sections)} sections pass, {counts['fail']} fail, "
        f"{counts['incomplete']} compare nothing exact (each section ends in its verdict)."
    )


def page(sections: list[str], header: str) -> str:
    """The whole report."""
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "color:#222;overflow-wrap:break-word}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        # a table wider than the page scrolls inside its own box, never the page
        ".scroll,section>table{display:block;max-width:100%;overflow-x:auto}"
        # narrow figures side by side at their own size (120 dpi), shrunk only to the page's
        # width; a wide one takes a row of its own, at the page's full width
        ".figs{display:flex;flex-wrap:wrap;align-items:flex-start;gap:.3em}"
        ".figs img{max-width:100%;height:auto}.figs .wide{flex:0 0 100%}"
        ".figs .wide{overflow-x:auto}.figs .wide img{display:block}"
        "section{border-top:2px solid #ddd;margin-top:2em}.meta{color:#555;font-size:.9em}"
        "code{overflow-wrap:anywhere}"
        "pre{font-size:.75em;background:#f6f6f6;padding:.5em;overflow:auto;max-width:100%}"
        ".warnings{background:#fff4e5;border-left:4px solid #e69500;padding:.3em .8em;"
        "margin:.8em 0}.warnings ul{margin:.3em 0;padding-left:1.2em}"
        ".verdict{padding:.4em .8em;border-left:4px solid #888;background:#f3f3f3}"
        ".verdict.pass{border-color:#2a8a2a;background:#eef8ee}"
        ".verdict.fail{border-color:#c0392b;background:#fdeeee}"
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>bayesdl tour</title>"
        f"<style>{style}</style></head><body><h1>bayesdl tour</h1><p>{header}</p>"
        f"<p><b>{verdict_counts(sections)}</b></p>" + "\n".join(sections) + "</body></html>\n"
    )
