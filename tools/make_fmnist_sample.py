"""Build data/fashion-mnist-sample from the full Fashion-MNIST (see data/README.md).

    python tools/make_fmnist_sample.py [FULL_DIR]   # default: /usr/share/datasets/fashion-mnist

Stratified and seeded: per class, the first `n` of a seeded random permutation of that class's
indices, kept in their original order. Re-running gives byte-identical files.
"""
import sys
from pathlib import Path

import torch

from mssl_workbench.data.fashion_mnist import FASHION_MNIST_FILES, SAMPLE_FASHION_MNIST, load_fashion_mnist, write_idx

PER_CLASS = {"train": 1000, "test": 200}
SEED = 20261121

def stratified(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values

if __name__ == "__main__":
    full = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/usr/share/datasets/fashion-mnist")
    SAMPLE_FASHION_MNIST.mkdir(parents=True, exist_ok=True)
    for split, n in PER_CLASS.items():
        data = load_fashion_mnist(split, full, allow_sample=False)
        keep = stratified(data.labels, n, SEED)
        img, lab = FASHION_MNIST_FILES[split]
        write_idx(SAMPLE_FASHION_MNIST / f"{img}.gz", data.images[keep])
        write_idx(SAMPLE_FASHION_MNIST / f"{lab}.gz", data.labels[keep].to(torch.uint8))
        print(split, len(keep), "images written to", SAMPLE_FASHION_MNIST)
