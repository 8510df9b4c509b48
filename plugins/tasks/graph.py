"""Node classification on one graph: a planted-partition graph (built in) or Cora.

The whole graph is one batch (B=1, N=nodes). Each split's dataloader yields that same
graph with the split's node mask; loss and metrics use only the masked nodes. The edges go
in ``ctx.edges`` as (2, E) long [query node, key node] (with B=1 the flat index b*N+i is
the node id), both directions of every undirected edge and nothing else by default;
``task.self_loops=true`` adds one self-loop per node (attention=graph adds its own through
``attention.self_loops``, so it needs none from the task).
Nodes have no order: ``ctx.positions`` is all zeros, so absolute encodings add the same
vector to every node instead of leaking node ids; prefer posenc=none.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.graphs import Graph, load_planetoid_npz, planted_partition
from attnbench.data.text import DataError
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError
from attnbench.task import Task

DATASETS = ("synthetic", "cora")


class NodeEmbedder(nn.Module):
    """Node features (1, N, F) -> dropout -> Linear -> (1, N, d), Ctx with the graph edges."""

    def __init__(self, features: int, d_model: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)  # input dropout: Cora's bag-of-words overfits fast
        self.proj = nn.Linear(features, d_model)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Ctx]:
        x = self.proj(self.drop(batch["x"]))  # (1, N, d)
        positions = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)  # (1, N)
        return x, Ctx(positions=positions, edges=batch["edges"])


class NodeHead(nn.Module):
    """(1, N, d) -> (1, N, classes): a linear classifier per node."""

    def __init__(self, d_model: int, classes: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, classes)

    def forward(self, h: Tensor, ctx: Ctx) -> Tensor:
        return self.proj(self.drop(h))


@register("task", "graph")
class NodeClassification(Task):
    """Node classification: task.dataset=synthetic (planted partition) or cora (Planetoid)."""

    gives_edges = True
    pads = False  # one graph per batch: every node is real

    def __init__(
        self,
        data_dir: str,
        dataset: str = "synthetic",
        dropout: float = 0.5,
        normalize: bool = True,
        self_loops: bool = False,
        communities: int = 4,
        community_size: int = 100,
        p_in: float = 0.1,
        p_out: float = 0.01,
        signal: float = 0.3,
        seed: int = 0,
    ):
        super().__init__(data_dir)
        if dataset not in DATASETS:
            raise DataError(f"task.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        if not 0.0 <= p_out <= 1.0 or not 0.0 <= p_in <= 1.0:
            raise ConfigError(
                f"task.p_in={p_in} / task.p_out={p_out} must be probabilities in [0, 1]"
            )
        if communities < 2 or community_size < 2:
            raise ConfigError("task.communities and task.community_size must be >= 2")
        self.dataset, self.dropout = dataset, dropout
        self.normalize, self.self_loops = normalize, self_loops
        self.synthetic = dict(
            communities=communities,
            size=community_size,
            p_in=p_in,
            p_out=p_out,
            signal=signal,
            seed=seed,
        )
        self.graph: Graph | None = None

    def max_positions(self) -> int:
        return 1  # nodes have no order: every position is 0

    def setup(self) -> None:
        if self.dataset == "synthetic":
            g = planted_partition(**self.synthetic)
        else:
            g = load_planetoid_npz(Path(self.data_dir) / "graph" / "cora_planetoid.npz")
        if self.normalize and self.dataset == "cora":
            # bag-of-words rows sum to 1 (as in GCN/GAT); synthetic features are Gaussian
            g.x = g.x / g.x.sum(1, keepdim=True).clamp(min=1)
        if self.self_loops:
            loops = torch.arange(g.num_nodes).expand(2, -1)
            keep = g.edges[0] != g.edges[1]  # no duplicate loops
            g.edges = torch.cat([g.edges[:, keep], loops], dim=1)
        self.graph = g
        self.classes = int(g.y.max()) + 1

    def dataloader(self, split: str) -> DataLoader:
        g = self.graph
        batch = {
            "x": g.x[None],
            "label": g.y[None],
            "mask": g.splits[split][None],
            "edges": g.edges,
        }
        return DataLoader([batch], batch_size=None)  # one batch: the whole graph

    def build_embedder(self, d_model: int) -> NodeEmbedder:
        return NodeEmbedder(self.graph.x.size(1), d_model, self.dropout)

    def build_head(self, d_model: int) -> NodeHead:
        return NodeHead(d_model, self.classes, self.dropout)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        mask = batch["mask"]
        return F.cross_entropy(logits[mask], batch["label"][mask])

    def metrics(self) -> dict:
        from torchmetrics import Accuracy, F1Score

        return {
            "acc": Accuracy(task="multiclass", num_classes=self.classes),
            "f1": F1Score(task="multiclass", num_classes=self.classes, average="macro"),
        }

    def metric_inputs(self, logits: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        mask = batch["mask"]
        return logits[mask].argmax(-1), batch["label"][mask]

    def num_samples(self, batch: dict[str, Tensor]) -> int:
        return int(batch["mask"].sum())
