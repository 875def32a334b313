"""Round-trip helper for authoring notebooks as plain text (not part of the package).

    python tools/nbpct.py to-nb  chapter.py nbs/01_core_matrix.ipynb   # percent-format text -> notebook
    python tools/nbpct.py to-pct nbs/01_core_matrix.ipynb chapter.py   # notebook -> percent-format text

Cells are separated by lines `# %%` (code) or `# %% [markdown]` (markdown; each line of the
body is prefixed with `# `). The notebook in nbs/ stays the source of truth: the text form is a
scratch copy for editing with ordinary tools; run nbdev_clean after converting back.
"""
import hashlib, json, sys
from pathlib import Path

def _nb(cells):
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}

def _src(lines):
    while lines and not lines[-1].strip(): lines.pop()
    while lines and not lines[0].strip(): lines.pop(0)
    text = "\n".join(lines)
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]] if text else []

def to_nb(src: Path, dst: Path):
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        if kind == "markdown":
            body = [l[2:] if l.startswith("# ") else (l[1:] if l.startswith("#") else l) for l in buf]
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _src(body)})
        else:
            cells.append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": _src(list(buf))})
    for line in src.read_text().splitlines():
        if line.startswith("# %%"):
            flush(); buf = []
            kind = "markdown" if "[markdown]" in line else "code"
        else:
            buf.append(line)
    flush()
    for i, c in enumerate(cells):  # stable ids: nbdev_export writes them into the module, so they must not change on re-export
        c["id"] = hashlib.sha1(f"{i}:{c['cell_type']}:{''.join(c['source'])}".encode()).hexdigest()[:8]
    cells = [dict(sorted(c.items())) for c in cells]   # nbdev_clean's key order, so cleaning changes nothing
    dst.write_text(json.dumps(_nb(cells), indent=1, ensure_ascii=False) + "\n")

def to_pct(src: Path, dst: Path):
    out = []
    for c in json.loads(src.read_text())["cells"]:
        s = "".join(c["source"])
        if c["cell_type"] == "markdown":
            out.append("# %% [markdown]\n" + "\n".join(("# " + l) if l else "#" for l in s.split("\n")))
        else:
            out.append("# %%\n" + s)
    dst.write_text("\n\n".join(out) + "\n")

if __name__ == "__main__":
    cmd, a, b = sys.argv[1:4]
    {"to-nb": to_nb, "to-pct": to_pct}[cmd](Path(a), Path(b))
