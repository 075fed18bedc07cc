"""A results page to browse: static HTML, no JavaScript, no network.

:func:`write_page` writes ``<out>/index.html`` beside a suite's report: its leaderboards,
verdicts and figures (``leaderboard.md`` rendered), the per-seed values (collapsible), the
suite file's text and the command that made the report. :func:`write_index_page` writes
``results/index.html`` (``otransfer report --all``): a link to every suite's page and
``VERDICTS.md`` rendered.

The Markdown is the report's own, a small subset (headings, pipe tables, ``-`` lists,
paragraphs, images, links, code spans, bold), rendered by :func:`markdown_html`: the
``markdown`` package is not a dependency, and this subset needs none. Every piece of text that
comes from a file (row names, task names, the suite file) is HTML-escaped before any markup is
added, so a row named ``<script>`` shows as text; links keep relative paths and http(s) only.
"""

from __future__ import annotations

import html
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.training import safe_io

__all__ = ["markdown_html", "report_command", "suite_text", "write_index_page", "write_page"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.wide{overflow-x:auto}table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.2em .45em;white-space:nowrap}th{background:#f3f3f3}
td.r{text-align:right}img{max-width:100%;height:auto;border:1px solid #eee}
code{background:#f5f5f5;padding:0 .2em}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;
font-size:.8em}details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
.nav{font-size:.9em}
"""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _href(target: str, links: Mapping[str, str]) -> str | None:
    """``target`` (already escaped) if it is a relative path or an http(s) URL, else None
    (``javascript:`` and the like are dropped); ``links`` rewrites some targets."""
    target = links.get(target, target)
    if _SCHEME.match(target) and not target.startswith(("http://", "https://")):
        return None
    return target


def _inline(text: str, links: Mapping[str, str] = {}) -> str:
    """One line of Markdown to HTML: escaped first, then code spans, images, links, bold."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:  # a code span: its text only
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part)

        def image(m):
            src = _href(m.group(2), links)
            return f'<img src="{src}" alt="{m.group(1)}">' if src else m.group(1)

        def link(m):
            href = _href(m.group(2), links)
            return f'<a href="{href}">{m.group(1)}</a>' if href else m.group(1)

        part = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, part)
        part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, part)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        out.append(part)
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    return [c.strip() for c in line.strip("|").split("|")] if line != "|" else []


def _table(lines: list[str], links) -> str:
    """A pipe table (header, alignment row, body) as HTML, numbers right-aligned."""
    head, body = _cells(lines[0]), [_cells(x) for x in lines[2:]]
    align = [c.endswith(":") and not c.startswith(":") for c in _cells(lines[1])]
    th = "".join(f"<th>{_inline(c, links)}</th>" for c in head)
    rows = []
    for r in body:
        rows.append(
            "<tr>"
            + "".join(
                f"<td{' class=r' if i < len(align) and align[i] else ''}>{_inline(c, links)}</td>"
                for i, c in enumerate(r)
            )
            + "</tr>"
        )
    return (
        f'<div class="wide"><table><thead><tr>{th}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
    )


def markdown_html(text: str, links: Mapping[str, str] = {}) -> str:
    """The Markdown subset of the reports (module docstring) as HTML, every text escaped.
    ``links``: ``{target: replacement}`` for link and image targets."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif m := re.match(r"^(#{1,6})\s+(.*)$", line):
            level = len(m.group(1))
            blocks.append(f"<h{level}>{_inline(m.group(2).strip(), links)}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            block = lines[i:j]
            if len(block) >= 2 and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", block[1]):
                blocks.append(_table(block, links))
            else:
                blocks.append("<p>" + "<br>".join(_inline(x, links) for x in block) + "</p>")
            i = j
        elif re.match(r"^\s*[-*] ", line):
            items = []
            while i < len(lines) and lines[i].strip():
                if re.match(r"^\s*[-*] ", lines[i]):
                    items.append(re.sub(r"^\s*[-*] ", "", lines[i]).rstrip())
                else:  # a continuation line of the item above
                    items[-1] += " " + lines[i].strip()
                i += 1
            blocks.append(
                "<ul>" + "".join(f"<li>{_inline(x, links)}</li>" for x in items) + "</ul>"
            )
        else:
            para = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not re.match(r"^(#{1,6}\s|\s*\||\s*[-*] )", lines[i])
            ):
                para.append(lines[i].strip())
                i += 1
            blocks.append("<p>" + _inline(" ".join(para), links) + "</p>")
    return "\n".join(blocks)


def _document(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


def _per_seed(flat) -> str:
    """One collapsible table per leaderboard: every seed's test accuracy (%) per method and
    task (``leaderboard.csv``'s rows)."""
    if flat is None or not len(flat):
        return ""
    seeds = [c for c in flat.columns if str(c).startswith("seed_")]
    out = [
        "<h2>Per-seed values</h2>",
        (
            "<p>Test accuracy (%) of every seed, as in <code>leaderboard.csv</code> "
            "(the paired tests match seeds across rows).</p>"
        ),
    ]
    for name, g in flat.groupby("table", sort=False):
        cols = ["method", "task", "mean", "std", "n", *seeds]
        frame = g[[c for c in cols if c in g]].rename(
            columns={s: s.removeprefix("seed_") for s in seeds}
        )
        table = frame.to_html(
            index=False, escape=True, na_rep="-", float_format="{:.1f}".format, border=0
        )
        out.append(
            f"<details><summary>{html.escape(str(name))}</summary>"
            f'<div class="wide">{table}</div></details>'
        )
    return "\n".join(out)


def write_page(out: Path, root, suite: str, paths: Mapping[str, Path], flat, page: Mapping) -> Path:
    """``<out>/index.html`` of one suite's report (module docstring). ``paths``: the files
    the report wrote (``md`` is rendered; the data files are linked); ``flat``:
    ``leaderboard.csv``'s frame; ``page``: ``description``, ``suite_text``, ``command``."""
    md = safe_io.read_bytes(paths["md"]).decode("utf-8")
    body = []
    if out.parent.resolve() == Path(root).resolve():  # out is <results>/<suite>
        body.append(
            '<p class="nav"><a href="../index.html">all results</a> · '
            '<a href="../VERDICTS.md">VERDICTS.md</a></p>'
        )
    body.append(markdown_html(md.split("\n", 1)[0]))  # the title
    if page.get("description"):
        body.append(f"<p>{html.escape(' '.join(str(page['description']).split()))}</p>")
    if page.get("command"):
        body.append(f"<p>Made by <code>{html.escape(page['command'])}</code></p>")
    files = [
        p
        for k, p in paths.items()
        if k in ("md", "csv", "tex", "runs", "verdicts", "selection", "expected_max_val")
    ]
    body.append(
        "<p>Files: "
        + ", ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in files)
        + "</p>"
    )
    body.append(markdown_html(md.split("\n", 1)[1] if "\n" in md else ""))
    body.append(_per_seed(flat))
    if page.get("suite_text"):
        body.append(
            f"<h2>Suite file</h2><details><summary>{html.escape(suite)}.yaml"
            f"</summary><pre>{html.escape(page['suite_text'])}</pre></details>"
        )
    path = out / "index.html"
    safe_io.write_text(path, _document(f"{suite}: results", "\n".join(body)), root)
    return path


def write_index_page(
    results_root: str | os.PathLike, suites: Mapping[str, str] | None = None
) -> Path:
    """``<results_root>/index.html``: every suite folder with an ``index.html`` (linked, with
    its description from ``suites``), then ``VERDICTS.md`` rendered, its links to a suite's
    ``leaderboard.md`` pointing at that suite's page."""
    root = Path(results_root)
    suites = suites or {}
    pages = (
        sorted(d.name for d in root.iterdir() if (d / "index.html").is_file())
        if root.is_dir()
        else []
    )
    body = [
        "<h1>Results</h1>",
        (
            "<p>Written by <code>otransfer report --all</code>; one page per suite (its "
            'tables, verdicts, figures and per-seed values); <a href="README.md">README.md</a> '
            "lists the same files as Markdown.</p>"
        ),
        "<h2>Suites</h2><ul>",
    ]
    for name in pages:
        desc = " ".join(str(suites.get(name, "")).split())
        body.append(
            f'<li><a href="{html.escape(name)}/index.html"><strong>'
            f"{html.escape(name)}</strong></a>"
            + (f": {html.escape(desc)}" if desc else "")
            + "</li>"
        )
    body.append("</ul>" if pages else "<li>none yet: <code>otransfer run SUITE</code></li></ul>")
    verdicts = root / "VERDICTS.md"
    if verdicts.is_file():
        links = {f"{n}/leaderboard.md": f"{n}/index.html" for n in pages}
        body += [
            '<h2 id="verdicts">Verdicts</h2>',
            markdown_html(safe_io.read_bytes(verdicts).decode("utf-8"), links),
        ]
    path = root / "index.html"
    safe_io.write_text(path, _document("otransfer results", "\n".join(body)), root)
    return path


def suite_text(name: str) -> str:
    """The suite file's text (``suites/<name>.yaml`` or a path), as the report read it."""
    from harness.experiments.suite import suite_file_text

    return suite_file_text(name)


def report_command(
    name: str,
    storage,
    out,
    overrides: Sequence[str],
    quick: bool,
    from_csv,
    selection: str,
    results_root,
) -> str:
    """The ``otransfer report`` command line that writes this report again (a storage URL
    with its password masked)."""
    from harness.experiments.secrets import redact

    argv = ["otransfer", "report", str(name)]
    if storage:
        argv += ["--storage", redact(str(storage))]
    if str(results_root) != "results":
        argv += ["--results", str(results_root)]
    if out is not None:
        argv += ["--out", str(out)]
    if from_csv:
        argv += ["--from-csv", str(from_csv)]
    if selection != "loso":
        argv += ["--selection", selection]
    if quick:
        argv.append("--quick")
    for o in overrides:
        argv += ["--set", o]
    return shlex.join(argv)
