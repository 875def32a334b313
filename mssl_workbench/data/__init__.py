"""Images in: Fashion-MNIST IDX files, ImageNet-layout folders, and the batched per-sample multi-view augmentation."""
