"Rewrite the results table in nbs/index.ipynb from the committed cells (headline_table(load_cells(results/study))); then run nbdev_clean and tools/make_readme.py"
import json, re
from pathlib import Path
from mssl_workbench.reports.results import load_cells, headline_table
new = headline_table(load_cells(Path("results/study")))
p = Path("nbs/index.ipynb"); nb = json.loads(p.read_text())
for c in nb["cells"]:
    src = "".join(c["source"])
    if "| method | linear % | k-NN % |" in src:
        lines = src.split("\n"); i = lines.index("| method | linear % | k-NN % |")
        j = i
        while j < len(lines) and lines[j].startswith("|"): j += 1
        lines[i:j] = new.split("\n")
        src = "\n".join(lines); c["source"] = [l + "\n" for l in src.split("\n")[:-1]] + [src.split("\n")[-1]]
p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
