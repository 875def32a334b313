"""Time the ways of evaluating the Matrix-SSL log-trace tr log(C + mu*I), forward + backward; print a table, write JSON.

    python benchmarks/matrix_log.py            # (m, d) in {(256, 2048), (512, 2048), (256, 8192)}
    python benchmarks/matrix_log.py --quick    # smaller sizes: a smoke run of well under a minute on an idle machine
    python benchmarks/matrix_log.py --max-cell-seconds 60 --out benchmarks/results/matrix_log.json

Each cell starts from raw embeddings z (m, d) and p = z + noise/2 (two correlated views; the gradient goes into z, as
in Matrix-SSL where p is the target branch), prepares them (row L2-normalise, column-centre) and evaluates one scalar:

  dense Taylor-4    C = p_c^T z_c / m (d x d), then the transcription a reader would write first: a loop that
                    multiplies by X = C + (mu - 1) I once per term (four d x d products at K = 4), trace of the sum
  trace identities  mssl_workbench.core.matrix.trace_logm_taylor on the same C: tr X^3 = sum(X^2 o X^T),
                    tr X^4 = sum(X^2 o (X^2)^T), one d x d product
  exact eigh        tr log(C(z) + mu I) from the float64 eigenvalues (mssl_workbench.core.matrix.trace_logm_psd); eigh
                    needs a symmetric matrix, so this column uses the auto-covariance of z
  batch Taylor-4    mssl_workbench.core.lowrank.lowrank_trace_logm_taylor: the same value as the dense Taylor columns from
                    the m x m matrix z_c p_c^T / m, no d x d matrix (falls back to dense when m >= d)
  batch exact       mssl_workbench.core.lowrank.lowrank_trace_logm: the exact column's value from the m x m eigenvalues

Times are wall-clock, the best of --repeat runs (one run when the first takes over 20 s, at least ten when it takes
under 1 s, so that short cells shrug off a busy neighbour); the JSON also holds the
process CPU time of that run and the load average before and after, since a shared machine inflates wall-clock times. Ratios are to dense Taylor-4 of the
same row. A cell whose estimated time (scaled from a smaller d of the same method by (d/d0)^3, or from the dense
cell of its row) exceeds --max-cell-seconds is not run: the table says "skipped (est. N s)". The "agree" column is
the largest relative difference between the Taylor columns and between the two exact columns.
"""
import argparse, json, os, platform, time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mssl_workbench.core.lowrank import lowrank_trace_logm, lowrank_trace_logm_taylor
from mssl_workbench.core.matrix import center_rows_normalize, trace_logm_psd, trace_logm_taylor

SIZES = [(256, 2048), (512, 2048), (256, 8192)]
QUICK_SIZES = [(128, 512), (256, 512), (128, 1024)]
MU, ORDER = 1.0, 4

def dense_taylor(p, z):
    "The first transcription: J_m-free centring, the d x d cross-covariance, one product per Taylor term"
    pc, zc = center_rows_normalize(p), center_rows_normalize(z)
    m, d = zc.shape
    X = pc.T @ zc / m + (MU - 1.0) * torch.eye(d, dtype=zc.dtype, device=zc.device)
    power, total = X, torch.zeros_like(X)
    for k in range(1, ORDER + 1):
        total = total + (-1) ** (k + 1) / k * power
        power = power @ X  # the loop's last product is wasted, as in a direct transcription
    return total.trace()

def identity_taylor(p, z):
    pc, zc = center_rows_normalize(p), center_rows_normalize(z)
    m, d = zc.shape
    return trace_logm_taylor(pc.T @ zc / m + MU * torch.eye(d, dtype=zc.dtype, device=zc.device), ORDER)

def exact_eigh(p, z):
    zc = center_rows_normalize(z)
    m, d = zc.shape
    return trace_logm_psd(zc.T @ zc / m + MU * torch.eye(d, dtype=zc.dtype, device=zc.device))

def batch_taylor(p, z):
    return lowrank_trace_logm_taylor(center_rows_normalize(p), center_rows_normalize(z), mu=MU, order=ORDER)

def batch_exact(p, z):
    return lowrank_trace_logm(center_rows_normalize(z), mu=MU)

METHODS = {"dense Taylor-4": dense_taylor, "trace identities": identity_taylor, "exact eigh": exact_eigh,
           "batch Taylor-4": batch_taylor, "batch exact": batch_exact}
CUBIC = {"dense Taylor-4", "trace identities", "exact eigh"}  # cost grows like d^3 (the batch ones like m^2 d)

def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()

def run_once(fn, p, z):
    "Wall-clock and process CPU seconds of one forward + backward, and the value"
    x = z.detach().clone().requires_grad_()
    sync(x.device); t0, c0 = time.perf_counter(), time.process_time()
    value = fn(p, x)
    value.backward()
    sync(x.device)
    return time.perf_counter() - t0, time.process_time() - c0, float(value.detach())

def time_cell(fn, p, z, repeat):
    "Best wall-clock time over the runs (one run when it takes over 20 s, ten when under 1 s), its CPU time, the value"
    runs = [run_once(fn, p, z)]
    extra = 0 if runs[0][0] > 20 else max(repeat, 10) - 1 if runs[0][0] < 1 else repeat - 1
    runs += [run_once(fn, p, z) for _ in range(extra)]
    wall, cpu, value = min(runs)
    return dict(seconds=wall, cpu_seconds=cpu, value=value, runs=len(runs))

def estimate(method, m, d, done):
    "Seconds expected for (method, m, d) from measured cells: the same method at a smaller d (cubic or m^2 d scaling)"
    guesses = []
    for (meth, m0, d0), row in done.items():
        if meth != method or row.get("seconds") is None or d0 >= d: continue
        scale = (d / d0) ** 3 * max(1.0, m / m0) if method in CUBIC else (m / m0) ** 2 * (d / d0)
        guesses.append(row["seconds"] * scale)
    return max(guesses) if guesses else None

def fmt_time(row):
    if row.get("skipped"): return f"skipped (est. {row['estimate_s']:.0f} s)"
    s = row["seconds"]
    return f"{s * 1e3:9.1f} ms" if s < 10 else f"{s:9.1f} s "

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} instead of {SIZES}")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell (best is kept); one over 20 s, at least ten under 1 s")
    ap.add_argument("--max-cell-seconds", type=float, default=600.0, help="skip a cell estimated to take longer than this")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--out", default="benchmarks/results/matrix_log.json")
    args = ap.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    load_before = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f}, {device}, {args.dtype}, mu={MU}, K={ORDER}, forward + backward, best of {args.repeat}")
    for fn in METHODS.values():  # warm-up: first-call costs (allocator, thread pool, LAPACK set-up) stay out of the table
        run_once(fn, torch.randn(64, 128, dtype=dtype, device=device), torch.randn(64, 128, dtype=dtype, device=device))
    done, rows = {}, []
    for m, d in sizes:
        g = torch.Generator().manual_seed(m * 100003 + d)
        z = torch.randn(m, d, generator=g, dtype=dtype).to(device)
        p = z + 0.5 * torch.randn(m, d, generator=g, dtype=dtype).to(device)  # a second "view" correlated with z
        cells = {}
        for name, fn in METHODS.items():
            est = estimate(name, m, d, done)
            if est is not None and est > args.max_cell_seconds:
                cells[name] = dict(skipped=True, estimate_s=round(est, 1), seconds=None)
            else:
                cells[name] = dict(skipped=False, **time_cell(fn, p, z, args.repeat))
            done[(name, m, d)] = cells[name]
            print(f"  ({m}, {d}) {name:16s} {fmt_time(cells[name])}", flush=True)
        base = cells["dense Taylor-4"].get("seconds")
        for cell in cells.values():
            cell["ratio"] = cell["seconds"] / base if base and cell.get("seconds") else None
        values = {k: c["value"] for k, c in cells.items() if "value" in c}
        def spread(names):
            vs = [values[n] for n in names if n in values]
            return max(abs(a - b) for a in vs for b in vs) / max(abs(v) for v in vs) if len(vs) > 1 else None
        agree = dict(taylor=spread(["dense Taylor-4", "trace identities", "batch Taylor-4"]),
                     exact=spread(["exact eigh", "batch exact"]))
        rows.append(dict(m=m, d=d, cells=cells, agree=agree))

    names = list(METHODS)
    width = 24
    print()
    print(f"{'(m, d)':13s}" + "".join(f"{n:>{width}s}" for n in names) + f"{'agree (Taylor / exact)':>26s}")
    for row in rows:
        parts = []
        for n in names:
            c = row["cells"][n]
            parts.append(fmt_time(c) + (f" ({c['ratio']:.3f}x)" if c.get("ratio") and n != names[0] else ""))
        a = row["agree"]
        agree = " / ".join("-" if a[k] is None else f"{a[k]:.1e}" for k in ("taylor", "exact"))
        print(f"({row['m']}, {row['d']})".ljust(13) + "".join(f"{s:>{width}s}" for s in parts) + f"{agree:>26s}")
    load_after = os.getloadavg()[0]
    print("ratios are to dense Taylor-4 of the same row (x < 1 is faster); wall-clock times (CPU times are in the JSON)")
    if max(load_before, load_after) > (os.cpu_count() or 1):
        print(f"note: load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs: other processes shared "
              "the cores, so times are inflated and noisy")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), torch=torch.__version__,
                threads=torch.get_num_threads(), cpus=os.cpu_count(), load_average=[load_before, load_after], device=str(device), dtype=args.dtype, machine=platform.machine(),
                mu=MU, order=ORDER, repeat=args.repeat, quick=args.quick, max_cell_seconds=args.max_cell_seconds)
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print("wrote", out)

if __name__ == "__main__":
    main()
