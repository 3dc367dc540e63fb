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


def _img(path: Path) -> str:
    """A figure the tour just wrote, embedded (a regular file, never through a link)."""
    from bayesdl.inference import files

    raw = files.read_bytes(path, "figure", files.FIGURE_LIMIT, follow=False)
    data = base64.b64encode(raw).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """An HTML table of any number of columns (numbers to 4 significant digits)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path) -> str:
    """A PNG embedded in the page (nothing if the file is missing)."""
    path = Path(path)
    return _img(path) if path.exists() else ""


def section(title: str, description: str, runs: list[dict[str, Any]]) -> str:
    """One model's section: per run, its exact-versus-fitted table, figures and summary."""
    parts = [f"<section><h2>{html.escape(title)}</h2><p>{html.escape(description)}</p>"]
    for run in runs:
        s, rows, folder = run["summary"], run["rows"], Path(run["dir"])
        parts.append(
            f"<h3>{html.escape(run['label'])}</h3><p class=meta>"
            f"guide <b>{_fmt(s.get('guide'))}</b>, "
            f"estimator <b>{_fmt(s.get('estimator'))}</b>, {s.get('steps')} steps, "
            f"final ELBO {_fmt(s.get('final_elbo'))}, "
            f"{s.get('wall_seconds')} s on {s.get('device')}; "
            f"command: <code>{html.escape(run['command'])}</code></p>"
        )
        if rows:
            parts.append(
                "<table><tr><th>quantity</th><th>exact / reference</th><th>fitted</th></tr>"
            )
            parts += [
                f"<tr><td>{_fmt(q)}</td><td>{_fmt(e)}</td><td>{_fmt(f)}</td></tr>"
                for q, e, f in rows
            ]
            parts.append("</table>")
        figs = [folder / name for name in s.get("figures", []) if (folder / name).exists()]
        parts.append("<div class=figs>" + "".join(_img(p) for p in figs) + "</div>")
        parts.append(
            "<details><summary>summary.json</summary><pre>"
            + html.escape(json.dumps(s, indent=1, default=str)[:20000])
            + "</pre></details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def page(sections: list[str], header: str) -> str:
    """The whole report."""
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "color:#222}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        # every figure at its own size (120 dpi), side by side where they fit, shrunk only to
        # the page's width: a wide figure's labels stay as large as the small ones'
        ".figs{display:flex;flex-wrap:wrap;align-items:flex-start;gap:.3em}"
        ".figs img{max-width:100%;height:auto}"
        "section{border-top:2px solid #ddd;margin-top:2em}.meta{color:#555;font-size:.9em}"
        "pre{font-size:.75em;background:#f6f6f6;padding:.5em;overflow:auto}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>bayesdl tour</title>"
        f"<style>{style}</style></head><body><h1>bayesdl tour</h1><p>{header}</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
