"""Nadaraya–Watson regression on a 1-D toy problem (d2l 10.2, "Attention Pooling").

y = 2·sin(x) + x^0.8 + ε, ε ~ N(0, noise²). The training inputs x ~ U(0, 5) (sorted) are
the keys and their noisy targets the values; a query is any x, its prediction the pooled
value. Each example is one query with its own keys and values:

- train: each training point is a query against the other train_size − 1 (leave one out,
  as d2l trains the parametric version: with itself among the keys a narrow kernel would
  simply copy its own target);
- val: val_size held-out noisy points drawn like the training set, against all of it;
- test: a grid of test_size points in [0, 5), scored against the noise-free function.

``task.pooling=attention`` pools with the model's attention layer: model=transformer with
model.layers=1 (only the layer's attention runs; its feed-forward, norms and the
positional encoding play no part: the points are a set, placed by their x). Models
without an attention layer are refused before the data loads (Task.needs_attention), a
model with several attention layers at the first batch, in one line.
``task.pooling=average`` is d2l's baseline, the mean of the values for every query.

With model.d_model=1 the queries, keys and values are the raw x and y (the chapter's
setting: attention=kernel attention.project=false); wider models embed x and y with
learned linear maps and read the prediction out with another. The test split's fitted
curve (x, y_true, y_pred) and attention weights (test × train) are saved as CSV
(task.save_curve); :meth:`Regression.attention_weights` returns the weights in-process.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.batching import batched_loader
from attnbench.data.images import BatchDataset, identity_collate
from attnbench.nn.attention import Attention
from attnbench.nn.ctx import Ctx
from attnbench.params import Range
from attnbench.registry import ConfigError
from attnbench.task import Network, Stage, Task

POOLINGS = ("attention", "average")
LOW, HIGH = 0.0, 5.0  # the inputs' range


def target_function(x: Tensor) -> Tensor:
    """The noise-free f(x) = 2·sin(x) + x^0.8 (x >= 0)."""
    return 2 * torch.sin(x) + x.pow(0.8)


def toy_data(
    train_size: int, val_size: int, test_size: int, noise: float, seed: int
) -> dict[str, tuple[Tensor, Tensor]]:
    """{split: (x, y)}: sorted noisy training points, held-out noisy validation points, and
    a test grid of test_size points in [0, 5) with the noise-free targets."""
    g = torch.Generator().manual_seed(seed)

    def noisy(n: int) -> tuple[Tensor, Tensor]:
        x = (torch.rand(n, generator=g, dtype=torch.float64) * (HIGH - LOW) + LOW).sort().values
        y = target_function(x) + noise * torch.randn(n, generator=g, dtype=torch.float64)
        return x.float(), y.float()

    grid = LOW + torch.arange(test_size, dtype=torch.float64) * (HIGH - LOW) / test_size
    train, val = noisy(train_size), noisy(val_size)
    return {"train": train, "val": val, "test": (grid.float(), target_function(grid).float())}


def leave_one_out(x: Tensor) -> Tensor:
    """(n,) -> (n, n-1): row i holds every entry but the i-th, in order."""
    n = x.numel()
    keep = ~torch.eye(n, dtype=torch.bool)
    return x.expand(n, n)[keep].view(n, n - 1)


class PointEmbedder(nn.Module):
    """Scalars (B, N) -> features (B, N, d): the scalar itself when d_model=1, else a learned
    linear map; one map for the inputs x (queries and keys), one for the targets y (values).
    Called on a batch, it embeds the queries, as the task contract asks."""

    def __init__(self, d_model: int):
        super().__init__()
        self.raw = d_model == 1
        if not self.raw:
            self.x_map, self.y_map = nn.Linear(1, d_model), nn.Linear(1, d_model)

    def inputs(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-1) if self.raw else self.x_map(x.unsqueeze(-1))

    def targets(self, y: Tensor) -> Tensor:
        return y.unsqueeze(-1) if self.raw else self.y_map(y.unsqueeze(-1))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Ctx]:
        return self.inputs(batch["query"][:, None]), Ctx()  # (B, 1, d)


class PointHead(nn.Module):
    """Pooled features (B, 1, d) -> predictions (B,): the feature itself when d_model=1."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Identity() if d_model == 1 else nn.Linear(d_model, 1)

    def forward(self, h: Tensor, ctx: Ctx) -> Tensor:
        return self.proj(h)[:, 0, 0]


def _model_name(backbone: nn.Module) -> str:
    return getattr(type(backbone), "plugin_name", type(backbone).__name__)


def pooling_attention(backbone: nn.Module) -> Attention:
    """The model's one attention layer, checked for cross-attention (queries are not keys);
    a one-line ConfigError when it has none or several."""
    found = [m for m in backbone.modules() if isinstance(m, Attention)]
    if not found:
        raise ConfigError(
            f"task=regression pools with the model's attention layer and model "
            f"{_model_name(backbone)!r} has none; models that can: transformer "
            "(model.layers=1), or use task.pooling=average"
        )
    if len(found) > 1:
        raise ConfigError(
            f"task=regression pools with one attention layer and model "
            f"{_model_name(backbone)!r} has {len(found)}; set model.layers=1"
        )
    type(found[0]).check_use(cross=True)
    return found[0]


@register("task", "regression")
class Regression(Task):
    """Nadaraya–Watson regression of y = 2·sin(x) + x^0.8 + noise (d2l 10.2):
    task.pooling=attention (the model's attention) or average; MSE."""

    monitor = "val/mse"
    mode = "min"
    pads = False  # every query of a split has the same number of keys

    def __init__(
        self,
        data_dir: str,
        pooling: Literal["attention", "average"] = "attention",
        train_size: Annotated[int, Range(min=2)] = 50,
        val_size: Annotated[int, Range(min=1)] = 50,
        test_size: Annotated[int, Range(min=1)] = 50,
        noise: Annotated[float, Range(min=0)] = 0.5,
        data_seed: int | None = None,
        batch_size: int = 50,
        save_curve: bool = True,
    ):
        super().__init__(data_dir)
        if pooling not in POOLINGS:
            raise ConfigError(f"task.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        self.pooling, self.noise, self.data_seed = pooling, noise, data_seed
        self.needs_attention = pooling == "attention"  # refused before data for cnn, rnn, ...
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.batch_size = batch_size
        self.prediction_splits = ("test",) if save_curve else ()
        self.points: dict[str, tuple[Tensor, Tensor]] = {}
        self.splits: dict[str, BatchDataset] = {}

    def setup(self) -> None:
        """Draw the data once: from task.data_seed, else from the run's seed (the harness
        seeds torch before building the task)."""
        seed = torch.initial_seed() if self.data_seed is None else self.data_seed
        self.points = toy_data(*self.sizes.values(), self.noise, seed)
        x_train, y_train = self.points["train"]
        n = x_train.numel()
        self.splits["train"] = BatchDataset(
            query=x_train,
            keys=leave_one_out(x_train),
            values=leave_one_out(y_train),
            target=y_train,
        )
        for split in ("val", "test"):
            x, y = self.points[split]
            m = x.numel()
            self.splits[split] = BatchDataset(
                query=x, keys=x_train.expand(m, n), values=y_train.expand(m, n), target=y
            )

    def dataloader(self, split: str) -> DataLoader:
        return batched_loader(
            self.splits[split], self.batch_size, split == "train", identity_collate
        )

    # -- model pieces
    def build_embedder(self, d_model: int) -> PointEmbedder:
        return PointEmbedder(d_model)

    def build_head(self, d_model: int) -> PointHead:
        return PointHead(d_model)

    def pool(
        self, net: Network, batch: dict[str, Tensor], need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """(predictions (B,), weights (B, Nk) averaged over heads, or None)."""
        q, ctx = net.embedder(batch)  # (B, 1, d)
        v = net.embedder.targets(batch["values"])  # (B, Nk, d)
        if self.pooling == "average":
            pooled = v.mean(1, keepdim=True)  # (B, 1, d)
            weights = torch.full_like(batch["values"], 1.0 / v.size(1)) if need_weights else None
        else:
            k = net.embedder.inputs(batch["keys"])  # (B, Nk, d)
            attention = pooling_attention(net.backbone)
            pooled, w = attention(q, k, v, ctx=ctx, need_weights=need_weights)
            weights = w[:, :, 0].mean(1) if w is not None else None  # (B, h, 1, Nk) -> (B, Nk)
        return net.head(pooled, ctx), weights

    def forward(self, net: Network, batch: dict[str, Tensor], stage: Stage) -> Any:
        """Predictions (B,); in "predict", {"pred", "weights"} for the saved curve."""
        if stage == "predict":
            pred, weights = self.pool(net, batch, need_weights=True)
            return {"pred": pred, "weights": weights}
        pred, _ = self.pool(net, batch)
        if stage == "train" and torch.is_grad_enabled() and not pred.requires_grad:
            raise ConfigError(
                "task=regression has nothing to learn here (average pooling, or a fixed "
                "width without projections at model.d_model=1: non-parametric); "
                "evaluate it without training: trainer.limit_train_batches=0"
            )
        return pred

    def loss(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.mse_loss(pred, batch["target"])

    def metrics(self) -> dict[str, Any]:
        from torchmetrics import MeanSquaredError

        return {"mse": MeanSquaredError()}

    def metric_inputs(self, pred: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return pred, batch["target"]

    def num_samples(self, batch: dict[str, Tensor]) -> int:
        return batch["query"].size(0)

    # -- results
    @torch.no_grad()
    def attention_weights(self, net: Network, split: str = "test") -> Tensor:
        """The (queries × training points) attention weights of a split, averaged over
        heads; rows follow the split's x, columns the sorted training x."""
        was_training = net.training
        net.eval()
        try:
            rows = [self.forward(net, b, "predict")["weights"] for b in self.dataloader(split)]
        finally:
            net.train(was_training)
        return torch.cat(rows)

    def save_predictions(self, split: str, outputs: list[dict[str, Tensor]], out_dir: Path) -> Path:
        """curve_{split}.csv (x, y_true, y_pred) and weights_{split}.csv (one row per query,
        one column per training point, headed by its x); returns the curve's path."""
        pred = torch.cat([o["pred"] for o in outputs]).float().cpu()
        weights = torch.cat([o["weights"] for o in outputs]).float().cpu()
        x, y = self.points[split]
        if len(pred) < len(x):  # e.g. fast_dev_run predicts one batch only
            warnings.warn(f"{split}: predictions for {len(pred)} of {len(x)} points", stacklevel=2)
        rows = zip(x.tolist(), y.tolist(), pred.tolist())
        curve = Path(out_dir) / f"curve_{split}.csv"
        _write(
            curve, "x,y_true,y_pred\n" + "".join(f"{a:.6g},{b:.6g},{c:.6g}\n" for a, b, c in rows)
        )
        keys = self.points["train"][0].tolist()
        table = "".join(
            f"{q:.6g}," + ",".join(f"{w:.6g}" for w in row) + "\n"
            for q, row in zip(x.tolist(), weights.tolist())
        )
        header = "x," + ",".join(f"{k:.6g}" for k in keys) + "\n"
        _write(Path(out_dir) / f"weights_{split}.csv", header + table)
        return curve


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
