"""Throughput of the two-view `byol` augmentation: the workbench's batched pipeline vs a per-image PIL pipeline.

Both read the same generated ImageNet-layout folder of 224-px JPEGs with the same DataLoader workers and batch size:

- PIL (the way the official Matrix-SSL / MEC / MoCo v3 code does it): torchvision.datasets.ImageFolder, each worker
  opens the image with PIL and runs RandomResizedCrop, ColorJitter, RandomGrayscale, GaussianBlur (PIL ImageFilter),
  Solarize (PIL ImageOps), flip, ToTensor and Normalize twice per image;
- batched (mssl_workbench.data.augment, .folders): workers decode with torchvision.io.decode_jpeg and take the two random resized crops
  (uint8); the main process runs MultiViewAugment on the whole uint8 batch (GPU when present, else CPU).

    python benchmarks/augment.py [--quick] [--images 2000] [--workers 2] [--batch 128] [--threads N] [--out benchmarks/results/augment.json]

Images/s counts source images; each yields two views.
"""
import argparse, json, os, platform, random, shutil, tempfile, time, warnings
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import ImageFilter, ImageOps
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from mssl_workbench.data.augment import IMAGENET_MEAN, IMAGENET_STD, create_augment
from mssl_workbench.data.datasets import create_dataset
from mssl_workbench.data.folders import make_imagefolder


class PILBlur:
    "Gaussian blur with sigma ~ U[0.1, 2] through PIL's ImageFilter, applied with probability p"
    def __init__(self, p): self.p = p
    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0))) if random.random() < self.p else img

class PILSolarize:
    "PIL's solarize (threshold 128) with probability p"
    def __init__(self, p): self.p = p
    def __call__(self, img): return ImageOps.solarize(img) if random.random() < self.p else img

def pil_byol_view(blur_p, solarize_p, size=224):
    return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                      T.RandomGrayscale(p=0.2), PILBlur(blur_p), PILSolarize(solarize_p),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

class TwoViews:
    "The asymmetric pair: view 1 blur 1.0 / solarize 0, view 2 blur 0.1 / solarize 0.2"
    def __init__(self, size=224): self.t1, self.t2 = pil_byol_view(1.0, 0.0, size), pil_byol_view(0.1, 0.2, size)
    def __call__(self, img): return self.t1(img), self.t2(img)

def run_pil(root, workers, batch):
    ds = ImageFolder(str(root / "train"), transform=TwoViews())
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False)
    n, t0 = 0, time.perf_counter()
    for (v1, v2), _ in loader: n += len(v1)
    return n, time.perf_counter() - t0, tuple(v1.shape)

def run_batched(root, workers, batch, device, cache_dir):
    ds = create_dataset("imagefolder", root=root, size=224, views=2, crop_scale=(0.2, 1.0), cache_dir=cache_dir)
    aug = create_augment("byol", size=224, in_chans=3, views=2).to(device)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False,
                        pin_memory=device.type == "cuda")
    n, t0 = 0, time.perf_counter()
    for x, _ in loader:
        v1, v2 = aug(x.to(device, non_blocking=True)); n += len(v1)
    if device.type == "cuda": torch.cuda.synchronize()
    return n, time.perf_counter() - t0, tuple(v1.shape)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="400 images, one repeat: a smoke run (worker start-up weighs more, so the ratio is lower)")
    ap.add_argument("--images", type=int, default=2000, help="images in the generated folder (10 classes)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same for both pipelines")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="passes per pipeline, alternating; the best is reported")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the main process (default: 1 on CPU, so that it does not spin against the workers)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the batched ops run")
    ap.add_argument("--out", default="benchmarks/results/augment.json")
    args = ap.parse_args()
    if args.quick: args.images, args.repeats = 400, 1
    device = torch.device(args.device)
    torch.set_num_threads(args.threads or (1 if device.type == "cpu" else torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="mssl-augment-bench-"))
    try:
        t0 = time.perf_counter()
        root = make_imagefolder(work / "imagenet-like", per_class={"train": args.images // 10}, num_classes=10, size=224)
        print(f"generated {args.images} JPEGs (224 px) in {time.perf_counter() - t0:.1f} s under {root}")
        results, load_before = {"pil": [], "batched": []}, os.getloadavg()
        for r in range(args.repeats):                       # alternate, so that load changes hit both alike
            results["pil"].append(run_pil(root, args.workers, args.batch))
            results["batched"].append(run_batched(root, args.workers, args.batch, device, work / "cache"))
        rows = []
        for name, label in [("pil", "per-image PIL (torchvision transforms)"), ("batched", f"batched uint8 -> {device.type} (mssl_workbench)")]:
            n, secs, shape = min(results[name], key=lambda t: t[1])
            rows.append(dict(pipeline=label, images=n, seconds=round(secs, 2), images_per_s=round(n / secs, 1),
                             views_per_s=round(2 * n / secs, 1), view_shape=list(shape)))
        speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
        print(f"\ntwo-view byol recipe, {args.images} JPEGs at 224 px, {args.workers} workers, batch {args.batch}, "
              f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, best of {args.repeats}")
        print(f"| {'pipeline':45s} | {'images':>6s} | {'seconds':>7s} | {'images/s':>8s} | {'views/s':>8s} |")
        print(f"|{'-' * 47}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 10}|")
        for r in rows:
            print(f"| {r['pipeline']:45s} | {r['images']:6d} | {r['seconds']:7.2f} | {r['images_per_s']:8.1f} | {r['views_per_s']:8.1f} |")
        print(f"speed-up: {speedup:.2f}x")
        out = dict(benchmark="augment", recipe="byol", views=2, size=224, images=args.images, workers=args.workers,
                   batch=args.batch, device=str(device), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                   repeats=args.repeats, quick=args.quick, torch=torch.__version__, python=platform.python_version(),
                   rows=rows, speedup=round(speedup, 2), load_average_before=load_before, load_average_after=os.getloadavg(), all_seconds={k: [round(t[1], 2) for t in v] for k, v in results.items()})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
        print("wrote", args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
