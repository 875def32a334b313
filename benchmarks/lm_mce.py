"""CE vs CE + matrix cross-entropy for causal LMs (mssl_workbench.objectives.mce, mssl_workbench.lm.train): a training study and the loss overhead.

    python benchmarks/lm_mce.py study     # CE vs CE+MCE (each construction, 2 values of γ), ≥ 3 seeds, arithmetic task
    python benchmarks/lm_mce.py overhead  # time and memory of CE+MCE vs CE at growing N and V, the 7B shapes, FLOP counts
    python benchmarks/lm_mce.py all

study: every configuration trains the `lm-arith-ce` preset's model (char-level GPT-2, 2 blocks, width 64) for the same
number of optimiser steps (`--steps`, the fixed CPU budget) on the same generated problems (data seed 0); seeds vary the
initialisation and the batch order. Reported: exact-match accuracy of greedy generations on the 200 test problems
(mean ± std over seeds), the answer-token CE at the end, the hidden-state effective rank (erank of the answer tokens' last
hidden states) and Diff-eRank, and the wall time. Runs go 2 at a time (`--jobs`), one thread each. The defaults
(300 steps, 3 seeds, 15 runs) take about 20 min on 2 idle cores; `--quick` (150 steps, still 3 seeds) is the reduced version.

overhead: forward + backward of the loss alone on random logits (N, V) and an output embedding (V, d), one thread;
time ratio (CE+MCE)/CE, and the extra peak memory (peak RSS of a fresh process minus its RSS with the inputs allocated).
The batch construction is timed from N×N matrices (`low_rank=False`: "ce+rel exact", "ce+rel taylor") and, where N > V,
from V×V ones ("… V×V", its default there); the last shape is the `lm-arith2` task's (N = 1300 answer tokens per batch,
the char vocabulary V = 100, its model width d = 64), where the N×N path dominated a step.
FLOP counts are analytic (multiply-add = 2 FLOPs), with the 7B model's own 6·P·N per step for scale.

Results: a table on stdout and JSON under benchmarks/results/ (lm_mce_study.json, lm_mce_overhead.json).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [("ce", None, 0.0), ("emb γ=0.1", "embedding", 0.1), ("emb γ=1", "embedding", 1.0),
           ("rel γ=0.1", "batch", 0.1), ("rel γ=1", "batch", 1.0)]


# ---------------------------------------------------------------------------------------------------------------- study
def _one_run(args_json: str) -> None:
    "Child process: one training run; prints its summary as JSON"
    import torch
    torch.set_num_threads(1)
    from mssl_workbench.config.schema import merge_dicts
    from mssl_workbench.lm.config import LM_PRESETS, lm_config_from_dict
    from mssl_workbench.lm.train import fit_lm
    a = json.loads(args_json)
    loss = {"mce": a["mce"], "gamma": a["gamma"]} if a["mce"] else {}
    cfg = merge_dicts(LM_PRESETS["lm-arith-ce"][0], {"preset": None, "loss": loss, "output": a["out_dir"],
                      "train": {"max_steps": a["steps"], "seed": a["seed"], "quiet": True}})
    t = time.time()
    s = fit_lm(lm_config_from_dict(cfg))
    print(json.dumps({"accuracy": s["accuracy"], "ce": s["final_terms"]["ce"], "mce": s["final_terms"].get("mce"),
                      "erank": s["erank"], "rankme": s["rankme"], "diff_erank": s["diff_erank"], "wall_s": time.time() - t,
                      "steps": s["steps"], "no_prediction": s["eval"]["no_prediction"],
                      "test_answers_seen_in_train": s["data"]["test_answers_seen_in_train"]}))


def study(steps: int, seeds: int, jobs: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="lm_mce_study_"))
    tasks = [(name, mce, gamma, seed) for seed in range(seeds) for name, mce, gamma in CONFIGS]

    def launch(task):
        name, mce, gamma, seed = task
        payload = json.dumps({"mce": mce, "gamma": gamma, "seed": seed, "steps": steps, "out_dir": str(tmp / f"{name.replace(' ', '_')}_{seed}")})
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        p = subprocess.run([sys.executable, __file__, "_one", payload], capture_output=True, text=True, env=env)
        if p.returncode: raise RuntimeError(f"{name} seed {seed} failed:\n{p.stderr[-2000:]}")
        return task, json.loads(p.stdout.strip().splitlines()[-1])

    t0 = time.time()
    with ThreadPoolExecutor(jobs) as pool: done = list(pool.map(launch, tasks))
    rows = []
    for name, mce, gamma in CONFIGS:
        runs = [r for (n, _, _, _), r in done if n == name]
        agg = lambda k: (statistics.mean(r[k] for r in runs), statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0)
        rows.append({"config": name, "mce": mce, "gamma": gamma, "seeds": len(runs), "runs": runs,
                     **{k: agg(k) for k in ("accuracy", "ce", "erank", "rankme", "diff_erank", "wall_s")}})
    print(f"\nCE vs CE+MCE, lm-arith (1-step 1-digit problems), {steps} steps × batch 32, {seeds} seeds; accuracy = exact match on 200 test problems")
    print(f"{'config':<11} {'accuracy':>15} {'answer CE':>15} {'erank':>13} {'Diff-eRank':>13} {'wall s':>9}")
    for r in rows:
        f = lambda k, p: f"{r[k][0]:.{p}f} ± {r[k][1]:.{p}f}"
        print(f"{r['config']:<11} {f('accuracy', 3):>15} {f('ce', 3):>15} {f('erank', 2):>13} {f('diff_erank', 2):>13} {r['wall_s'][0]:>9.0f}")
    seen = done[0][1]["test_answers_seen_in_train"]
    print(f"({seen} of 200 test answer chains also occur in the training set: the task is in-distribution arithmetic)")
    return {"steps": steps, "batch_size": 32, "seeds": seeds, "preset": "lm-arith-ce", "rows": rows,
            "test_answers_seen_in_train": seen, "total_wall_s": time.time() - t0, "threads_per_run": 1, "jobs": jobs}


# ------------------------------------------------------------------------------------------------------------- overhead
# The embedding construction takes the exact log only: its Q has eigenvalues near 1/d, where a Taylor series around I
# is far from the logarithm, so embedding_mce refuses log="taylor" (the LM chapter)
VARIANTS = [("ce", None, None, "auto"), ("ce+emb exact", "embedding", "exact", "auto"),
            ("ce+rel exact", "batch", "exact", False), ("ce+rel taylor", "batch", "taylor", False),
            ("ce+rel exact V×V", "batch", "exact", True), ("ce+rel taylor V×V", "batch", "taylor", True)]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _one_overhead(args_json: str) -> None:
    "Child process: time and peak extra memory of one (shape, variant)"
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    from mssl_workbench.objectives.mce import batch_relation_mce, embedding_mce
    a = json.loads(args_json)
    N, V, d, mce, log, low_rank, repeats = a["N"], a["V"], a["d"], a["mce"], a["log"], a["low_rank"], a["repeats"]
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, V, generator=g).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    weight = torch.randn(V, d, generator=g) if mce == "embedding" else None

    def step():
        loss = F.cross_entropy(logits, targets)
        if mce:
            probs = logits.softmax(-1)
            loss = loss + (embedding_mce(probs, targets, weight, log=log) if mce == "embedding"
                           else batch_relation_mce(probs, targets, log=log, low_rank=low_rank))
        loss.backward()
        logits.grad = None

    base = _rss_bytes()
    step()   # warm-up (and the peak-memory pass)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    print(json.dumps({"time_s": min(times), "extra_peak_bytes": max(0, peak - base)}))


def flops(N: int, V: int, d: int) -> dict:
    "Analytic forward+backward FLOPs (multiply-add = 2) of each loss part; eigh counted as ≈ 9n³, its backward ≈ 4n³"
    ce = 8 * N * V                                   # softmax, log, gather, backward
    emb = 2 * (2 * V * d * d) + 2 * 2 * N * d * d + 9 * d ** 3 + 2 * d ** 3 + 4 * d ** 3 + 3 * N * V
    rel = 2 * (2 * N * N * V) + 9 * N ** 3 + 2 * N ** 3 + 4 * N ** 3 + 3 * N * V
    rel_vocab = 3 * (2 * 2 * N * V * V) + 2 * 2 * V ** 3 + 9 * V ** 3 + 4 * V ** 3 + 3 * N * V   # SᵀS, YᵀS (×3 with backward), V×V eigh
    head = 6 * N * V * d                             # the LM head's own matmuls, forward + backward
    return {"ce": ce, "embedding_exact": emb, "batch_exact": rel, "batch_exact_vocab_space": rel_vocab, "lm_head": head}


def arith2_shape() -> tuple[int, int, int]:
    "(N, V, d) of the lm-arith2 task: about 1,300 answer tokens per batch of 32, the char vocabulary, the model width"
    from mssl_workbench.lm.config import LM_PRESETS
    from mssl_workbench.lm.data import CharTokenizer
    return 1300, CharTokenizer().vocab_size, LM_PRESETS["lm-arith2-mce"][0]["model"]["d_model"]


def overhead(shapes: list[tuple[int, int, int]], repeats: int) -> dict:
    rows = []
    for N, V, d in shapes:
        row = {"N": N, "V": V, "d": d, "variants": {}, "flops": flops(N, V, d)}
        for name, mce, log, low_rank in VARIANTS:
            if mce == "batch" and (N > 2048 if low_rank is False else N <= V): continue   # V×V only where it applies (N > V)
            payload = json.dumps({"N": N, "V": V, "d": d, "mce": mce, "log": log, "low_rank": low_rank, "repeats": repeats})
            p = subprocess.run([sys.executable, __file__, "_overhead", payload], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
            if p.returncode: raise RuntimeError(f"{name} at {(N, V, d)} failed:\n{p.stderr[-2000:]}")
            row["variants"][name] = json.loads(p.stdout.strip().splitlines()[-1])
        ce = row["variants"]["ce"]
        for v in row["variants"].values():
            v["time_ratio"] = v["time_s"] / ce["time_s"]
            v["extra_memory_ratio"] = v["extra_peak_bytes"] / max(1, ce["extra_peak_bytes"])
        rows.append(row)
        print(f"N={N:>5} V={V:>6} d={d:>5}  " + "  ".join(f"{k}: {v['time_s']*1e3:.0f} ms (×{v['time_ratio']:.2f}, +{v['extra_peak_bytes']/2**20:.0f} MiB)"
                                                       for k, v in row["variants"].items()), flush=True)
    N, V, d, P = 4096, 32000, 4096, 6.74e9   # the 7B shapes (Llama-2-7B: 6.74e9 parameters)
    f = flops(N, V, d)
    model = 6 * P * N
    seven_b = {"N": N, "V": V, "d": d, "params": P, "flops": f, "model_step_flops": model,
               "embedding_exact_over_model": f["embedding_exact"] / model, "batch_exact_over_model": f["batch_exact"] / model,
               "embedding_exact_over_lm_head": f["embedding_exact"] / f["lm_head"], "batch_exact_over_lm_head": f["batch_exact"] / f["lm_head"]}
    print(f"\n7B shapes N={N}, V={V}, d={d}: FLOPs per micro-batch (fwd+bwd): model 6PN = {model:.2e}, LM head {f['lm_head']:.2e}, "
          f"CE {f['ce']:.2e}, embedding MCE {f['embedding_exact']:.2e} ({100 * seven_b['embedding_exact_over_model']:.2f}% of the model step), "
          f"batch MCE {f['batch_exact']:.2e} ({100 * seven_b['batch_exact_over_model']:.2f}%)")
    return {"repeats": repeats, "threads": 1, "rows": rows, "seven_b": seven_b}


def main(argv=None) -> int:
    if argv is None: argv = sys.argv[1:]
    if argv[:1] == ["_one"]: _one_run(argv[1]); return 0
    if argv[:1] == ["_overhead"]: _one_overhead(argv[1]); return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["study", "overhead", "all"])
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps per run (the fixed budget)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    ap.add_argument("--quick", action="store_true", help="reduced: 150 steps; overhead without the largest shapes")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    if args.what in ("study", "all"):
        res = study(150 if args.quick else args.steps, args.seeds, args.jobs)
        res["quick"] = args.quick
        (RESULTS / "lm_mce_study.json").write_text(json.dumps(res, indent=1))
    if args.what in ("overhead", "all"):
        shapes = [(256, 1000, 128), (1024, 1000, 128), (1024, 8000, 512), (2048, 8000, 512), (512, 32000, 1024)]
        if not args.quick: shapes.append((512, 32000, 4096))   # the 7B vocabulary and width at reduced N
        shapes.append(arith2_shape())
        res = overhead(shapes, repeats=2 if args.quick else 3)
        res["quick"] = args.quick
        (RESULTS / "lm_mce_overhead.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
