"""`mssl-eval` end to end: every subcommand through its command line (subprocess where the exit status matters),
results written to RUN_DIR/eval/<kind>.json, the feature cache invalidated by a changed checkpoint, the COCO
oracle scores through the CLI, detectron2 names for a ResNet-50 and a round trip back to torchvision, and the
exit-2 errors of the issue's acceptance list. Run dirs are built by `random_init_run` (the runs module's writer)
and, in the slow test, by the real `mssl-train`."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
from mssl_workbench.cli import evaluate as ev
from mssl_workbench.engine.rundir import read_run

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(SAMPLE_FASHION_MNIST)
SMALL_HEADS = {"proj_dim": 64, "proj_hidden": 128, "pred_hidden": 32}


def make_run(path, *, data=None, seed=0, **model):
    "A run directory with the random-init model (step 0) of a small config over the embedded sample"
    cfg = {"data": {"root": SAMPLE, **(data or {})}, "train": {"seed": seed},
           "model": {"method": "matrix_ssl", "backbone": "resnet10t_mini", "small_input": False, **SMALL_HEADS, **model}}
    return ev.random_init_run(path, cfg)


def cli(*args, env_extra=None, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mssl_workbench.cli.evaluate", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {"a": make_run(base / "a"), "b": make_run(base / "b", seed=1, method="simsiam"), "base": base}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_help_lists_presets(capsys):
    for sub in ("linear", "knn", "select", "semisup", "finetune", "coco", "coco-score", "export-detectron2"):
        with pytest.raises(SystemExit) as e: ev.main([sub, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "usage: mssl-eval " + sub in text
        if sub in ev._KINDS: assert "presets:" in text and all(p in text for p in ev._KINDS[sub][1])
        if sub == "coco": assert "R50-FPN" in text and "R50-C4" in text


def test_linear_fast_path_and_cache_invalidation(tmp_path):
    ckpt = make_run(tmp_path / "lin")
    env = {"MSSL_CACHE": str(tmp_path / "cache")}
    args = ["linear", ckpt, "--preset", "fmnist-fast", f"root={SAMPLE}", "train_fraction=0.1", "val_fraction=0.25", "epochs=3", "batch_size=256"]
    r = cli(*args, env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "chosen on the test split as the paper's code does; report the last" in r.stdout
    out = json.loads((ckpt.parent.parent / "eval" / "linear.json").read_text())
    assert out["feature_cache"] == {"train": "miss", "val": "miss"}
    assert (out["n_train"], out["n_val"], len(out["history"])) == (1000, 500, 3)
    assert out["top1_best"] == max(h["top1"] for h in out["history"]) and out["top1_last"] == out["history"][-1]["top1"]
    assert out["reported"].startswith("top1_last") and 0.1 < out["top1_best"] <= 1 and out["top5_best"] >= out["top1_best"]
    assert out["peak_lr"] == pytest.approx(0.48 * 256 / 4096)
    r = cli(*args, env_extra=env)
    again = json.loads((ckpt.parent.parent / "eval" / "linear.json").read_text())
    assert again["feature_cache"] == {"train": "hit", "val": "hit"} and again["top1_last"] == out["top1_last"]
    # a changed checkpoint (other weights, same file name) must not read the old features
    state = torch.load(ckpt, weights_only=True)
    state["model"] = {k: (v + 0.5 * torch.randn_like(v)) if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, ckpt)
    r = cli(*args, env_extra=env)
    changed = json.loads((ckpt.parent.parent / "eval" / "linear.json").read_text())
    assert changed["feature_cache"] == {"train": "miss", "val": "miss"}
    assert changed["checkpoint_sha256"] != out["checkpoint_sha256"] and changed["history"] != out["history"]


def test_knn_matches_direct_computation(runs, cache):
    out = ev.run_knn(runs["b"], ev.build_config(ev.KnnConfig, ev.KNN_PRESETS, "fmnist", [f"root={SAMPLE}", "val_fraction=0.2", "device=cpu"]))
    assert set(out) >= {"k20", "k200"} and out["n_train"] == 10000 and out["n_val"] == 400
    model, cfg = ev._load_trained(runs["b"])
    train = ev.load_split(cfg, "train", root=SAMPLE)
    val = ev.load_split(cfg, "test", root=SAMPLE, fraction=0.2)
    from mssl_workbench.core.metrics import knn_accuracy
    (tf, _), (vf, _) = ev.split_features(model, cfg, train), ev.split_features(model, cfg, val)   # (features, the split they are of)
    assert out["k20"] == pytest.approx(knn_accuracy(tf, train.labels, vf, val.labels, k=20, temperature=0.07, num_classes=10))
    assert json.loads((runs["b"].parent.parent / "eval" / "knn.json").read_text())["k200"] == out["k200"]


def test_select_ranks_and_reports(runs, capsys):
    for name, acc in (("a", 0.6), ("b", 0.7)):
        ev.write_eval(runs[name].parent.parent, "knn", {"k20": acc})
    sc = ev.build_config(ev.SelectConfig, ev.SELECT_PRESETS, "fmnist", [f"root={SAMPLE}", "rankme_samples=512", "lidar_images=64", "lidar_views=3", "device=cpu"])
    out = ev.run_select([runs["a"].parent.parent, runs["b"].parent.parent], sc)
    assert len(out["runs"]) == 2 and {e["method"] for e in out["runs"]} == {"matrix_ssl", "simsiam"}
    for e in out["runs"]:
        assert 1 <= e["rankme"] <= 64 and 1 <= e["lidar"] <= 63 and (e["lidar_images"], e["lidar_views"]) == (64, 3)
        assert json.loads(Path(e["run"], "eval", "select.json").read_text())["rankme"] == e["rankme"]
    rep = out["report"]["all"]["rankme~knn"]
    best = max(out["runs"], key=lambda e: e["rankme"])
    assert rep["regret"] == pytest.approx(0.7 - best["accuracy"]["knn"])
    (ra, ka), (rb, kb) = ((e["rankme"], e["accuracy"]["knn"]) for e in out["runs"])
    assert rep["kendall_tau"] == (1.0 if (ra - rb) * (ka - kb) > 0 else -1.0)   # two runs: +1 iff RankMe orders them as k-NN does
    assert "method:matrix_ssl" not in out["report"]      # one run per method: no within-method figure
    assert "kendall_tau" in capsys.readouterr().out


def test_coco_score_cli_oracles_and_errors(tmp_path):
    root = ev.make_synthetic_coco(tmp_path / "coco", splits={"val": 5})
    gt_path = root / "annotations" / "instances_val2017.json"
    gt = json.loads(gt_path.read_text())
    (tmp_path / "perfect.json").write_text(json.dumps(ev.oracle_detections(gt)))
    (tmp_path / "shifted.json").write_text(json.dumps(ev.oracle_detections(gt, shift_iou=0.6)))
    r = cli("coco-score", "--gt", gt_path, "--detections", tmp_path / "perfect.json", "--output", tmp_path / "s.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["bbox AP 1.000 AP50 1.000 AP75 1.000", "segm AP 1.000 AP50 1.000 AP75 1.000"]
    r = cli("coco-score", "--gt", gt_path, "--detections", tmp_path / "shifted.json")
    line, = r.stdout.splitlines()
    assert line.startswith("bbox AP ") and "AP50 1.000 AP75 0.000" in line
    (tmp_path / "bad.json").write_text("[{not json")
    other = [dict(d, image_id=10_000) for d in ev.oracle_detections(gt)]
    (tmp_path / "other.json").write_text(json.dumps(other))
    for dets, msg in ((tmp_path / "bad.json", "not valid JSON"), (tmp_path / "other.json", "does not have")):
        r = cli("coco-score", "--gt", gt_path, "--detections", dets)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr, r.stderr


def test_export_detectron2_resnet50_names_and_round_trip(tmp_path, capsys):
    import torchvision
    ckpt = make_run(tmp_path / "r50", backbone="resnet50", data={"in_chans": 3, "image_size": 64})
    model, cfg = ev._load_trained(ckpt)
    net = model.backbone.model
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d): m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 2); m.weight.uniform_(0.5, 1.5)
    state = torch.load(ckpt, weights_only=True); state["model"] = model.state_dict(); torch.save(state, ckpt)
    assert ev.main(["export-detectron2", str(ckpt), "-o", str(tmp_path / "model.pkl")]) == 0
    printed = capsys.readouterr().out
    for key in ("MODEL.RESNETS.STRIDE_IN_1X1: False", "INPUT.FORMAT: RGB", "MODEL.PIXEL_MEAN: [123.675, 116.28, 103.53]",
                "MODEL.PIXEL_STD: [58.395, 57.12, 57.375]", "MODEL.RESNETS.DEPTH: 50",
                "MODEL.RESNETS.NORM: naiveSyncBN", "SOLVER.MAX_ITER: 180000", "SOLVER.STEPS: [120000, 160000]", "unverified"):
        assert key in printed
    blob = pickle.loads((tmp_path / "model.pkl").read_bytes())
    assert blob["__author__"] == "mssl-workbench" and blob["matching_heuristics"] is True
    d2 = blob["model"]
    for key in ("stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight", "res2.0.shortcut.norm.weight",
                "res4.5.conv2.norm.bias", "res5.2.conv3.norm.running_var", "res5.2.conv3.weight"):
        assert key in d2 and isinstance(d2[key], np.ndarray), key
    assert len(d2) == 53 * 5      # 53 convolutions (stem, 16 blocks x 3, 4 shortcuts), each a weight + 4 BN tensors
    assert not any(k.startswith(("fc", "layer")) or "num_batches" in k for k in d2)
    tv = torchvision.models.resnet50(weights=None).eval()
    missing, unexpected = tv.load_state_dict(ev.torchvision_state_dict(d2), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    tv.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(tv(x), model.features(x), rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "r50" / "eval" / "export-detectron2.json").read_text())["tensors"] == len(d2)


def test_errors_exit_2(runs, tmp_path, capsys):
    vit = make_run(tmp_path / "vit", backbone="vit_tiny_patch16_224", small_input=True, data={"in_chans": 3, "image_size": 32})
    r18 = make_run(tmp_path / "r18", backbone="resnet18", data={"in_chans": 3, "image_size": 32})
    coco = ev.make_synthetic_coco(tmp_path / "coco", splits={"train": 2, "val": 2})
    (tmp_path / "empty_coco").mkdir()
    (tmp_path / "list.txt").write_text("0\n5\nn01440764_10026.JPEG\n")
    cases = [
        (["linear", str(tmp_path / "missing")], "no such run directory"),
        (["knn", str(tmp_path)], "no checkpoints/step_*.pt in this run directory"),
        (["export-detectron2", str(vit)], "is not a ResNet"),
        (["coco", str(vit), "--data", str(coco), "--preset", "synthetic-smoke"], "is not a ResNet"),
        (["coco", str(r18), "--data", str(tmp_path / "empty_coco")], "no annotations/instances_train2017.json"),
        (["coco", str(runs["a"]), "--data", str(tmp_path / "empty_coco")], "'resnet10t_mini' does not have torchvision's ResNet layout"),
        (["semisup", str(runs["a"]), f"root={SAMPLE}", f"subset_file={tmp_path / 'list.txt'}"], "n01440764_10026.JPEG"),
        (["export-detectron2", str(runs["a"])], "1-channel input"),
        (["linear", str(runs["a"]), "--preset", "fmnist-fats"], "did you mean fmnist-fast"),
        (["linear", str(runs["a"]), "epoch=3"], "did you mean epochs"),
    ]
    for argv, msg in cases:
        assert ev.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (argv, err)
    r = cli("coco", vit, "--data", coco)                     # the real exit status of the console script
    assert r.returncode == 2 and "is not a ResNet" in r.stderr and "Traceback" not in r.stderr


def test_semisup_subset_stratified(runs, tmp_path):
    r = cli("semisup", runs["a"], "--percent", "1", f"root={SAMPLE}", "epochs=1", "val_fraction=0.05", "device=cpu")
    assert r.returncode == 0, r.stderr
    out = json.loads((runs["a"].parent.parent / "eval" / "semisup-1pct.json").read_text())
    assert out["n_labelled"] == 100 and out["per_class"] == [10] * 10 and out["subset"] == "stratified 1.0% (seed 0)"
    assert out["options"]["lr_backbone"] == 0.005 and out["options"]["lr_head"] == 0.5 and out["n_val"] == 100
    (tmp_path / "idx.txt").write_text("\n".join(str(i) for i in range(0, 10000, 500)))
    sc = ev.build_config(ev.SemisupConfig, ev.SEMISUP_PRESETS, "fmnist-1pct", [f"root={SAMPLE}", "epochs=1", "val_fraction=0.05",
                                                                              f"subset_file={tmp_path / 'idx.txt'}", "device=cpu"])
    assert ev.run_semisup(runs["a"], sc, write=False)["n_labelled"] == 20


def test_finetune_smoke(runs):
    fc = ev.build_config(ev.FinetuneConfig, ev.FINETUNE_PRESETS, "fmnist", [f"root={SAMPLE}", "train_fraction=0.02", "val_fraction=0.05",
                                                                             "batch_size=32", "max_steps=2", "device=cpu"])
    out = ev.run_finetune(runs["a"], fc)
    assert out["history"][-1]["steps"] == 2 and out["top1_last"] <= out["top5_last"]
    correct = out["top1_last"] * out["n_val"]   # a fraction of the validation images: a whole number of them
    assert out["n_val"] > 0 and abs(correct - round(correct)) < 1e-6, (out["top1_last"], out["n_val"])
    assert Path(out["written_to"]).name == "finetune.json"


def test_coco_smoke_two_steps(tmp_path):
    ckpt = make_run(tmp_path / "r18", backbone="resnet18", data={"in_chans": 3, "image_size": 64})
    coco = ev.make_synthetic_coco(tmp_path / "coco", splits={"train": 4, "val": 2}, size=96)
    r = cli("coco", ckpt, "--data", coco, "--preset", "synthetic-smoke")
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "r18" / "eval" / "coco.json").read_text())
    assert out["iterations"] == 2 and "R50-C4" in out["note"] and "R50-FPN" in r.stdout
    assert all(np.isfinite(v) for v in out["losses_first_last"][-1].values())
    det = ev.maskrcnn_from_resnet(ev._resnet_of(*ev._load_trained(ckpt)), 4, min_size=(96,), max_size=128)
    bns = [m for m in det.backbone.body.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(type(m) is torch.nn.BatchNorm2d and m.weight.requires_grad for m in bns)   # trainable, not FrozenBatchNorm2d


def test_on_a_run_made_by_mssl_train(tmp_path, console):
    out = tmp_path / "run"
    r = subprocess.run([console("mssl-train"), "--preset", "quickstart", "data.fraction=0.05", "train.epochs=1", "train.batch_size=64",
                        "eval.monitor_samples=256", "eval.knn_train_samples=300", "--output", str(out), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("knn", out, f"root={SAMPLE}", "val_fraction=0.1", env_extra={"MSSL_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    knn = json.loads((out / "eval" / "knn.json").read_text())
    assert knn["method"] == "matrix_ssl" and 0.3 < knn["k20"] <= 1
    assert read_run(out).evals["knn"]["k20"] == knn["k20"]   # the run directory's reader finds the evaluation


def test_dry_run_prints_every_preset_as_yaml(capsys):
    "mssl-eval KIND --preset P --dry-run: exit 0, the resolved options as YAML (with the overrides), the preset's note; no RUN_DIR needed"
    import dataclasses
    import yaml
    for kind, (cls, presets, _) in ev._KINDS.items():
        for name in presets:
            assert ev.main([kind, "--preset", name, "--dry-run", "seed=3"]) == 0, (kind, name)
            out = yaml.safe_load(capsys.readouterr().out)
            want = json.loads(json.dumps(dataclasses.asdict(ev.build_config(cls, presets, name, ["seed=3"]))))
            assert (out["kind"], out["preset"], out["note"], out["options"]) == (kind, name, presets[name][1], want)
            assert out["options"]["seed"] == 3 and out["overrides"] == ["seed=3"]
    assert ev.main(["finetune", "--preset", "nope", "--dry-run"]) == 2


def test_protocol_constants_match_their_sources():
    "Item by item (issue 20): each constant as its source script or config writes it, and the unverified parts labelled"
    ft = {k: ev.build_config(ev.FinetuneConfig, ev.FINETUNE_PRESETS, k, []) for k in ("imagenet-mae-vitb", "imagenet-mae-vitl", "imagenet-mmae-vitl")}
    row = lambda c: (c.lr, c.layer_decay, c.drop_path, c.epochs, c.batch_size)
    assert row(ft["imagenet-mae-vitb"]) == (5e-4, 0.65, 0.1, 100, 1024)      # facebookresearch/mae FINETUNE.md, ViT-B
    assert row(ft["imagenet-mae-vitl"]) == (1e-3, 0.75, 0.2, 50, 1024)       # ... ViT-L: blr 1e-3
    assert row(ft["imagenet-mmae-vitl"]) == (5e-4, 0.65, 0.1, 100, 2048)     # yifanzhang-pro/M-MAE finetune.sh
    assert "M-MAE" not in ev.FINETUNE_PRESETS["imagenet-mae-vitl"][1] and "unverified" in ev.FINETUNE_PRESETS["imagenet-mmae-vitl"][1]
    c = ev.DETECTRON2_CONFIG                                                  # MoCo detection/configs (R50-C4, 2x)
    assert (c["MODEL.RESNETS.NORM"], c["SOLVER.MAX_ITER"], c["SOLVER.STEPS"], c["SOLVER.BASE_LR"], c["SOLVER.IMS_PER_BATCH"]) == \
           ("naiveSyncBN", 180000, [120000, 160000], 0.02, 16)
    assert "unverified" in ev.DETECTRON2_NOTE and "2x" in ev.DETECTRON2_NOTE
    assert all("unverified" in note for _, note in ev.SEMISUP_PRESETS.values())
    assert all("unverified" in note and "1e-4" in note for _, note in ev.SELECT_PRESETS.values())


def one_line(capsys, argv, *words):
    "`mssl-eval argv` in process: exit 2 and one stderr line holding every one of `words`"
    assert ev.main([str(a) for a in argv]) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), (argv, err)
    assert "Traceback" not in err[0]
    return err[0]


def test_protocol_options_are_range_checked_when_built(runs, capsys):
    "Issue 22, part 4: every option outside its range (or its choices) is one line naming it and what it must be, before any data is read"
    cases = [("knn", "ks=[0]", "ks=[0]"), ("knn", "ks=[]", "ks=[]"), ("knn", "temperature=0", "temperature=0.0"),
             ("linear", "train_fraction=1.5", "train_fraction=1.5"), ("knn", "val_fraction=0", "val_fraction=0"),
             ("linear", "epochs=0", "epochs=0"), ("semisup", "epochs=-1", "epochs=-1"), ("finetune", "max_steps=-1", "max_steps=-1"),
             ("knn", "feature_batch=0", "feature_batch=0"), ("linear", "lr=-1", "lr=-1"), ("linear", "crop_scale=[0.5,0.1]", "crop_scale"),
             ("select", "lidar_views=1", "lidar_views=1"), ("coco", "iterations=0", "iterations=0"), ("knn", "temperature=.nan", "temperature=nan"),
             ("knn", "device=gpu", "cuda:N"), ("select", "space=foo", "embedding"), ("finetune", "opt=foo", "timm's registry"),
             ("finetune", "auto_augment=bogus", "rand-m9-mstd0.5-inc1")]
    for kind, override, shown in cases:
        one_line(capsys, [kind, runs["a"], override], shown, "is not allowed", "must be")
        one_line(capsys, [kind, "--dry-run", override], shown)                  # refused before anything else happens
    with pytest.raises(ev.EvalError, match="epochs=0"): ev.LinearConfig(epochs=0)   # built in code: the same check
    for kind, cls, presets in ((k, c, p) for k, (c, p, _) in ev._KINDS.items()):  # every preset is in range
        for name in presets: ev.check_options(ev.build_config(cls, presets, name))
    one_line(capsys, ["knn", runs["a"], f"root={SAMPLE}", "ks=[20,100000]"], "k=100000", "memory bank", "lower ks")


def test_broken_yaml_override_is_one_line(runs, capsys):
    for bad in ("epochs=[1", "ks={a: b", "root='x"):
        key = bad.split("=")[0]
        one_line(capsys, ["knn" if key != "epochs" else "linear", runs["a"], bad], f"override {bad!r}", "not valid YAML", f"{key}=")
    r = subprocess.run([str(Path(sys.executable).parent / "mssl-eval"), "linear", str(runs["a"]), "epochs=[1"], capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)   # the real console script
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not valid YAML" in r.stderr, r.stderr


def test_coco_ground_truth_and_detections_are_checked_entry_by_entry(tmp_path, capsys):
    "A bad later entry, a string bbox or score, a NaN or negative box, an empty annotation list: one line, exit 2, no output file"
    root = ev.make_synthetic_coco(tmp_path / "coco", splits={"val": 3}, size=64)
    gt = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    dets = ev.oracle_detections(gt, masks=False)
    assert len(gt["annotations"]) >= 3 and len(dets) >= 3
    def variant(name, g=None, d=None):
        (tmp_path / f"{name}-gt.json").write_text(json.dumps(g if g is not None else gt))
        (tmp_path / f"{name}-dets.json").write_text(json.dumps(d if d is not None else dets))
        return ["coco-score", "--gt", tmp_path / f"{name}-gt.json", "--detections", tmp_path / f"{name}-dets.json",
                "--output", tmp_path / f"{name}-out.json"]
    def gt_with(i, drop=None, **set_):
        anns = [dict(a) for a in gt["annotations"]]
        if drop: anns[i].pop(drop)
        anns[i].update(set_)
        return {**gt, "annotations": anns}
    def dets_with(i, **set_): return [dict(d, **set_) if j == i else d for j, d in enumerate(dets)]
    last = len(gt["annotations"]) - 1
    cases = {"no-area": (gt_with(last, drop="area"), None, ["annotation entry", "lacks area"]),
             "no-id": (gt_with(last, drop="id"), None, [f"annotation entry {last}", "lacks id"]),
             "gt-nan-box": (gt_with(1, bbox=[1.0, 2.0, float("nan"), 3.0]), None, ["annotation entry 1", "non-finite"]),
             "gt-negative": (gt_with(1, bbox=[1.0, 2.0, -4.0, 3.0]), None, ["negative width or height"]),
             "empty": ({**gt, "annotations": []}, None, ["annotation list is empty"]),
             "det-string-box": (None, dets_with(2, bbox="1,2,3,4"), ["entry 2", "bbox must be [x, y, width, height]"]),
             "det-string-nums": (None, dets_with(2, bbox=["1", 2, 3, 4]), ["entry 2", "bbox must hold numbers"]),
             "det-string-score": (None, dets_with(2, score="0.9"), ["entry 2", "score must be a finite number"]),
             "det-nan-box": (None, dets_with(1, bbox=[float("nan"), 0, 3, 4]), ["entry 1", "non-finite"]),
             "det-negative": (None, dets_with(1, bbox=[0, 0, 3, -4]), ["entry 1", "negative width or height"])}
    for name, (g, d, words) in cases.items():
        one_line(capsys, variant(name, g, d), *words)
        assert not (tmp_path / f"{name}-out.json").exists(), name
    assert ev.main([str(a) for a in variant("good")]) == 0 and (tmp_path / "good-out.json").exists()


def test_make_synthetic_coco_checks_its_sizes(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for argv, words in ((["--size", "10"], ["size=10", "64..2048"]), (["--size", "100000"], ["size=100000"]),
                        (["--train", "0"], ["'train': 0", "--train/--val"]), (["--val", "-2"], ["'val': -2"])):
        one_line(capsys, ["make-synthetic-coco", tmp_path / "new", *argv], *words)
        assert not (tmp_path / "new").exists()
    one_line(capsys, ["make-synthetic-coco", tmp_path / "afile"], "is a file")
    assert (tmp_path / "afile").read_text() == "x"
    with pytest.raises(ev.EvalError, match="objects"): ev.make_synthetic_coco(tmp_path / "o", objects=(3, 2))


def test_outputs_never_replace_a_file_mssl_eval_did_not_write(runs, tmp_path, capsys):
    "Issue 22, part 3: --output / -o over another run's checkpoint, under a regular file or over another kind: refused first, bytes unchanged"
    import hashlib
    root = ev.make_synthetic_coco(tmp_path / "coco", splits={"val": 2}, size=64)
    gt = root / "annotations" / "instances_val2017.json"
    (tmp_path / "dets.json").write_text(json.dumps(ev.oracle_detections(json.loads(gt.read_text()), masks=False)))
    score = ["coco-score", "--gt", gt, "--detections", tmp_path / "dets.json"]
    ckpt = Path(runs["a"])                                               # another run's checkpoint (random_init_run returns it)
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()
    before = digest(ckpt)
    for argv in ([*score, "--output", ckpt], ["knn", runs["a"], "--output", ckpt], ["linear", runs["a"], "--output", ckpt],
                 ["export-detectron2", runs["a"], "-o", ckpt]):
        one_line(capsys, argv, str(ckpt), "did not write it", "--overwrite")
    one_line(capsys, [*score, "--output", ckpt / "r.json"], "is a file, not a folder")
    one_line(capsys, [*score, "--output", tmp_path], "is a folder")
    assert digest(ckpt) == before and not list(ckpt.parent.glob(".*.tmp"))
    r = subprocess.run([str(Path(sys.executable).parent / "mssl-eval"), *map(str, score), "--output", str(ckpt)], capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)          # the real console script
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--overwrite" in r.stderr, r.stderr
    assert digest(ckpt) == before
    out = tmp_path / "score.json"                                        # its own output: replaced, atomically
    for _ in range(2): assert ev.main([str(a) for a in [*score, "--output", out]]) == 0
    assert json.loads(out.read_text())["kind"] == "coco-score"
    one_line(capsys, ["knn", runs["a"], "--output", out], "did not write it")   # another kind of output is not its own
    (tmp_path / "notes.txt").write_text("mine")
    one_line(capsys, [*score, "--output", tmp_path / "notes.txt"], "--overwrite")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert ev.main([str(a) for a in [*score, "--output", tmp_path / "notes.txt", "--overwrite"]]) == 0
    assert json.loads((tmp_path / "notes.txt").read_text())["kind"] == "coco-score"


def test_detectron2_export_is_recognised_without_running_code(tmp_path):
    (tmp_path / "ours.pkl").write_bytes(pickle.dumps({"model": {"stem.conv1.weight": np.zeros((2, 3), np.float32)},
                                                      "__author__": "mssl-workbench", "matching_heuristics": True}))
    assert ev.is_detectron2_export(tmp_path / "ours.pkl")
    class Boom:
        def __reduce__(self): return (os.remove, (str(tmp_path / "ours.pkl"),))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"model": Boom(), "__author__": "mssl-workbench"}))
    assert not ev.is_detectron2_export(tmp_path / "evil.pkl") and (tmp_path / "ours.pkl").exists()
    torch.save({"model": {}}, tmp_path / "step.pt")
    assert not ev.is_detectron2_export(tmp_path / "step.pt")
