"""Forward+backward time and peak memory of every registered loss, and Matrix-SSL's official form against a dense,
straightforward transcription of the official algorithm; prints one table and writes JSON.

    python benchmarks/losses.py [--quick] [--repeat N] [--threads T] [--device cpu|cuda] [--out benchmarks/results/losses.json]

Full sizes: every loss at (m=512, d=2048); Matrix-SSL also at (m=256, d=8192); the dense transcription at
(m=512, d=2048). --quick divides m and d by 4 and times once (a smoke test, seconds).
Each case runs in a fresh subprocess so that its peak memory is its own: on CPU the peak is the rise of the
process's maximum resident set size above the level reached once the inputs exist (ru_maxrss); on CUDA it is
torch.cuda.max_memory_allocated above the same baseline. Times are the best and the median of `--repeat` runs after
one warm-up; the ratios use the best (least disturbed) runs. CPU runs use `--threads` intra-op threads (default 1:
on a shared machine, idle-spinning OpenMP threads make multi-threaded timings erratic).
"""
import argparse, json, resource, statistics, subprocess, sys, time
from pathlib import Path

SIZES = {"main": (512, 2048), "wide": (256, 8192)}
MOCO_QUEUE = 16384   # MoCo's 65,536 keys of 2048 floats would be 512 MiB; the cost grows linearly with it


def cases(quick: bool):
    "(label, loss name, options, size key); 'dense' is the transcription of the official algorithm"
    out = [("matrix_ssl official (auto: batch space)", "matrix_ssl", {}, "main"),
           ("matrix_ssl official, low_rank=False", "matrix_ssl", {"low_rank": False}, "main"),
           ("matrix_ssl official, dense transcription", "dense", {}, "main"),
           ("matrix_ssl paper (auto: batch space)", "matrix_ssl", {"form": "paper"}, "main"),
           ("matrix_ssl paper, low_rank=False", "matrix_ssl", {"form": "paper", "low_rank": False}, "main"),
           ("mec", "mec", {}, "main"), ("simclr", "simclr", {}, "main"),
           ("moco_v2 (queue 16384)", "moco_v2", {"size": MOCO_QUEUE}, "main"),
           ("byol", "byol", {}, "main"), ("simsiam", "simsiam", {}, "main"), ("barlow_twins", "barlow_twins", {}, "main"),
           ("vicreg", "vicreg", {}, "main"), ("spectral", "spectral", {}, "main"),
           ("frossl", "frossl", {}, "main"), ("mmcr", "mmcr", {}, "main"),
           ("ivne", "ivne", {}, "main"),
           ("matrix_ssl official (auto: batch space)", "matrix_ssl", {}, "wide"),
           ("matrix_ssl paper (auto: batch space)", "matrix_ssl", {"form": "paper"}, "wide")]
    return out


def size_of(key: str, quick: bool):
    m, d = SIZES[key]
    return (m // 4, d // 4) if quick else (m, d)


def dense_official(z1, z2, t1, t2, lamda=1.0, mu=1.0, gamma=1.0, order=4):
    "The official algorithm as written: J_m product, d×d matrices, K dense Taylor products, trace of a full product"
    import torch
    def taylor_log(Q):
        X = Q - torch.eye(Q.shape[0], device=Q.device)
        term, out = X, torch.zeros_like(Q)
        for k in range(1, order + 1):
            out = out + (-1) ** (k + 1) / k * term
            term = term @ X
        return out
    def mce(t, z, correlation):
        t, z = torch.nn.functional.normalize(t), torch.nn.functional.normalize(z)
        m, d = z.shape
        J = torch.eye(m, device=z.device) - torch.ones(m, m, device=z.device) / m
        I = torch.eye(d, device=z.device)
        P, Q = (lamda * I, t.T @ J @ z / m + mu * I) if correlation else (t.T @ J @ t / m + mu * I, z.T @ J @ z / m + mu * I)
        return torch.trace(-P @ taylor_log(Q))
    t1, t2 = t1.detach(), t2.detach()
    return 0.5 * (mce(t2, z1, True) + mce(t1, z2, True) + gamma * mce(t2, z1, False) + gamma * mce(t1, z2, False))


def run_case(name: str, options: dict, m: int, d: int, repeat: int, device: str, threads: int) -> dict:
    "Time forward+backward of one loss in this process and measure its peak memory above the inputs' level"
    import torch
    from mssl_workbench.objectives.registry import LOSSES, get_loss
    torch.manual_seed(0)
    if device == "cpu": torch.set_num_threads(threads)
    if name == "dense":
        fn, arity = dense_official, 4
    else:
        module = get_loss(name, **({"dim": d} if name == "moco_v2" else {}), **options).to(device)
        fn, arity = (lambda *inputs: module(*inputs).loss), len(LOSSES[name].inputs)   # forward returns LossOutput(loss, terms)
    xs = [torch.randn(m, d, device=device, requires_grad=i < 2 or arity < 4) for i in range(arity)]   # targets t1, t2: no grad
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    def step():
        for x in xs: x.grad = None
        loss = fn(*xs)
        loss.backward()
        sync()
        return float(loss.detach())
    d_small = d if name == "moco_v2" else max(2, d // 16)   # the queue fixes MoCo's dim
    small = [torch.randn(max(2, m // 16), d_small, device=device, requires_grad=x.requires_grad) for x in xs]
    fn(*small).backward()   # first-use costs (lazy library init, thread pools) stay out of the peak
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = step()   # warm-up; its peak is the peak of every run
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else \
           (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    return dict(best_ms=1000 * min(times), median_ms=1000 * statistics.median(times), peak_mib=peak, value=value,
                threads=torch.get_num_threads())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes / 4 and one timed run: a smoke test")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per case (default 3, --quick 1)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1)")
    ap.add_argument("--out", default="benchmarks/results/losses.json")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)   # internal: run one case, print JSON
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    if args.case:
        name, options, m, d = json.loads(args.case)
        print(json.dumps(run_case(name, options, m, d, repeat, args.device, args.threads)))
        return
    rows = []
    for label, name, options, key in cases(args.quick):
        m, d = size_of(key, args.quick)
        cmd = [sys.executable, __file__, "--case", json.dumps([name, options, m, d]), "--repeat", str(repeat), "--device", args.device,
               "--threads", str(args.threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0: raise SystemExit(f"case {label} (m={m}, d={d}) failed:\n{r.stderr[-2000:]}")
        rows.append(dict(loss=label, m=m, d=d, **json.loads(r.stdout.strip().splitlines()[-1])))
        print(f"  {label:45s} m={m:5d} d={d:5d} {rows[-1]['best_ms']:10.1f} ms", file=sys.stderr, flush=True)
    fast = next(r for r in rows if r["loss"] == "matrix_ssl official (auto: batch space)")
    dense = next(r for r in rows if r["loss"] == "matrix_ssl official, dense transcription")
    d_space = next(r for r in rows if r["loss"] == "matrix_ssl official, low_rank=False")
    agree = abs(fast["value"] - dense["value"]) / abs(dense["value"])
    summary = dict(ratio_official_vs_dense=fast["best_ms"] / dense["best_ms"], ratio_dspace_vs_dense=d_space["best_ms"] / dense["best_ms"],
                   relative_value_difference_float32=agree, target_ratio=0.10)
    header = f"{'loss':45s} {'m':>5s} {'d':>5s} {'best ms':>9s} {'median ms':>10s} {'peak MiB':>9s}"
    print(header); print("-" * len(header))
    for r in rows: print(f"{r['loss']:45s} {r['m']:5d} {r['d']:5d} {r['best_ms']:9.1f} {r['median_ms']:10.1f} {r['peak_mib']:9.1f}")
    print(f"\nMatrix-SSL official form / dense transcription (m={dense['m']}, d={dense['d']}): "
          f"{summary['ratio_official_vs_dense']:.4f}x (target <= 0.10x); d-space fast traces: {summary['ratio_dspace_vs_dense']:.3f}x; "
          f"values agree to {agree:.1e} relative (float32)")
    meta = dict(device=args.device, quick=args.quick, repeat=repeat, threads=rows[0]["threads"], torch=__import__("torch").__version__,
                moco_queue=MOCO_QUEUE, peak_memory="CPU: rise of ru_maxrss above the inputs' level; CUDA: max_memory_allocated above it")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(meta=meta, summary=summary, rows=rows), indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
