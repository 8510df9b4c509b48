"""Image readers (IDX, CIFAR pickles, digits) and the patch-sequence image task."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from conftest import fast_dev_run

from attnbench import registry
from attnbench.data.images import load_cifar10, load_digits_splits, load_mnist, read_idx
from attnbench.data.text import DataError
from attnbench.registry import ConfigError


def ImageClassification(**params):  # noqa: N802  (reads like the class)
    return registry.build("task", "image", **params)


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_mnist(folder, n_train: int = 40, n_test: int = 12, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


# ----------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader_round_trips_and_carves_val(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    splits = load_mnist(tmp_path / "mnist")
    images, labels = arrays["train"]
    # 40 train images: the last tenth (4) become val, in order
    assert splits["train"][0].shape == (36, 1, 28, 28)
    assert torch.equal(splits["train"][0][:, 0], torch.from_numpy(images[:36]))
    assert torch.equal(splits["val"][1], torch.from_numpy(labels[36:]).long())
    assert torch.equal(splits["test"][0][:, 0], torch.from_numpy(arrays["t10k"][0]))


def test_idx_truncated_file_names_file_and_sizes(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"x-idx3-ubyte.*expected 64"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x00\x00\x08\x03\x00"])
def test_idx_malformed_or_empty_is_data_error(tmp_path, content):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad-idx3-ubyte"):
        read_idx(path)


def test_idx_bad_gzip_is_data_error(tmp_path):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)


def test_mnist_label_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8), gz=True)
    with pytest.raises(DataError, match=r"t10k-labels.*expected \(12,\)"):
        load_mnist(folder)


def test_mnist_missing_files_say_where_they_go(tmp_path):
    with pytest.raises(DataError, match=r"images/mnist/train-images-idx3-ubyte\[\.gz\].*lecun"):
        load_mnist(tmp_path / "images" / "mnist")


# ----------------------------------------------------------------------------- CIFAR-10


def write_cifar(folder, n: int = 6, protocol: int = 2) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"batch_label": name.encode(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_reader(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, protocol=protocol)
    splits = load_cifar10(folder)
    assert splits["train"][0].shape == (27, 3, 32, 32) and splits["val"][0].shape[0] == 3
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)
    # channel-major rows: the first 1024 bytes are the red plane
    assert torch.equal(splits["test"][0][0, 0].flatten(), torch.from_numpy(raw[b"data"][0, :1024]))
    assert splits["test"][1].tolist() == raw[b"labels"]


def test_cifar_refuses_foreign_pickle_and_bad_shapes(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar(folder)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"data_batch_2.*expected uint8 \(N, 3072\)"):
        load_cifar10(folder)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump(ConfigError("x"), f)  # a class outside numpy: must not be imported
    with pytest.raises(DataError, match="data_batch_2.*not allowed"):
        load_cifar10(folder)
    (folder / "data_batch_2").write_bytes(b"")
    with pytest.raises(DataError, match="data_batch_2.*not a CIFAR-10"):
        load_cifar10(folder)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match=r"missing data file .*data_batch_2.*cifar"):
        load_cifar10(folder)


# ----------------------------------------------------------------------------- task


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b = load_digits_splits(), load_digits_splits()
    assert torch.equal(a["test"][0], b["test"][0])
    sizes = {s: len(y) for s, (_, y) in a.items()}
    assert sum(sizes.values()) == 1797 and sizes["train"] > 1200
    for s in ("val", "test"):  # stratified: every class present in proportion
        counts = torch.bincount(a[s][1], minlength=10)
        assert counts.min() >= 0.8 * counts.float().mean()
    flat = {s: {tuple(im.flatten().tolist()) + (int(y),) for im, y in zip(*a[s])} for s in a}
    assert len(flat["test"] & flat["train"]) < 5  # (a few digits are exact duplicates)


def test_patch_positions_are_the_2d_grid_and_patches_match_pixels():
    task = ImageClassification(data_dir=".", dataset="digits", patch=2, pooling="cls")
    task.setup()
    emb = task.build_embedder(16)
    batch = next(iter(task.dataloader("val")))
    x, ctx = emb(batch)
    b = batch["image"].size(0)
    assert x.shape == (b, 17, 16) and ctx.positions.shape == (b, 17, 2)
    pos = ctx.positions[0]
    assert pos.dtype == torch.long and pos[-1].tolist() == [-1, -1]  # CLS last
    assert pos[:-1].tolist() == [[r, c] for r in range(4) for c in range(4)]
    # patch k is the pixel block at (2*row, 2*col): rebuild it from the projection's input
    img = (batch["image"].float() / 16 - emb.mean) / emb.std
    k, (r, c) = 6, pos[6].tolist()
    expected = emb.proj(img[:, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(b, -1))
    assert torch.allclose(x[:, k], expected, atol=1e-6)


def test_mean_pooling_has_no_cls_and_bad_pooling_is_config_error():
    task = ImageClassification(data_dir=".", pooling="mean", patch=4)
    task.setup()
    x, ctx = task.build_embedder(8)(next(iter(task.dataloader("test"))))
    assert x.size(1) == 4 and ctx.positions[0].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    with pytest.raises(ConfigError, match="pooling"):
        ImageClassification(data_dir=".", pooling="max")
    with pytest.raises(ConfigError, match="does not divide"):
        ImageClassification(data_dir=".", patch=3).setup()


def test_train_batches_are_shuffled_per_epoch_and_eval_in_order():
    task = ImageClassification(data_dir=".", batch_size=32)
    task.setup()
    val = torch.cat([b["label"] for b in task.dataloader("val")])
    assert torch.equal(val, task.splits["val"].tensors["label"])
    loader = task.dataloader("train")
    first = next(iter(loader))["label"]
    loader.batch_sampler.sampler.set_epoch(1)
    assert not torch.equal(first, next(iter(loader))["label"])


@pytest.mark.parametrize("extra", [[], ["task.pooling=mean", "posenc=none"]])
def test_image_task_fast_dev_run(tmp_path, extra):
    summary = fast_dev_run(["task=image", "model=transformer", *extra], tmp_path)
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0 and "test/f1" in summary["metrics"]


def test_mnist_fast_dev_run_on_shared_data(tmp_path, shared_data):
    summary = fast_dev_run(
        ["task=image", "task.dataset=mnist", "model=transformer", f"data_dir={shared_data}"],
        tmp_path,
    )
    assert summary["plugins"]["task"]["dataset"] == "mnist"
    assert "test/acc" in summary["metrics"]


def test_mnist_fixture_fast_dev_run(tmp_path):
    write_mnist(tmp_path / "data" / "images" / "mnist", n_train=80)
    summary = fast_dev_run(
        ["task=image", "task.dataset=mnist", "task.patch=7", f"data_dir={tmp_path / 'data'}"],
        tmp_path / "run",
    )
    assert "test/acc" in summary["metrics"]


def test_shift_augmentation_translates_in_training_only():
    task = ImageClassification(data_dir=".", shift=1)
    task.setup()
    emb = task.build_embedder(8)
    img = torch.arange(16.0).view(1, 1, 4, 4).repeat(40, 1, 1, 1)
    padded = torch.nn.functional.pad(img[0], (1, 1, 1, 1))
    shifted = {
        (dy, dx): padded[:, 1 + dy : 5 + dy, 1 + dx : 5 + dx]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    seen = {k for o in emb.translate(img) for k, v in shifted.items() if torch.equal(o, v)}
    assert len(seen) > 3  # every output is one of the 9 shifts, and they vary per image
    assert all(any(torch.equal(o, v) for v in shifted.values()) for o in emb.translate(img))
    batch = next(iter(task.dataloader("val")))
    emb.eval()
    assert torch.equal(emb(batch)[0], emb(batch)[0])  # no augmentation at eval time
    with pytest.raises(ConfigError, match="shift"):
        ImageClassification(data_dir=".", shift=-1)
