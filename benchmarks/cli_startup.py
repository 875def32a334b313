"""Start-up time of the console scripts' light commands: --help, --version, --list-presets (issue 21, item 5).

Each command is run through its installed console script (this environment's bin/), `--runs` times (default 5), and
the median wall time is reported with the slowest and fastest run. These commands import no torch
(tests/test_light_imports.py checks that), so they should print in well under a second; the rows that still import
torch say so in the `torch` column (measured by running the entry point's module import with torch blocked).

    python benchmarks/cli_startup.py [--runs 5] [--quick] [--label after] [--out benchmarks/results/cli_startup.json]

To time another checkout of the package (e.g. the commit before a change), put it first on PYTHONPATH:
`PYTHONPATH=/tmp/old python benchmarks/cli_startup.py --label before --out /tmp/before.json`.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = [("mssl-train", "--help"), ("mssl-train", "--version"), ("mssl-train", "--list-presets"),
            ("mssl-spectrum", "--help"), ("mssl-eval", "--help"), ("mssl-eval", "linear", "--help"),
            ("mssl-eval", "gsm8k", "--help")]
ENTRY = {"mssl-train": "mssl_workbench.cli.train", "mssl-spectrum": "mssl_workbench.reports.spectrum", "mssl-eval": "mssl_workbench.cli.evaluate"}
HEAVY = ("torch", "torchvision", "timm", "transformers")
NEUTRAL = tempfile.gettempdir()   # run from here: `python -c` puts the working directory first on sys.path


def time_command(cmd: tuple, runs: int) -> dict:
    "Wall seconds of `runs` runs of the console script `cmd` (output discarded)"
    argv, times, code = [str(BIN / cmd[0]), *cmd[1:]], [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, cwd=NEUTRAL)
        times.append(time.perf_counter() - t0)
        code = r.returncode
    return {"command": " ".join(cmd), "exit": code, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "runs_s": [round(t, 4) for t in times]}


def runs_without_torch(cmd: tuple) -> bool:
    "Whether the command exits 0 with torch, torchvision, timm and transformers unimportable"
    code = (f"import sys\nfor n in {HEAVY!r}: sys.modules[n] = None\nfrom {ENTRY[cmd[0]]} import main\n"
            f"sys.argv = {list(cmd)!r}\nsys.exit(main())")
    r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, cwd=NEUTRAL)
    return r.returncode == 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs per command (the median is reported)")
    p.add_argument("--quick", action="store_true", help="3 runs per command")
    p.add_argument("--label", default="", help="a name for this measurement, kept in the JSON (e.g. before, after)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_startup.json"))
    args = p.parse_args()
    runs = 3 if args.quick else args.runs
    rows = []
    for cmd in COMMANDS:
        row = time_command(cmd, runs)
        row["without_torch"] = runs_without_torch(cmd)
        rows.append(row)
    print(f"{'command':32s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'exit':>5s}  torch-free")
    for r in rows:
        print(f"{r['command']:32s} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} {r['exit']:5d}  {'yes' if r['without_torch'] else 'no'}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {"benchmark": "cli_startup", "label": args.label, "runs": runs, "python": platform.python_version(),
           "machine": platform.machine(), "cpus": os.cpu_count(), "loadavg": load,
           "pythonpath": os.environ.get("PYTHONPATH", ""), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {args.out} (load average {load})")


if __name__ == "__main__":
    main()
