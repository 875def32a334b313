"""Run every usage line of README.md as written, in a fresh clone, and say how each ended.

    python tools/readme_lines.py                 # clone this checkout's HEAD to a temporary folder, run every line there
    python tools/readme_lines.py --keep DIR      # the same in DIR (kept afterwards, for a look at the runs)

The lines are the README's ```sh blocks (the README is the source: a line added there is run here), in order, each
through `bash -c` in the clone's root with the console scripts of this environment and the clone's package first on
PYTHONPATH, no stdin, CI=1. A line ends as one of:
- success: exit 0;
- clear refusal: exit 2, no traceback, the last line of stderr one sentence that names what to change (a line with a
  placeholder the reader replaces, such as RUN_DIR or /path/to/imagenet-layout, ends here);
- stopped: a line that runs longer than its budget (a whole study) is sent SIGINT at the budget and must stop with
  one line and exit 130, having written its cells so far;
- failure: anything else (a traceback, another exit code, a hang past SIGINT).
`make test` is CI's own command (.ci/run) and `make quickstart` is `mssl-train --preset quickstart` after an install,
which the next block runs as written; both are listed as "run by CI", not run here. Results: results/readme_lines/.
"""
from __future__ import annotations

import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "readme_lines"
BUDGET_S = {"mssl-study run": 90}      # lines that would run for hours as written: SIGINT after this many seconds
TIMEOUT_S = 900


def readme_lines(readme: Path) -> list[str]:
    "The commands of the README's ```sh blocks, comments stripped, in order"
    lines, inside = [], False
    for raw in readme.read_text().splitlines():
        if raw.startswith("```"):
            inside = raw.strip() == "```sh" if not inside else False
            continue
        if inside and raw.strip():
            lines.append(re.sub(r"\s+#.*$", "", raw).strip())
    return lines


def classify(rc: int | None, err: str, stopped: bool) -> str:
    last = (err.strip().splitlines() or [""])[-1]
    if "Traceback (most recent call last)" in err: return "failure"
    if stopped: return "stopped" if rc == 130 and last else "failure"
    if rc == 0: return "success"
    if rc == 2 and last and len(last) < 400: return "clear refusal"
    return "failure"


def run_line(line: str, cwd: Path, env: dict) -> dict:
    budget = next((s for k, s in BUDGET_S.items() if line.startswith(k)), None)
    t0 = time.monotonic()
    p = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    stopped = False
    try:
        out, err = p.communicate(timeout=budget or TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stopped = budget is not None
        os.killpg(p.pid, signal.SIGINT)
        try: out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); out, err = p.communicate(); stopped = False
    rc = p.returncode
    rc = 128 - rc if rc is not None and rc < 0 else rc            # bash -c passes the child's status on
    return {"line": line, "outcome": classify(rc, err, stopped), "exit": rc, "seconds": round(time.monotonic() - t0, 1),
            "last_stderr": (err.strip().splitlines() or [""])[-1][:300], "last_stdout": (out.strip().splitlines() or [""])[-1][:300]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    args = ap.parse_args(argv)
    if args.keep and args.keep.exists(): sys.exit(f"readme_lines: {args.keep} exists; name a new folder")
    where = args.keep or Path(tempfile.mkdtemp(prefix="readme-lines-")) / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    env = {**os.environ, "PYTHONPATH": str(where), "CI": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    load0, t0, rows = os.getloadavg(), time.monotonic(), []
    for line in readme_lines(where / "README.md"):
        if line.startswith("make "):
            rows.append({"line": line, "outcome": "run by CI", "exit": None, "seconds": 0, "last_stderr": "", "last_stdout": ""})
        else:
            rows.append(run_line(line, where, env))
        r = rows[-1]
        print(f"{r['outcome']:14s} {r['exit']!s:>4} {r['seconds']:7.1f} s  {line}\n{'':28s}{r['last_stderr'] or r['last_stdout']}", flush=True)
    load1 = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True).stdout.strip()
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"commit": commit, "load_start": [round(x, 2) for x in load0], "load_end": [round(x, 2) for x in load1],
              "minutes": round((time.monotonic() - t0) / 60, 1), "threads": os.environ.get("OMP_NUM_THREADS"), "lines": rows}
    (OUT / "readme_lines.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("success", "clear refusal", "stopped", "run by CI", "failure")}
    print(" · ".join(f"{k}: {v}" for k, v in counts.items()))
    if not args.keep: shutil.rmtree(where.parent, ignore_errors=True)
    return 1 if counts["failure"] else 0


if __name__ == "__main__":
    sys.exit(main())
