"""``report.md`` and one self-contained ``report.html`` (inline CSS, figures embedded as base64 PNG,
no script, no network) from a comparison's results or a single run."""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instacli import __version__
from instacli.io import atomic_file
from instacli.report.figures import Figures, make_figures
from instacli.report.table import COLUMNS, failures, fmt_seconds, table_rows
from instacli.results import Results, load_results


def _meta_lines(results: Results) -> list[tuple[str, str]]:
    budget = results.get("budget") or {}
    parts = []
    if budget.get("epochs") is not None:
        parts.append(f"{budget['epochs']} epoch" + ("s" if budget["epochs"] != 1 else ""))
    if budget.get("time_budget") is not None:
        parts.append(f"time budget {fmt_seconds(budget['time_budget'])}")
    per_model = []
    for name, settings in (results.get("overrides") or {}).items():
        bits = []
        if settings.get("epochs") is not None:
            bits.append(f"{settings['epochs']} epoch" + ("s" if settings["epochs"] != 1 else ""))
        if settings.get("time_budget") is not None:
            bits.append(fmt_seconds(float(settings["time_budget"])))
        if settings.get("freeze_encoder"):
            bits.append("frozen encoder")
        if bits:
            per_model.append(f"{name}: {' / '.join(bits)}")
    if per_model:
        parts.append(("per model — " if parts else "") + "; ".join(per_model))
    lines = [
        ("data", str(results.get("data", "?"))),
        ("fingerprint", str(results.get("data_fingerprint") or "–")),
        ("split", f"{results.get('split', 'test')} ({results.get('n_test', '?')} photos; trained on {results.get('n_train', '?')})"),
        ("categories", ", ".join(results.get("class_names") or []) or "–"),
        ("engagement", str(results.get("engagement") or "–")),
        ("budget", ", ".join(parts) or "per-run settings (see below)"),
        ("seeds", ", ".join(map(str, results.get("seeds") or [])) or "–"),
        ("instacli", f"{results.get('instacli_version', '?')} (report by {__version__})"),
        ("created", str(results.get("created", "?"))),
    ]
    return lines


NOTES = [
    "Best value of each column in **bold** (among working models and baselines that do not read the true label).",
    "± is the standard deviation over seeds.",
    "Baselines: *majority class* always predicts the most frequent training category and the training median likes; "
    "*per-class median likes* reads the true category (an oracle for likes, with no classifier); "
    "*numbers only* regress log1p(likes) on log1p(comments, shares, followers) without the photo; "
    "*likes generator's own guess* (synthetic realistic engagement only) is the generator's best prediction, the floor of log-likes MAE.",
    "Train time is wall-clock time of training (decoding, frozen-encoder embedding and validation included); "
    "images/s = training images processed per second of it.",
]


def _fig_link(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def render_markdown(results: Results, figures: Figures, out_dir: Path) -> str:
    title = results.get("title") or "Model comparison"
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in _meta_lines(results)]
    lines += ["", "## Results on the test split", ""]
    headers = ["model", *(c.title for c in COLUMNS)]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|")
    for row in table_rows(results):
        name = row.name.replace("|", "\\|") + (f" *({row.note})*" if row.note else "")
        if row.kind == "baseline":
            name = f"baseline: {name}"
        cells = [f"**{c.text}**" if c.best else c.text for c in row.cells]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    lines.append("")
    lines += [f"- {n}" for n in NOTES]
    fails = failures(results)
    if fails:
        lines += ["", "## Failed", ""]
        lines += [f"- **{name}**: {message}" for name, message in fails]
    for fig in (figures.accuracy_vs_time, figures.curves, figures.confusions):
        if fig:
            lines += ["", f"## {fig.title}", "", f"![{fig.title}]({_fig_link(fig.path, out_dir)})", "", f"*{fig.caption}*"]
    if figures.likes:
        lines += ["", "## Predicted versus actual likes (log axes)", ""]
        for fig in figures.likes:
            caption = fig.title + (f" ({fig.caption})" if fig.caption else "")
            lines += [f"![{caption}]({_fig_link(fig.path, out_dir)})", f"*{caption}*", ""]
    settings = _run_settings(results)
    if settings:
        lines += ["", "## Settings of each run", ""]
        for name, value in settings:
            lines += [f"<details><summary>{name}</summary>", "", "```json", json.dumps(value, indent=2), "```", "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def _run_settings(results: Results) -> list[tuple[str, Any]]:
    out = []
    for e in results.get("runs", []):
        if e.get("settings"):
            keep = {k: v for k, v in e["settings"].items() if v not in (None, {}, [])}
            if e.get("encoder_options"):
                keep["encoder_options (resolved)"] = e["encoder_options"]
            out.append((e["name"], keep))
    return out


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --head:#f6f8fa; --best:#dafbe1; --bestfg:#116329; --bad:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff; font:15px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif; }
main { max-width:1240px; margin:0 auto; padding:28px 32px 60px; }
h1 { font-size:26px; margin:0 0 6px; } h2 { font-size:19px; margin:34px 0 10px; padding-bottom:4px; border-bottom:1px solid var(--line); }
dl.meta { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; margin:10px 0 0; font-size:13px; color:var(--muted); }
dl.meta dt { font-weight:600; } dl.meta dd { margin:0; overflow-wrap:anywhere; }
.tablewrap { overflow-x:auto; }
table.results { border-collapse:collapse; width:100%; font-size:14px; font-variant-numeric:tabular-nums; }
table.results th, table.results td { padding:6px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
table.results th { background:var(--head); text-align:right; font-weight:600; border-bottom:2px solid var(--line); }
table.results th:first-child, table.results td:first-child { text-align:left; white-space:normal; min-width:220px; }
table.results td { text-align:right; }
table.results td.best { background:var(--best); color:var(--bestfg); font-weight:700; }
table.results td.missing { color:#9aa4ae; }
table.results tr.baseline td:first-child { color:var(--muted); }
table.results tr.section td { background:#fff; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; padding-top:12px; text-align:left; }
table.results tr.failed td { color:#9aa4ae; }
.tag { display:inline-block; font-size:11px; padding:0 6px; border-radius:9px; margin-left:6px; background:#eef1f4; color:var(--muted); }
.tag.failed { background:#ffebe9; color:var(--bad); }
ul.notes { font-size:13px; color:var(--muted); padding-left:18px; }
ul.failures li { margin:4px 0; } ul.failures code { color:var(--bad); white-space:pre-wrap; }
figure { margin:12px 0; } figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figcaption { font-size:13px; color:var(--muted); margin-top:4px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(280px, 1fr)); gap:14px; }
.gallery figure { margin:0; }
details { margin:6px 0; border:1px solid var(--line); border-radius:6px; padding:6px 10px; }
details summary { cursor:pointer; font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:13px; }
pre { font-size:12px; background:var(--head); padding:10px; border-radius:6px; overflow-x:auto; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(results: Results, figures: Figures) -> str:
    e = html.escape
    title = results.get("title") or "Model comparison"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)} — instacli</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>", '<dl class="meta">',
        *(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _meta_lines(results)), "</dl>",
        "<h2>Results on the test split</h2>", '<div class="tablewrap"><table class="results"><thead><tr><th>model</th>',
        *(f'<th title="{e(c.help)}">{e(c.title)}</th>' for c in COLUMNS), "</tr></thead><tbody>",
    ]
    rows = table_rows(results)
    section = None
    for row in rows:
        kind = "baselines" if row.kind == "baseline" else "models"
        if kind != section and any(r.kind == "baseline" for r in rows) and any(r.kind != "baseline" for r in rows):
            parts.append(f'<tr class="section"><td colspan="{len(COLUMNS) + 1}">{kind}</td></tr>')
        section = kind
        classes = " ".join(c for c in ("baseline" if row.kind == "baseline" else "", "failed" if row.failed else "") if c)
        tag = f' <span class="tag{" failed" if row.failed else ""}">{e(row.note)}</span>' if row.note else ""
        cells = "".join(
            f'<td class="{"best" if c.best else ("missing" if c.missing else "")}">{e(c.text)}</td>' for c in row.cells
        )
        parts.append(f'<tr class="{classes}"><td>{e(row.name)}{tag}</td>{cells}</tr>')
    parts.append("</tbody></table></div>")
    parts.append('<ul class="notes">' + "".join(f"<li>{_md_inline(n)}</li>" for n in NOTES) + "</ul>")
    fails = failures(results)
    if fails:
        parts.append("<h2>Failed</h2><ul class=\"failures\">")
        parts += [f"<li><strong>{e(name)}</strong>: <code>{e(message)}</code></li>" for name, message in fails]
        parts.append("</ul>")
    for fig in (figures.accuracy_vs_time, figures.curves, figures.confusions):
        if fig:
            parts.append(f"<h2>{e(fig.title)}</h2><figure>{_img(fig.path, fig.title)}<figcaption>{e(fig.caption)}</figcaption></figure>")
    if figures.likes:
        parts.append('<h2>Predicted versus actual likes (log axes)</h2><div class="gallery">')
        for fig in figures.likes:
            caption = fig.title + (f" ({fig.caption})" if fig.caption else "")
            parts.append(f"<figure>{_img(fig.path, caption)}<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    settings = _run_settings(results)
    if settings:
        parts.append("<h2>Settings of each run</h2>")
        parts += [f"<details><summary>{e(name)}</summary><pre>{e(json.dumps(value, indent=2))}</pre></details>" for name, value in settings]
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _md_inline(text: str) -> str:
    """The tiny Markdown of :data:`NOTES` (**bold**, *italic*) as HTML."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


@dataclass
class ReportFiles:
    markdown: Path
    html: Path


def render_report(results: Results, out_dir: Path, root: Path | None = None) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and ``figures/`` into ``out_dir``; relative paths in
    ``results`` (runs, their figures) are relative to ``root`` (default ``out_dir``)."""
    out_dir = Path(out_dir)
    root = Path(root) if root is not None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = make_figures(results, out_dir, root)
    with atomic_file(out_dir / "report.md") as handle:
        handle.write(render_markdown(results, figures, out_dir))
    with atomic_file(out_dir / "report.html") as handle:
        handle.write(render_html(results, figures))
    return ReportFiles(out_dir / "report.md", out_dir / "report.html")


def rerender(path: Path | str, out: Path | str | None = None) -> tuple[Results, ReportFiles]:
    """Re-render the report of a comparison or run folder from saved files, without any training."""
    results, root, default_out = load_results(path)
    return results, render_report(results, Path(out or default_out), root=root)
