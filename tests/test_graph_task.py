"""Graph readers (Planetoid .npz, planted partition) and the node-classification task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fast_dev_run

from attnbench import registry
from attnbench.data.graphs import load_planetoid_npz, planted_partition
from attnbench.data.text import DataError
from attnbench.registry import ConfigError


def write_npz(path, **changes) -> dict:
    """A 6-node path graph 0-1-2-3-4-5 with 3 features and 2 classes."""
    src = np.array([0, 1, 1, 2, 2, 3, 3, 4, 4, 5])
    dst = np.array([1, 0, 2, 1, 3, 2, 4, 3, 5, 4])
    arrays = {
        "x": np.eye(6, 3, dtype=np.uint8) + 1,
        "y": np.array([0, 0, 0, 1, 1, 1]),
        "edge_index": np.stack([src, dst]),
        "train_idx": np.array([0, 5]),
        "val_idx": np.array([1, 4]),
        "test_idx": np.array([2, 3]),
    }
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def edge_set(edges: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edges.T.tolist()))


def test_npz_reader(tmp_path):
    arrays = write_npz(tmp_path / "g.npz")
    g = load_planetoid_npz(tmp_path / "g.npz")
    assert g.x.dtype == torch.float32 and torch.equal(g.x, torch.from_numpy(arrays["x"]).float())
    # row 0 = query (the file's target), row 1 = key (the file's source)
    assert edge_set(g.edges) == {(int(d), int(s)) for s, d in arrays["edge_index"].T}
    assert g.splits["test"].nonzero().flatten().tolist() == [2, 3]
    assert not (g.splits["train"] & g.splits["val"]).any()
    write_npz(tmp_path / "d.npz", edge_index=np.array([[0, 2], [1, 3]]))  # directed
    assert load_planetoid_npz(tmp_path / "d.npz").edges.tolist() == [[1, 3], [0, 2]]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"edge_index": np.array([[0, 9], [9, 0]])}, "edge_index holds node ids outside 0..5"),
        ({"y": np.array([0, 1])}, r"y has shape \(2,\)"),
        ({"test_idx": None}, r"lacks array\(s\) \['test_idx'\]"),
        ({"val_idx": np.array([7])}, "val_idx holds node ids outside"),
        ({"edge_index": np.zeros((3, 2), np.int64)}, r"edge_index has shape \(3, 2\)"),
    ],
)
def test_npz_malformed(tmp_path, change, message):
    write_npz(tmp_path / "g.npz", **change)
    with pytest.raises(DataError, match=message):
        load_planetoid_npz(tmp_path / "g.npz")


def test_npz_empty_and_missing(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match="empty.npz: not a readable .npz"):
        load_planetoid_npz(tmp_path / "empty.npz")
    with pytest.raises(DataError, match=r"missing data file .*graph/cora_planetoid.npz.*planetoid"):
        load_planetoid_npz(tmp_path / "graph" / "cora_planetoid.npz")


def test_planted_partition_is_symmetric_and_clustered():
    g = planted_partition(communities=3, size=40, p_in=0.3, p_out=0.02, seed=5)
    assert g.num_nodes == 120 and torch.bincount(g.y).tolist() == [40, 40, 40]
    pairs = edge_set(g.edges)
    assert pairs == {(b, a) for a, b in pairs} and all(a != b for a, b in pairs)
    same = (g.y[g.edges[0]] == g.y[g.edges[1]]).float().mean()
    assert same > 0.7  # expected 0.3*39 / (0.3*39 + 0.02*80) ≈ 0.88
    masks = torch.stack(list(g.splits.values()))
    assert torch.equal(masks.sum(0), torch.ones(120, dtype=torch.long))  # a partition
    assert torch.equal(planted_partition(seed=5).edges, planted_partition(seed=5).edges)


def test_synthetic_neighbours_carry_the_label():
    """The features alone are weak; averaging over neighbours makes them strong."""
    g = planted_partition()
    protos = torch.stack([g.x[g.y == c].mean(0) for c in range(4)])  # (4, F)
    alone = ((g.x @ protos.T).argmax(1) == g.y).float().mean()
    agg = torch.zeros_like(g.x).index_add_(0, g.edges[0], g.x[g.edges[1]]) + g.x
    pooled = ((agg @ protos.T).argmax(1) == g.y).float().mean()
    assert alone < 0.85 and pooled > alone + 0.1


def task(**params):
    t = registry.build("task", "graph", data_dir=params.pop("data_dir", "."), **params)
    t.setup()
    return t


def test_task_batches_mask_the_split_and_share_the_graph():
    t = task()
    batches = {s: next(iter(t.dataloader(s))) for s in ("train", "val", "test")}
    for s, b in batches.items():
        assert b["x"].shape == (1, 400, 16) and torch.equal(b["mask"][0], t.graph.splits[s])
        assert t.num_samples(b) == int(t.graph.splits[s].sum())
    logits = torch.randn(1, 400, 4, requires_grad=True)
    b = batches["val"]
    preds, target = t.metric_inputs(logits, b)
    assert len(target) == t.num_samples(b) and torch.equal(target, t.graph.y[b["mask"][0]])
    # the loss only sees the split's nodes: no gradient reaches the others
    t.loss(logits, b).backward()
    touched = logits.grad.abs().sum(-1)[0] > 0
    assert torch.equal(touched, b["mask"][0])


def test_task_puts_edges_in_ctx_with_self_loops():
    t = task(self_loops=True)
    b = next(iter(t.dataloader("train")))
    x, ctx = t.build_embedder(8)(b)
    assert x.shape == (1, 400, 8) and ctx.edges is b["edges"]
    loops = ctx.edges[0] == ctx.edges[1]
    assert loops.sum() == 400 and torch.equal(ctx.edges[:, ~loops], planted_partition().edges)
    assert t.gives_edges and torch.equal(task().graph.edges, planted_partition().edges)


def test_bad_params():
    with pytest.raises(ConfigError, match="p_in"):
        task(p_in=1.5)
    with pytest.raises(DataError, match="task.dataset='pubmed'"):
        task(dataset="pubmed")


def test_cora_edges_match_the_npz(shared_data):
    t = task(dataset="cora", data_dir=str(shared_data))
    with np.load(shared_data / "graph" / "cora_planetoid.npz") as f:
        ei, y = f["edge_index"], f["y"]
        sizes = [len(f[f"{s}_idx"]) for s in ("train", "val", "test")]
    b = next(iter(t.dataloader("train")))
    assert edge_set(b["edges"]) == {(int(d), int(s)) for s, d in ei.T}
    assert b["edges"].size(1) == 10556 and torch.equal(t.graph.y, torch.from_numpy(y))
    assert [int(t.graph.splits[s].sum()) for s in ("train", "val", "test")] == sizes
    assert torch.allclose(b["x"][0].sum(1), torch.ones(2708))  # row-normalised bag of words


@pytest.mark.parametrize("attention", ["dot", "graph"])
def test_graph_task_fast_dev_run(tmp_path, attention):
    summary = fast_dev_run(
        ["task=graph", "model=transformer", f"attention={attention}", "posenc=none"], tmp_path
    )
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert summary["train_samples_per_s"] is None or summary["train_samples_per_s"] > 0


def test_graph_task_default_posenc_fast_dev_run(tmp_path):
    summary = fast_dev_run(["task=graph"], tmp_path)
    assert "test/f1" in summary["metrics"]


def test_cora_fast_dev_run(tmp_path, shared_data):
    summary = fast_dev_run(
        [
            "task=graph",
            "task.dataset=cora",
            "model=transformer",
            "posenc=none",
            f"data_dir={shared_data}",
        ],
        tmp_path,
    )
    assert "test/acc" in summary["metrics"]


def test_npz_fixture_fast_dev_run(tmp_path):
    (tmp_path / "data" / "graph").mkdir(parents=True)
    write_npz(tmp_path / "data" / "graph" / "cora_planetoid.npz")
    summary = fast_dev_run(
        ["task=graph", "task.dataset=cora", "posenc=none", f"data_dir={tmp_path / 'data'}"],
        tmp_path / "run",
    )
    assert "test/acc" in summary["metrics"]
