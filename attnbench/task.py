"""The task contract: a task owns its data, input embedder, head, loss and metrics.

Importing this module stays cheap (no Lightning, no torchmetrics): ``attnbench list`` and
``--help`` import every plugin and must not pull in the training stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn
from torch.utils.data import DataLoader

# What the harness is running a batch for. Only "train" batches are back-propagated; "val"
# and "test" batches are scored, "predict" batches are saved (Task.save_predictions).
Stage = Literal["train", "val", "test", "predict"]


class Network(nn.Module):
    """The model a task runs: its embedder and head around a backbone. This, never the
    LightningModule, is what :meth:`Task.forward` receives."""

    def __init__(self, embedder: nn.Module, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.embedder, self.backbone, self.head = embedder, backbone, head

    # Checkpoints written before the modules moved under LitModel.net name them at the top.
    OLD_PREFIXES = ("embedder.", "backbone.", "head.")

    @classmethod
    def upgrade_keys(cls, state: dict[str, Any]) -> dict[str, Any]:
        """A LitModel state dict with old top-level keys renamed to ``net.…`` (in place)."""
        for key in [k for k in state if k.startswith(cls.OLD_PREFIXES)]:
            state[f"net.{key}"] = state.pop(key)
        return state


class Task:
    """Base class of task plugins.

    The harness calls :meth:`setup` exactly once, before building the model (so vocabularies
    and class counts are known), then builds a :class:`Network` from :meth:`build_embedder`,
    the backbone and :meth:`build_head`, and runs every batch through :meth:`forward`, telling
    it the stage. A task sees no Lightning object.
    """

    monitor = "val/acc"  # the metric a sweeper optimises by default
    mode = "max"
    gives_edges = False  # puts graph edges in ctx (attention=graph needs them)
    grid = False  # tokens sit on a 2-D grid: ctx.positions is (B, N, 2) (image patches)
    # Splits without labels (e.g. GLUE's SST-2 test): predicted and saved, never scored.
    unlabeled_splits: tuple[str, ...] = ()
    # Scored splits whose predictions are also saved (e.g. test translations).
    prediction_splits: tuple[str, ...] = ()
    # Output is a sequence the model generates (translation): backbones build an
    # encoder-decoder, and attention must serve causal and cross-attention.
    seq2seq = False
    # Batches may carry a key padding mask (variable lengths). True unless a task states
    # otherwise: plugins that cannot honour padding are refused for it (fail closed).
    pads = True
    # The task calls the backbone's attention layer itself (Nadaraya-Watson pooling):
    # only backbones that declare supports_attention_pooling serve it.
    needs_attention = False

    def __init__(self, data_dir: str):
        self.data_dir = data_dir

    # -- data
    def setup(self) -> None:
        """Load or generate the data. The harness calls it once, before anything else that
        needs the data (building the model, the dataloaders)."""
        raise NotImplementedError

    def dataloader(self, split: str) -> DataLoader:
        """A DataLoader for split 'train', 'val' or 'test'."""
        raise NotImplementedError

    # -- model pieces
    def build_embedder(self, d_model: int) -> nn.Module:
        """A module: batch -> (x (B, N, d_model), Ctx)."""
        raise NotImplementedError

    def build_head(self, d_model: int) -> nn.Module:
        """A module: (h (B, N, d_model), Ctx) -> logits."""
        raise NotImplementedError

    def forward(self, net: Network, batch: Any, stage: Stage) -> Any:
        """The network's outputs for a batch in ``stage`` ("train", "val", "test" or
        "predict"). Whatever this returns is what :meth:`loss`, :meth:`metric_inputs` and
        :meth:`save_predictions` receive, so a task may return more than logits and may
        depend on the stage (translation generates outside "train": with task.val_beam_size
        for "val", with task.beam_size for "test" and "predict")."""
        x, ctx = net.embedder(batch)  # (B, N, d)
        return net.head(net.backbone(x, ctx), ctx)

    def loss(self, logits: Tensor, batch: Any) -> Tensor:
        raise NotImplementedError

    # -- metrics
    def metrics(self) -> dict[str, Any]:
        """Fresh torchmetrics metrics by short name ('acc', 'f1'); the harness prefixes."""
        raise NotImplementedError

    def metric_inputs(self, logits: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        """(preds, target) for the metrics' update()."""
        raise NotImplementedError

    def save_predictions(self, split: str, outputs: list[Tensor], out_dir: Path) -> Path:
        """Write :meth:`forward`'s "predict" outputs (one per batch) for a split in
        ``unlabeled_splits`` or ``prediction_splits``; returns the file written."""
        raise NotImplementedError

    def num_samples(self, batch: Any) -> int:
        """How many examples a batch holds (for throughput)."""
        raise NotImplementedError

    def max_positions(self) -> int | None:
        """How many positions the longest sequence of any split spans, once set up: a
        positional encoding with a fixed table (posenc.max_len) must cover it, and the
        harness checks that before training. None when unknown. The default reads the
        ``lengths`` of the datasets in ``self.splits`` (attnbench.data.batching)."""
        longest = [
            int(data.lengths.max())
            for data in getattr(self, "splits", {}).values()
            if len(getattr(data, "lengths", ()))
        ]
        return max(longest) if longest else None


class ClassificationTask(Task):
    """A task with one class label per example (``batch["label"]``, ``self.classes``):
    cross-entropy, accuracy and macro-F1."""

    classes: int

    def loss(self, logits: Tensor, batch: Any) -> Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits, batch["label"])

    def metrics(self) -> dict[str, Any]:
        from torchmetrics import Accuracy, F1Score

        return {
            "acc": Accuracy(task="multiclass", num_classes=self.classes),
            "f1": F1Score(task="multiclass", num_classes=self.classes, average="macro"),
        }

    def metric_inputs(self, logits: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        return logits.argmax(-1), batch["label"]

    def num_samples(self, batch: Any) -> int:
        return batch["label"].size(0)
