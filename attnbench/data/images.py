"""Image readers (MNIST IDX, CIFAR-10 python batches, scikit-learn's 8x8 digits) and a
dataset that hands out whole batches by tensor indexing.

Every loader returns ``{split: (images uint8 (N, C, H, W), labels long (N,))}`` for the
splits train/val/test. Images stay uint8 until a batch reaches the model (4x less memory
than float; the embedder scales them).
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnbench.data.text import DataError, find_file, how_to_replace, one_line, unreadable

Splits = dict[str, tuple[Tensor, Tensor]]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_HELP = (
    "put the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, gzipped or not) under "
    "<data_dir>/images/mnist/ (set ATTNBENCH_DATA or data_dir=...); they are at "
    "https://yann.lecun.com/exdb/mnist/ and its mirrors"
)
CIFAR_HELP = (
    "put CIFAR-10's python batches (data_batch_1..data_batch_5, test_batch) under "
    "<data_dir>/images/cifar-10-batches-py/ (set ATTNBENCH_DATA or data_dir=...); "
    "unpack cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"
)
VAL_FROM_TRAIN = 5000  # mnist / cifar10 have no val split: the last 5000 train images


class BatchDataset(Dataset):
    """Equal-shape tensors indexed a whole batch at a time (``__getitems__``): the
    DataLoader's batch sampler hands over the indices and one gather builds the batch."""

    def __init__(self, **tensors: Tensor):
        self.tensors = tensors
        self.size = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: t[idx] for k, t in self.tensors.items()}

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: t[i] for k, t in self.tensors.items()}


def identity_collate(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return batch


# ----------------------------------------------------------------------------- MNIST / IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` accepted): magic 0x0000 <dtype> <ndim>, ndim big-endian uint32
    sizes, then the data."""
    path = Path(path)
    fix = how_to_replace(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except gzip.BadGzipFile:
        raise DataError(
            f"{path}: cannot read (not gzip-compressed although named .gz); drop the .gz "
            f"suffix if it is a plain IDX file, else {fix}"
        ) from None
    except (EOFError, zlib.error):
        raise DataError(
            f"{path}: the compressed data ends early or is corrupt (a truncated download?); {fix}"
        ) from None
    except OSError as e:
        raise unreadable(path, e) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (magic {raw[:4].hex() or 'missing: the file is empty'}, "
            f"expected 00 00 <type> <ndim>, e.g. 00000803 for MNIST images); {fix}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(
            f"{path}: IDX header truncated ({len(raw)} bytes, ndim={ndim}); the file is "
            f"truncated or corrupt, {fix}"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw)} bytes, expected {expected} for an IDX array of "
            f"shape {shape} ({dtype}); the file is truncated or corrupt, {fix}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _mnist_pair(folder: Path, images_stem: str, labels_stem: str) -> tuple[Tensor, Tensor]:
    ipath = find_file(folder, images_stem, MNIST_HELP)
    lpath = find_file(folder, labels_stem, MNIST_HELP)
    images, labels = read_idx(ipath), read_idx(lpath)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{ipath}: IDX array of shape {images.shape} ({images.dtype}); "
            "expected uint8 images (N, rows, cols)"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != len(images):
        raise DataError(
            f"{lpath}: labels of shape {labels.shape} ({labels.dtype}); expected "
            f"({len(images)},) uint8 to match {ipath.name}"
        )
    if len(images) == 0:
        raise DataError(f"{ipath}: no images; {MNIST_HELP}")
    if labels.max() > 9:
        raise DataError(f"{lpath}: label {int(labels.max())} out of range; expected 0..9")
    return (
        torch.from_numpy(images.copy()).unsqueeze(1),  # (N, 1, H, W)
        torch.from_numpy(labels.astype(np.int64)),
    )


def _carve_val(train: tuple[Tensor, Tensor]) -> tuple[tuple[Tensor, Tensor], ...]:
    x, y = train
    n_val = min(VAL_FROM_TRAIN, len(x) // 10 or 1)
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def load_mnist(folder: Path) -> Splits:
    folder = Path(folder)
    train = _mnist_pair(folder, *MNIST_FILES["train"])
    test = _mnist_pair(folder, *MNIST_FILES["test"])
    train, val = _carve_val(train)
    return {"train": train, "val": val, "test": test}


# ----------------------------------------------------------------------------- CIFAR-10


class _ArraysOnly(pickle.Unpickler):
    """CIFAR batches are pickled dicts of numpy arrays and lists: refuse any other global
    (an untrusted pickle could otherwise run code)."""

    _ALLOWED = {"_reconstruct", "ndarray", "dtype", "_frombuffer", "scalar"}

    def find_class(self, module: str, name: str):
        if (
            module.split(".")[0] == "numpy"
            and name in self._ALLOWED
            or (module, name) == ("_codecs", "encode")
        ):  # bytes in protocol-2 pickles
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    """One CIFAR-10 python batch: {b'data': (N, 3072) uint8, b'labels': [N ints]}."""
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"missing data file {path}; {CIFAR_HELP}") from None
    except OSError as e:
        raise unreadable(path, e) from None
    except Exception as e:  # a truncated / foreign pickle fails in many ways
        raise DataError(
            f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {one_line(e)}); "
            "expected a pickled dict with 'data' and 'labels'; replace it: unpack "
            "cifar-10-python.tar.gz again"
        ) from None
    if not isinstance(d, dict):
        raise DataError(
            f"{path}: holds a {type(d).__name__}; expected a dict with 'data' and 'labels'"
        )
    get = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in get or "labels" not in get:
        raise DataError(f"{path}: keys {sorted(get)}; expected 'data' and 'labels'")
    data, labels = np.asarray(get["data"]), np.asarray(get["labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(
            f"{path}: data of shape {data.shape} ({data.dtype}); expected uint8 (N, 3072)"
        )
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or len(data) == 0:
        raise DataError(
            f"{path}: {labels.shape} labels ({labels.dtype}) for {len(data)} images; "
            "expected one integer label per image and at least one image"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels outside 0..9")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # (N, 3, 32, 32)
    return images, torch.from_numpy(labels.astype(np.int64))


def load_cifar10(folder: Path) -> Splits:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"missing data folder {folder}; {CIFAR_HELP}")
    parts = [read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    train = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    train, val = _carve_val(train)
    return {"train": train, "val": val, "test": read_cifar_batch(folder / "test_batch")}


# ----------------------------------------------------------------------------- digits


def load_digits_splits(seed: int = 0) -> Splits:
    """scikit-learn's 1797 8x8 digits (bundled, no download), a fixed stratified
    70/15/15 train/val/test split. Pixel values are 0..16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, test_size=0.3, stratify=d.target, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=d.target[rest], random_state=seed)
    return {
        s: (x[torch.from_numpy(i)], y[torch.from_numpy(i)])
        for s, i in (("train", train), ("val", val), ("test", test))
    }
