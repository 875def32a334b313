"""The information monitor's added cost (matrix entropies, joint entropy and MI of two views, both spaces) as a share of
a quickstart epoch. Prints a table, writes JSON.

    python benchmarks/info_monitor.py [--quick] [--samples 512] [--steps 12] [--repeats 5] [--out benchmarks/results/info_monitor.json]

The epoch time is the quickstart's training steps only (steps per epoch x the median step time of `fit` on the quickstart
preset, no hooks), so the share is an upper bound: a real epoch also spends time in the probe, the logger, the spectral
monitor and the checkpoint. The monitor's cost is `Monitor.information` on the trained model at the default
`eval.info_samples` (two augmented views through backbone and projector, then `information_metrics` in both spaces), the
median of `--repeats` calls, at α = 2 (the default: no eigen-decomposition) and α = 1 (three m x m `eigvalsh` per
space). `--quick` runs 4 steps and 2 repeats: a smoke test of the script, not a measurement.
"""
import argparse, json, os, statistics, tempfile, time
from pathlib import Path

import torch

from mssl_workbench.cli.train import get_preset
from mssl_workbench.config.schema import config_from_dict, merge_dicts
from mssl_workbench.core.metrics import information_metrics
from mssl_workbench.engine.hooks import Monitor, paired_view_features
from mssl_workbench.engine.image import fit

from train_step import StepClock   # benchmarks/ is on sys.path when a benchmark runs as a script


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="4 steps, 2 repeats: checks the script runs")
    ap.add_argument("--samples", type=int, default=None, help="eval.info_samples (default: the config's, 512)")
    ap.add_argument("--steps", type=int, default=12, help="training steps timed for the step median")
    ap.add_argument("--repeats", type=int, default=5, help="monitor calls timed for its median")
    ap.add_argument("--out", default="benchmarks/results/info_monitor.json")
    args = ap.parse_args()
    steps, repeats = (4, 2) if args.quick else (args.steps, args.repeats)
    load_before = os.getloadavg()
    over = {"output": str(Path(tempfile.mkdtemp()) / "run"), "train": {"max_steps": steps, "quiet": True}}
    if args.samples is not None: over["eval"] = {"info_samples": args.samples}
    cfg = config_from_dict(merge_dicts(get_preset("quickstart"), over))
    clock = StepClock()
    run = fit(cfg, hooks=[clock])
    step_s = statistics.median(b - a for a, b in zip(clock.times[1:], clock.times[2:]))   # the first step (lazy inits) left out
    epoch_s = step_s * run.data.steps_per_epoch

    mon = Monitor(); mon.before_fit(run)            # builds its view augmentation (run.writer is None: no evaluation here)
    rows = []
    for alpha in (2.0, 1.0):
        run.cfg.eval.info_alpha = alpha
        t = median_time(lambda: mon.information(run, {}), repeats)
        rows.append(dict(part=f"Monitor.information, alpha={alpha:g} (views + both spaces)", seconds=t, share=t / epoch_s))
    n = min(run.cfg.eval.info_samples, len(run.data.monitor_images))
    mon.info_augment.generator.manual_seed(0)
    pairs = paired_view_features(run.model, run.data.monitor_images[:n], mon.info_augment, batch_size=run.cfg.eval.batch_size,
                                 device=run.info.device)
    t_views = median_time(lambda: paired_view_features(run.model, run.data.monitor_images[:n], mon.info_augment,
                                                       batch_size=run.cfg.eval.batch_size, device=run.info.device), repeats)
    rows.append(dict(part="  of which: two views' forward passes", seconds=t_views, share=t_views / epoch_s))
    for alpha in (2.0, 1.0):
        t = median_time(lambda: [information_metrics(a, b, alpha=alpha) for a, b in pairs.values()], repeats)
        rows.append(dict(part=f"  of which: information_metrics, alpha={alpha:g}", seconds=t, share=t / epoch_s))
    load_after = os.getloadavg()

    print(f"quickstart: {run.data.steps_per_epoch} steps/epoch x median step {step_s:.3f} s = epoch {epoch_s:.1f} s (training steps only); "
          f"m = {n}; threads {torch.get_num_threads()}; load average {load_before[0]:.2f} -> {load_after[0]:.2f}"
          + ("; QUICK MODE: not a measurement" if args.quick else ""))
    print(f"{'part':58s} {'seconds':>9s} {'share of epoch':>15s}")
    for r in rows: print(f"{r['part']:58s} {r['seconds']:9.3f} {100 * r['share']:14.2f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "quick": args.quick, "m": n, "steps_per_epoch": run.data.steps_per_epoch,
                                          "median_step_s": step_s, "epoch_s": epoch_s, "rows": rows,
                                          "loadavg_before": load_before, "loadavg_after": load_after}, indent=1))
    print(f"monitor share at alpha=2: {100 * rows[0]['share']:.2f}% of a quickstart epoch (target < 2%); wrote {args.out}")
