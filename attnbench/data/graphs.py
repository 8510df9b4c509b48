"""Graph data for node classification: the Planetoid Cora ``.npz`` and a planted-partition
generator. Both return a :class:`Graph` whose edges follow the ``Ctx.edges`` convention:
(2, E) long, row 0 the query (target) node, row 1 the key (source) node it attends."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnbench.data.text import DataError, one_line, unreadable

CORA_KEYS = ("x", "y", "edge_index", "train_idx", "val_idx", "test_idx")
NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (or an empty one)
CORA_HELP = (
    "put cora_planetoid.npz (arrays x, y, edge_index, train_idx, val_idx, test_idx) "
    "under <data_dir>/graph/ (set ATTNBENCH_DATA or data_dir=...); it is converted "
    "from the Planetoid files at https://github.com/kimiyoung/planetoid, see "
    "shared/data/graph/README.md"
)


@dataclass
class Graph:
    x: Tensor  # (N, F) float node features
    y: Tensor  # (N,) long labels
    edges: Tensor  # (2, E) long [query node, key node]
    splits: dict[str, Tensor]  # split -> (N,) bool mask

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)


def _split_mask(idx: np.ndarray, n: int, path: Path, key: str) -> Tensor:
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or len(idx) == 0:
        raise DataError(
            f"{path}: {key} has shape {idx.shape} ({idx.dtype}); expected a "
            "non-empty 1-D integer array of node ids"
        )
    if idx.min() < 0 or idx.max() >= n:
        raise DataError(f"{path}: {key} holds node ids outside 0..{n - 1}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(idx.astype(np.int64))] = True
    return mask


def load_planetoid_npz(path: Path) -> Graph:
    """Cora (Planetoid) from the converted ``.npz``; see shared/data/graph/README.md."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise DataError(f"missing data file {path}; {CORA_HELP}") from None
    except OSError as e:
        raise unreadable(path, e) from None
    # Check the zip signature first: on anything else np.load tries a pickle and says
    # "contains pickled data" even for plain garbage.
    if magic not in NPZ_MAGIC:
        what = "is empty" if not magic else f"starts with bytes {magic.hex()}"
        raise DataError(
            f"{path}: not a readable .npz ({what}; an .npz is a zip archive, which starts "
            f"with {NPZ_MAGIC[0].hex()}); {CORA_HELP}"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: not a readable .npz ({one_line(e)}); the file is truncated or "
            f"corrupt: {CORA_HELP}"
        ) from None
    missing = [k for k in CORA_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path}: lacks array(s) {missing}; expected {', '.join(CORA_KEYS)}")
    x, y, ei = arrays["x"], arrays["y"], arrays["edge_index"]
    if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: x has shape {x.shape} ({x.dtype}); expected numbers (nodes, features)"
        )
    n = x.shape[0]
    if y.shape != (n,) or y.dtype.kind not in "iu" or y.min() < 0:
        raise DataError(
            f"{path}: y has shape {y.shape} ({y.dtype}); expected ({n},) non-negative class ids"
        )
    if ei.ndim != 2 or ei.shape[0] != 2 or ei.dtype.kind not in "iu":
        raise DataError(
            f"{path}: edge_index has shape {ei.shape} ({ei.dtype}); expected (2, E) integers"
        )
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        raise DataError(f"{path}: edge_index holds node ids outside 0..{n - 1}")
    splits = {
        s: _split_mask(arrays[f"{s}_idx"], n, path, f"{s}_idx") for s in ("train", "val", "test")
    }
    # the file lists (source, target); the query is the target: flip the rows
    edges = torch.from_numpy(ei.astype(np.int64)).flip(0).contiguous()
    return Graph(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), edges, splits
    )


def planted_partition(
    communities: int = 4,
    size: int = 100,
    p_in: float = 0.1,
    p_out: float = 0.01,
    features: int = 16,
    signal: float = 0.5,
    seed: int = 0,
    fractions: tuple[float, float] = (0.2, 0.2),
) -> Graph:
    """A stochastic block model: ``communities`` blocks of ``size`` nodes, an edge inside a
    block with probability p_in and across with p_out (undirected, no self-loops). Labels
    are the blocks. Features are a per-block random ±1 prototype times ``signal`` plus unit
    Gaussian noise, weak enough that a node alone is often misread and its neighbours help.
    A random ``fractions`` of the nodes are train and val, the rest test."""
    g = torch.Generator().manual_seed(seed)
    n = communities * size
    y = torch.arange(communities).repeat_interleave(size)  # (N,)
    same = y[:, None] == y[None, :]
    prob = torch.where(same, p_in, p_out)  # (N, N)
    upper = (torch.rand(n, n, generator=g) < prob).triu(diagonal=1)
    adj = upper | upper.T
    edges = adj.nonzero().T.contiguous()  # (2, E) both directions, sorted by query node
    protos = torch.randint(0, 2, (communities, features), generator=g).float() * 2 - 1
    x = signal * protos[y] + torch.randn(n, features, generator=g)
    order = torch.randperm(n, generator=g)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    splits = {}
    for name, part in (
        ("train", order[:n_train]),
        ("val", order[n_train : n_train + n_val]),
        ("test", order[n_train + n_val :]),
    ):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[part] = True
        splits[name] = mask
    return Graph(x, y, edges, splits)
