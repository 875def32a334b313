"""Generate README.md from nbs/index.ipynb without quarto (which cannot be installed offline).

    python tools/make_readme.py            # write README.md
    python tools/make_readme.py --check    # exit 1 when README.md is stale

Follows nbdev's rules for what a reader sees: cells marked `#| hide` (or `#| exclude`) are dropped,
`#|` directive lines are removed, `#| echo: false` hides a cell's source and `#| output: false` its
output; markdown is copied verbatim, code becomes fenced Python followed by its text output.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n"

def directives(src: str) -> dict[str, str]:
    out = {}
    for line in src.splitlines():
        if not line.startswith("#|"): break
        key, _, val = line[2:].strip().partition(":")
        out[key.strip()] = val.strip() or "true"
    return out

def cell_text(cell) -> str:
    src = "".join(cell["source"])
    d = directives(src)
    if "hide" in d or "exclude" in d: return ""
    if cell["cell_type"] == "markdown": return src.strip() + "\n"
    if cell["cell_type"] != "code": return ""
    body = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
    parts = []
    if body and d.get("echo", "true") != "false": parts.append(f"```python\n{body}\n```\n")
    if d.get("output", "true") != "false":
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) if o.get("output_type") == "stream" else "".join(o.get("data", {}).get("text/plain", ""))
            if text.strip(): parts.append(f"```\n{text.rstrip()}\n```\n")
    return "\n".join(parts)

def render(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    return "\n".join(t for t in map(cell_text, cells) if t) + "\n" + HEADER

if __name__ == "__main__":
    text, readme = render(ROOT / "nbs" / "index.ipynb"), ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md is stale against nbs/index.ipynb: run `make readme` (python tools/make_readme.py)")
        print("README.md is up to date")
    else:
        readme.write_text(text, encoding="utf-8")
