"""Time loading Fashion-MNIST (full set when found, and the embedded sample); print a table, write JSON.

    python benchmarks/data_load.py [--out benchmarks/results/data_load.json]
"""
import argparse, json, time
from pathlib import Path

from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST, find_fashion_mnist, load_fashion_mnist

def best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times), sorted(times)[len(times) // 2]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--out", default="benchmarks/results/data_load.json")
    ap.add_argument("--quick", action="store_true", help="one timed load instead of five")
    args = ap.parse_args()
    rows = []
    for name, root in [("full", find_fashion_mnist()), ("embedded sample", SAMPLE_FASHION_MNIST)]:
        if root is None: print(f"{name}: not found, skipped"); continue
        n = sum(len(load_fashion_mnist(s, root)) for s in ("train", "test"))
        best, median = best_of(lambda: [load_fashion_mnist(s, root) for s in ("train", "test")], repeat=1 if args.quick else 5)
        rows.append(dict(set=name, root=str(root), images=n, best_s=round(best, 3), median_s=round(median, 3)))
    print(f"{'set':16s} {'images':>7s} {'best s':>7s} {'median s':>8s}")
    for r in rows: print(f"{r['set']:16s} {r['images']:7d} {r['best_s']:7.3f} {r['median_s']:8.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print("wrote", args.out)
