"""Build the documentation site offline into _docs/ (no quarto, no network).

    python tools/build_docs.py                      # execute every notebook, render the whole site into _docs/
    python tools/build_docs.py --skip-flags slow    # quicker: leave `#| slow` cells out (as nbdev_test does by default)
    python tools/build_docs.py --execute none       # render the outputs saved in the notebooks, execute nothing
    python tools/build_docs.py --execute 20_reports_spectrum.ipynb --out /tmp/site   # execute some, saved outputs for the rest
    python tools/build_docs.py --only index.ipynb,20_reports_spectrum.ipynb --out /tmp/site   # a partial site (what the test builds)

What it does, per notebook of nbs/ (nbdev's file selection, index.ipynb included):
1. execute it (unless told otherwise) in the notebook's folder with execnb, the engine of nbdev_test, skipping
   `#| eval: false` cells and cells with the --skip-flags; the build stops with the notebook, cell and error when a
   cell fails. Executing is the default because plotly figures only exist as outputs and the committed notebooks
   are kept free of large outputs;
2. run nbdev's own docs processors (`nbdev.processors.FilterDefaults`, what `nbdev_docs`/`nbdev.serve.proc_nbs`
   feed to quarto): front matter from the title cell, show_doc API entries for exported names, hidden and export
   cells removed, names linked;
3. render it with nbconvert's HTML exporter (JupyterLab look) and a template that adds the navigation across all
   pages and drops everything the stock template fetches from CDNs (require.js, MathJax, widget manager):
   plotly figures are re-emitted as `Plotly.newPlot` calls against the plotly.min.js that plotly's Python package
   ships (copied into the site), and LaTeX becomes MathML at build time (latex2mathml), which Chromium and
   Firefox render natively.
nbdev_docs keeps working for users who have quarto: nothing here changes settings.ini or nbs/.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import html
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class BuildError(Exception):
    "A problem with the command's input (a name, a folder): one line on stderr, exit code 2"

# -- step 1: execution -------------------------------------------------------------------------------------------

_re_directive = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")


def directives(source: str) -> dict:
    "The `#| name: value` lines at the top of a cell, as {name: value}"
    out = {}
    for line in source.splitlines():
        if not line.strip(): continue
        m = _re_directive.match(line)
        if not m: break
        out[m.group(1)] = m.group(2)
    return out


def execute(nb, path: Path, skip_flags: set[str]):
    "Run the notebook's cells in place with execnb, like nbdev_test; raise naming the cell that failed"
    from execnb.shell import CaptureShell
    def skip(cell):
        if cell.cell_type != "code": return True
        d = directives(cell.source)
        return d.get("eval", "").lower() == "false" or bool(skip_flags & d.keys()) or "nbdev_export(" in cell.source
    shell = CaptureShell(path)
    shell.run_cell("import plotly.io as _pio; _pio.renderers.default = 'plotly_mimetype'")  # a notebook may override it
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for i, cell in enumerate(nb.cells):
            if skip(cell):
                if cell.cell_type == "code": cell.outputs = []
                continue
            shell.cell(cell)
            if shell.exc:
                raise RuntimeError(f"{path}: cell {i} failed while building the docs:\n{cell.source}\n\n"
                                   f"{type(shell.exc).__name__}: {shell.exc}")
    finally:
        os.chdir(cwd)
    return shell


def nbdev_filter(shell=None):
    """nbdev's docs processors, with show_doc cells rendered in `shell` (the executed notebook's own kernel state)
    when there is one. Without one, nbdev's way: a fresh shell runs the notebook's import and export cells, and a
    cell that fails there (one that needs state from a cell nbdev does not run) is reported and passed over."""
    from nbdev.processors import FilterDefaults, exec_show_docs, _do_eval, _is_showdoc
    class ExecShowDocs(exec_show_docs):
        def begin(self):
            super().begin()
            if shell is not None:
                self.k = shell
                self.k.run_cell("from nbdev.showdoc import show_doc")
        def __call__(self, cell):
            if not self.nb.has_docs_ or not hasattr(self, "k"): return
            if shell is not None and not _is_showdoc(cell): return   # its state is already in the shell
            if not _do_eval(cell): return
            self.k.cell(cell)
            if self.k.exc:
                what = "show_doc cell" if _is_showdoc(cell) else "cell"
                print(f"build_docs: warning: {what} {cell.idx_} failed in nbdev's doc shell ({type(self.k.exc).__name__}: "
                      f"{self.k.exc}); execute the notebook (--execute) to render it fully", file=sys.stderr)
                self.k.exc = None
    class Filter(FilterDefaults):
        def base_procs(self): return [ExecShowDocs if p is exec_show_docs else p for p in super().base_procs()]
    return Filter()


def stage(path: str, dest: str, run: bool, skip_flags: list[str]) -> str:
    "Worker: execute (or not) and nbdev-process one notebook, written as JSON to `dest`; returns the elapsed time"
    from execnb.nbio import read_nb, write_nb
    start = time.time()
    path = Path(path)
    nb = read_nb(path)
    shell = execute(nb, path, set(skip_flags)) if run else None
    os.environ["IN_TEST"] = "1"   # as nbdev.serve_drv does while processing
    cwd = os.getcwd()
    os.chdir(path.parent)
    try: nbdev_filter(shell)(nb)
    finally: os.chdir(cwd)
    write_nb(nb, dest)
    return f"{time.time() - start:.1f}s"

# -- step 2: turn nbdev/quarto conventions into plain HTML -----------------------------------------------------

PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
_re_code = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_re_block_math = re.compile(r"\$\$(.+?)\$\$", re.S)
_re_inline_math = re.compile(r"(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])")
_re_source_link = re.compile(r"\[source\]\(([^)\s]+)\)\{[^}]*\}")


def tex_to_mathml(text: str) -> str:
    "Markdown with $…$ / $$…$$ → the same with MathML (code spans and fences untouched; unparsable TeX kept as code)"
    from latex2mathml.converter import convert
    def conv(tex, display):
        try: return convert(tex.strip(), display=display)
        except Exception: return f"<code>{html.escape(tex)}</code>"
    parts = _re_code.split(text)
    for i in range(0, len(parts), 2):  # even parts are outside code
        p = _re_block_math.sub(lambda m: "\n\n" + conv(m.group(1), "block") + "\n\n", parts[i])
        parts[i] = _re_inline_math.sub(lambda m: conv(m.group(1), "inline"), p)
    return "".join(parts)


def plotly_html(fig: dict) -> str:
    "A div and a Plotly.newPlot call for a plotly figure (the page loads plotly.min.js)"
    div = f"plotly-{uuid.uuid4().hex[:12]}"
    height = (fig.get("layout") or {}).get("height") or 450
    payload = json.dumps([fig.get("data", []), fig.get("layout", {}), {"responsive": True, "displaylogo": False}])
    payload = payload.replace("</", "<\\/")
    return (f'<div class="mssl-plotly" id="{div}" style="width:100%;height:{height}px"></div>\n'
            f'<script>Plotly.newPlot("{div}", ...{payload});</script>')


def relink(text: str, prefix: str) -> str:
    "Absolute links into the published site → relative links into this one; notebook links → pages"
    from nbdev.doclinks import _nbpath2html
    text = text.replace(prefix, "")
    text = re.sub(r"\]\((?!https?:)([^)\s]+?)\.ipynb(#[^)\s]*)?\)",
                  lambda m: f"]({_nbpath2html(Path(m.group(1) + '.ipynb')).as_posix()}{m.group(2) or ''})", text)
    return _re_source_link.sub(lambda m: f'<a class="source-link" href="{m.group(1)}">source</a>', text)


def _join(v): return "".join(v) if isinstance(v, list) else v


def to_plain(nb, prefix: str) -> tuple[dict, bool]:
    "Front matter out, quarto cell options applied, outputs made offline-renderable; returns (frontmatter, has_plotly)"
    import yaml
    front, cells, has_plotly = {}, [], False
    for cell in nb.cells:
        src = _join(cell.get("source", ""))
        if cell.cell_type == "raw" and src.lstrip().startswith("---"):
            front.update(yaml.safe_load(src.strip().strip("-")) or {})
            continue
        if cell.cell_type == "markdown":
            if src.startswith("<!-- WARNING: THIS FILE WAS AUTOGENERATED"): continue
            cell.source = tex_to_mathml(relink(src, prefix))
            cells.append(cell); continue
        if cell.cell_type != "code": continue
        d = directives(src)
        if d.get("include", "").lower() == "false": continue
        cell.source = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("#|")).strip()
        if d.get("echo", "").lower() == "false" or not cell.source:
            cell.source = ""
            cell.metadata.setdefault("tags", []).append("remove_input")   # TagRemovePreprocessor drops the empty input box
        if d.get("output", "").lower() == "false": cell.outputs = []
        outputs = []
        for o in cell.get("outputs", []):
            data = o.get("data")
            if data is not None:
                if PLOTLY in data:
                    has_plotly = True
                    o["data"] = {"text/html": plotly_html(data[PLOTLY])}
                elif WIDGET in data:   # no kernel behind a static page: say so instead of the widget's repr
                    o["data"] = {"text/html": '<p class="mssl-widget-note"><em>Interactive widget: run this notebook in '
                                              'JupyterLab to use it.</em></p>'}
                else:
                    h = _join(data.get("text/html", ""))
                    if "cdn.plot.ly" in h or "require.config" in h or "window.PlotlyConfig" in h: continue  # plotly's CDN loader
                    if "text/markdown" in data: data["text/markdown"] = tex_to_mathml(relink(_join(data["text/markdown"]), prefix))
                    if not data: continue
            outputs.append(o)
        cell.outputs = outputs
        if not cell.source and not outputs: continue
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return front, has_plotly

# -- step 3: HTML --------------------------------------------------------------------------------------------------

TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<style type="text/css">{{ resources.site.css }}</style>
{%- if resources.site.plotly %}<script src="{{ resources.site.root }}plotly.min.js"></script>{% endif %}
{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook mssl-site" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<nav class="mssl-nav"><a class="mssl-brand" href="{{ resources.site.root }}index.html">{{ resources.site.name }}</a>
<ul>{% for p in resources.site.pages %}<li{% if p.current %} class="current"{% endif %}><a href="{{ resources.site.root }}{{ p.href }}">{{ p.html }}</a></li>{% endfor %}</ul></nav>
<main class="mssl-main"><header class="mssl-header"><h1 class="mssl-title">{{ resources.site.title_html }}</h1>
{%- if resources.site.description_html %}<p class="mssl-description">{{ resources.site.description_html }}</p>{% endif %}</header>
{%- endblock body_header -%}
{% block body_footer %}
<footer class="mssl-pager">{% if resources.site.prev %}<a class="prev" href="{{ resources.site.root }}{{ resources.site.prev.href }}">← {{ resources.site.prev.html }}</a>{% endif %}
{% if resources.site.next %}<a class="next" href="{{ resources.site.root }}{{ resources.site.next.href }}">{{ resources.site.next.html }} →</a>{% endif %}</footer>
</main>
</body>
{% endblock body_footer %}
"""

CSS = """
body.mssl-site { display: flex; margin: 0; overflow: visible; }
.mssl-nav { position: sticky; top: 0; align-self: flex-start; width: 240px; min-width: 240px; height: 100vh; overflow-y: auto;
  box-sizing: border-box; padding: 1.2em 1em; border-right: 1px solid #e0e0e0; background: #fafafa; font-family: system-ui, sans-serif; }
.mssl-nav .mssl-brand { display: block; font-weight: 600; font-size: 1.1em; margin-bottom: 1em; color: #222; text-decoration: none; }
.mssl-nav ul { list-style: none; padding: 0; margin: 0; }
.mssl-nav li a { display: block; padding: 0.3em 0.5em; border-radius: 4px; color: #333; text-decoration: none; font-size: 0.95em; }
.mssl-nav li a:hover { background: #eee; }
.mssl-nav li.current a { background: #e3edf7; color: #0b5cad; font-weight: 600; }
.mssl-main { flex: 1; min-width: 0; max-width: 1100px; padding: 1em 2em 3em; }
.mssl-title { margin-bottom: 0.2em; }
.mssl-description { color: #555; font-size: 1.1em; margin-top: 0; }
.mssl-pager { display: flex; justify-content: space-between; margin-top: 3em; padding-top: 1em; border-top: 1px solid #e0e0e0; }
a.source-link { float: right; font-size: smaller; }
.jp-RenderedMarkdown table { border-collapse: collapse; }
math[display="block"] { margin: 0.8em 0; }
"""


def inline_code(text: str) -> str:
    "Plain text with `code` spans, as HTML (for titles and descriptions, which are not rendered as markdown)"
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text or "")))


def page_name(nb_path: Path, nbs: Path) -> str:
    "The page of a notebook, as nbdev names it (numeric prefix dropped: 20_reports_spectrum.ipynb → reports_spectrum.html)"
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(nb_path.relative_to(nbs)).as_posix()


def render(staged: list[tuple[Path, Path, str]], out: Path, name: str, prefix: str) -> list[Path]:
    "Convert the processed notebooks to HTML pages with a shared navigation; returns the pages written"
    from execnb.nbio import read_nb
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    import nbformat
    tpl = Path(tempfile.mkdtemp(prefix="mssl-docs-tpl-"))
    (tpl / "mssl").mkdir()
    (tpl / "mssl" / "conf.json").write_text(json.dumps({"base_template": "lab", "mimetypes": {"text/html": True}}))
    (tpl / "mssl" / "index.html.j2").write_text(TEMPLATE)
    exporter = HTMLExporter(template_name="mssl", extra_template_basedirs=[str(tpl)], exclude_input_prompt=True,
                            exclude_output_prompt=True, theme="light")
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}), enabled=True)
    docs = []
    for src, staged_nb, href in staged:
        nb = read_nb(staged_nb)
        front, has_plotly = to_plain(nb, prefix)
        title = front.get("title") or src.stem
        docs.append(dict(nb=nb, href=href, title=str(title), description=front.get("description", ""), plotly=has_plotly))
    pages, written = [dict(href=d["href"], title=d["title"], html=inline_code(d["title"])) for d in docs], []
    for i, d in enumerate(docs):
        depth = d["href"].count("/")
        site = dict(css=CSS, plotly=d["plotly"], root="../" * depth, name=name, title=d["title"],
                    title_html=inline_code(d["title"]), description_html=inline_code(d["description"]),
                    pages=[dict(p, current=(p["href"] == d["href"])) for p in pages],
                    prev=pages[i - 1] if i > 0 else None, next=pages[i + 1] if i + 1 < len(pages) else None)
        nb = nbformat.reads(json.dumps(d["nb"]), as_version=4)   # reads joins multi-line lists (stream text) into strings
        body, _ = exporter.from_notebook_node(nb, resources={"site": site, "metadata": {"name": d["title"]}})
        dest = out / d["href"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body, encoding="utf-8")
        written.append(dest)
    shutil.rmtree(tpl, ignore_errors=True)
    return written


def notebooks(nbs: Path) -> list[Path]:
    "The notebooks nbdev documents (its nbglob rules), index first"
    from nbdev.doclinks import nbglob
    found = sorted(Path(p) for p in nbglob(nbs, file_glob="*.ipynb"))
    return sorted(found, key=lambda p: (p.name != "index.ipynb", p.relative_to(nbs).as_posix()))


def build(out: Path, *, execute_what: str="all", skip_flags: list[str]=(), n_workers: int=1, only: str="") -> list[Path]:
    "The whole site into `out`; returns the pages written"
    import plotly
    from nbdev.config import get_config
    os.chdir(ROOT)
    if out.exists() and any(out.iterdir()) and not (out / ".nojekyll").exists() and not (out / "index.html").exists():
        raise BuildError(f"{out} holds files that are not a built site; pick an empty or new --out folder")
    cfg = get_config()
    nbs = Path(cfg.config_path) / cfg.nbs_path
    prefix = f"{cfg.doc_host.rstrip('/')}{cfg.doc_baseurl.rstrip('/')}/"
    paths = notebooks(nbs)
    if not paths: raise BuildError(f"no notebooks under {nbs}")
    if only:
        keep = {w.strip() for w in only.split(",") if w.strip()}
        missing = keep - {p.name for p in paths} - {p.stem for p in paths}
        if missing: raise BuildError(f"--only names unknown notebooks {sorted(missing)}; choose from {[p.name for p in paths]}")
        paths = [p for p in paths if p.name in keep or p.stem in keep]
    wanted = {w.strip() for w in execute_what.split(",")} if execute_what not in ("all", "none") else set()
    unknown = wanted - {p.name for p in paths} - {p.stem for p in paths}
    if unknown: raise BuildError(f"--execute names unknown notebooks {sorted(unknown)}; choose from {[p.name for p in paths]}")
    run = lambda p: execute_what == "all" or (execute_what != "none" and (p.name in wanted or p.stem in wanted))
    staging = Path(tempfile.mkdtemp(prefix="mssl-docs-"))
    try:
        jobs = [(p, staging / f"{i:03d}.ipynb", page_name(p, nbs)) for i, p in enumerate(paths)]
        ctx = multiprocessing.get_context("spawn")   # a fresh interpreter per worker, as nbdev does
        # one notebook per process: IPython takes over __main__, and notebooks should not share state
        with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {pool.submit(stage, str(p), str(dest), run(p), list(skip_flags)): p for p, dest, _ in jobs}
            for f in cf.as_completed(futures):
                p = futures[f]
                try: took = f.result()
                except Exception as e:
                    for other in futures: other.cancel()
                    raise SystemExit(f"build_docs: {p.name}: {e}") from None
                print(f"  {'executed' if run(p) else 'processed'} {p.relative_to(nbs)} ({took})", flush=True)
        if out.exists(): shutil.rmtree(out)
        out.mkdir(parents=True)
        pages = render(jobs, out, cfg.title if "title" in cfg else cfg.lib_name, prefix)
        shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out / "plotly.min.js")
        (out / ".nojekyll").touch()
        return pages
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="build_docs", description="Build the documentation site offline (nbdev processors + nbconvert).")
    p.add_argument("--out", default=None, help="output folder (default: settings.ini's doc_path, _docs)")
    p.add_argument("--execute", default="all", metavar="all|none|NB[,NB...]",
                   help="which notebooks to execute; the others render their saved outputs (default: all)")
    p.add_argument("--skip-flags", default="", help="comma-separated cell flags not to execute, e.g. slow (default: none)")
    p.add_argument("--n-workers", type=int, default=1, help="notebooks processed in parallel (default: 1)")
    p.add_argument("--only", default="", metavar="NB[,NB...]",
                   help="a partial site of just these notebooks (the navigation lists only them); default: all")
    args = p.parse_args(argv)
    from nbdev.config import get_config
    os.chdir(ROOT)
    out = Path(args.out) if args.out else Path(get_config().config_path) / get_config().doc_path
    start = time.time()
    try:
        pages = build(out.resolve(), execute_what=args.execute, skip_flags=[f for f in args.skip_flags.split(",") if f],
                      n_workers=args.n_workers, only=args.only)
    except BuildError as e:
        print(f"build_docs: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(pages)} pages to {out} in {time.time() - start:.0f}s; open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
