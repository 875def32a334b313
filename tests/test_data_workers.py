"""The data path with real DataLoader workers (which nbdev_test cannot start): corrupt files are skipped and counted
across worker processes, the generated ImageNet-layout tree loads as users load ImageNet, and the file-list cache is used."""
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

import mssl_workbench.data.folders as data
from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
from mssl_workbench.data.augment import create_augment
from mssl_workbench.data.datasets import create_dataset
from mssl_workbench.data.folders import make_imagefolder, scan_image_folder


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    "A 4-class ImageNet-layout tree of 64-px JPEGs with two corrupt files in the train split"
    root = make_imagefolder(tmp_path_factory.mktemp("imagenet") / "tiny", per_class={"train": 8, "val": 3},
                            num_classes=4, size=64, seed=int(torch.randint(0, 1000, ())))
    (root / "train" / "n00000002" / "zz_broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 garbage, not a JPEG")
    good = next((root / "train" / "n00000003").glob("*.JPEG")).read_bytes()
    (root / "train" / "n00000003" / "zz_truncated.JPEG").write_bytes(good[: len(good) // 3])
    return root


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_corrupt_files_skipped_and_counted_across_workers(tree, tmp_path, context):
    ds = create_dataset("imagefolder", root=tree, size=40, views=2, cache_dir=tmp_path)
    assert len(ds) == 34 and ds.skipped == 0
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context=context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.UnreadableImageWarning)
        for epoch in range(2):   # the second epoch meets the flagged files again: still counted once
            n = 0
            for x, y in loader:
                assert x.dtype == torch.uint8 and x.shape[1:] == (2, 3, 40, 40)
                assert y.dtype == torch.int64 and ((0 <= y) & (y < 4)).all()
                n += len(x)
            assert n == len(ds)   # a bad file's slot is filled by the next readable image
    assert ds.skipped == 2
    assert sorted(p.rsplit("/", 1)[1] for p in ds.skipped_files) == ["zz_broken.JPEG", "zz_truncated.JPEG"]


def test_imagenet_layout_through_the_user_path(tree, tmp_path):
    "Workers crop two views; the batch goes through the byol augment; validation gets the centre crop"
    train = create_dataset("imagefolder", root=tree, split="train", size=48, views=2, cache_dir=tmp_path)
    val = create_dataset("imagefolder", root=tree, split="val", size=48, cache_dir=tmp_path)
    assert train.classes == val.classes == tuple(f"n{c:08d}" for c in range(4)) and train.num_classes == 4
    aug = create_augment("byol", size=48, in_chans=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.UnreadableImageWarning)
        x, y = next(iter(DataLoader(train, batch_size=16, shuffle=True, num_workers=2)))
    v1, v2 = aug(x)
    assert v1.shape == v2.shape == (16, 3, 48, 48) and v1.dtype == torch.float32
    assert not torch.equal(v1, v2)
    xv, yv = next(iter(DataLoader(val, batch_size=12, num_workers=2)))
    assert xv.shape == (12, 3, 48, 48) and xv.dtype == torch.uint8
    assert yv.tolist() == [c for c in range(4) for _ in range(3)]
    # the same images decoded again are the same (validation is deterministic)
    xv2, _ = next(iter(DataLoader(val, batch_size=12, num_workers=0)))
    assert torch.equal(xv, xv2)


def test_resize_mode_feeds_the_4d_augment_path(tree, tmp_path):
    ds = create_dataset("imagefolder", root=tree, size=32, cache_dir=tmp_path)   # train, no views: fixed-size images
    assert ds.mode == "resize"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.UnreadableImageWarning)
        x, _ = next(iter(DataLoader(ds, batch_size=10, shuffle=True, num_workers=2)))
    assert x.shape == (10, 3, 32, 32)
    views = create_augment("simclr", size=24, in_chans=3, views=3)(x)
    assert len(views) == 3 and all(v.shape == (10, 3, 24, 24) for v in views)


def test_file_list_cache_is_used(tree, tmp_path, monkeypatch):
    first = scan_image_folder(tree / "train", cache_dir=tmp_path)
    calls, walk = [], data._walk_images
    monkeypatch.setattr(data, "_walk_images", lambda *a: calls.append(a) or walk(*a))
    assert scan_image_folder(tree / "train", cache_dir=tmp_path) == first and not calls   # served from the cache
    assert scan_image_folder(tree / "train", cache_dir=tmp_path, use_cache=False) == first and len(calls) == 4  # listed


def test_fashion_mnist_with_workers_and_fraction():
    ds = create_dataset("fashion_mnist", root=SAMPLE_FASHION_MNIST, fraction=0.01, seed=7)   # 1,000 per class
    assert len(ds) == 100 and torch.bincount(ds.labels).tolist() == [10] * 10
    assert torch.equal(ds.images, create_dataset("fashion_mnist", root=SAMPLE_FASHION_MNIST, fraction=0.01, seed=7).images)
    x, y = next(iter(DataLoader(ds, batch_size=32, shuffle=True, num_workers=2)))
    assert x.dtype == torch.uint8 and x.shape == (32, 1, 28, 28) and y.shape == (32,)
    v1, v2 = create_augment("small", size=28, in_chans=1)(x)
    assert v1.shape == (32, 1, 28, 28) and not torch.equal(v1, v2)


def test_val_split_with_fewer_classes_keeps_the_training_labels(tmp_path):
    "issue 11: val/ lacks a training class; through DataLoader workers every val label still names its folder's class"
    import shutil
    from pathlib import Path
    torch.set_num_threads(1)
    root = make_imagefolder(tmp_path / "tree", per_class={"train": 2, "val": 3}, num_classes=4, size=24)
    shutil.rmtree(root / "val" / "n00000001")                       # a class missing from val shifts every later label
    train = create_dataset("imagefolder", root=root, size=16, cache_dir=tmp_path)
    val = create_dataset("imagefolder", root=root, split="val", size=16, cache_dir=tmp_path)
    assert val.classes == train.classes and val.num_classes == 4
    seen = []
    for x, y in DataLoader(val, batch_size=4, num_workers=2):
        seen += y.tolist()
    assert sorted(seen) == sorted(val.labels.tolist()) and set(seen) == {0, 2, 3}
    assert all(Path(p).parent.name == train.classes[l] for p, l in zip(val.paths, val.labels.tolist()))
    (root / "val" / "n00000009").mkdir()
    shutil.copy(val.paths[0], root / "val" / "n00000009" / "x.JPEG")
    with pytest.raises(data.ImageFolderError, match="n00000009 not among the 4 training classes"):
        create_dataset("imagefolder", root=root, split="val", cache_dir=tmp_path)


def test_no_readable_image_is_one_error_before_any_worker_starts(tmp_path):
    "a folder of undecodable files: NoReadableImageError (a ValueError: the CLI's one line) when the set is built"
    for c in ("a", "b"):
        (tmp_path / "bad" / "train" / c).mkdir(parents=True)
        (tmp_path / "bad" / "train" / c / "0.JPEG").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.UnreadableImageWarning)
        with pytest.raises(data.NoReadableImageError, match="no readable image in .*all 2 files failed to decode") as e:
            create_dataset("imagefolder", root=tmp_path / "bad", cache_dir=tmp_path)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
