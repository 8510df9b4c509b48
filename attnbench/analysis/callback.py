"""During training: the attention maps of one fixed example, every N epochs
(``callbacks=attention_maps``).

The maps are those ``attnbench maps`` draws for the task's kind (a layers x heads grid, a
translation's alignment, an image's patch overlay, a node's neighbourhood), from the same
capture and figure code, written to ``<run dir>/maps/epoch_<e>.png`` and logged as an
image to every TensorBoard and wandb logger of the run. One example, no gradients, eval
mode, the random state untouched: with or without the callback a run trains the same.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from attnbench.analysis import examples as ex
from attnbench.analysis.capture import attention_modules
from attnbench.registry import ConfigError

TAG = "attention_maps"  # the image's name in TensorBoard and wandb: attention_maps/val_0
OPTION = "callbacks.attention_maps.index="  # names the setting in an error


def _name(obj: Any) -> str:
    return getattr(obj, "plugin_name", type(obj).__name__)


class AttentionMaps(Callback):
    """Draw example ``index`` of ``split`` after every ``every_n_epochs``-th training
    epoch (epochs count from 0, as in the file names: N=2 draws epochs 1, 3, 5...). On a
    graph task ``index`` is a node id. ``dirpath`` defaults to the trainer's root dir/maps."""

    def __init__(
        self,
        every_n_epochs: int = 1,
        index: int = 0,
        split: str = "val",
        dirpath: str | Path | None = None,
    ):
        self.every_n_epochs, self.index, self.split = every_n_epochs, index, split
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.kind: str | None = None  # None: nothing to draw (a model without attention)
        self.batch: Any = None  # the example as a batch of one, on the CPU
        self.title = ""

    def check(self) -> None:
        """Checked when fitting starts, not in __init__: Hydra would wrap the error in its
        own, whose first line ("Error in call to target ...") is all the harness prints."""
        every, index = self.every_n_epochs, self.index
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(
                f"callbacks.attention_maps.every_n_epochs={every!r}: give an integer >= 1"
            )
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ConfigError(f"{OPTION}{index!r}: give an integer >= 0")
        if self.split not in ex.SPLITS:
            raise ConfigError(
                f"callbacks.attention_maps.split={self.split!r} is not one of "
                f"{', '.join(ex.SPLITS)}"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check()
        self.kind = None
        net, task = pl_module.net, pl_module.task
        found = attention_modules(net)
        if not found:
            if trainer.is_global_zero:
                print(
                    f"attnbench: warning: model {_name(net.backbone)!r} has no attention "
                    "module; callbacks=attention_maps draws nothing",
                    file=sys.stderr,
                    flush=True,
                )
            return
        kind = ex.kind_of(task)
        if kind != ex.GRAPH:  # graphs: the split's one batch is the whole graph, read then
            with torch.random.fork_rng(devices=[]):  # a loader's iterator draws a seed
                found_at = ex.examples_at(task, self.split, [self.index], OPTION)
                [(_, self.batch)] = list(found_at)
        self.kind = kind
        if kind == ex.GRAPH:  # a node id past the graph fails now, not after an epoch
            self.example(pl_module)
        self.title = f"{_name(task)} · {_name(net.backbone)} · {_name(found[0][1])}"
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "maps"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the epoch's validation, once per epoch, whether or not validation ran
        epoch = trainer.current_epoch
        if self.kind is None or (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        example = self.example(pl_module)
        path = self.draw(example, epoch)
        self.log_image(trainer, path, f"{self.title}, epoch {epoch}")

    def example(self, pl_module: pl.LightningModule) -> ex.Example:
        """The fixed example's maps from the model as it is now, in eval mode (dropout off)
        and without touching the random state; each module's mode is restored after."""
        net, task = pl_module.net, pl_module.task
        modes = [(m, m.training) for m in net.modules()]
        net.eval()
        try:
            with torch.random.fork_rng(devices=_cuda_devices(net)):
                if self.kind == ex.GRAPH:
                    [example] = ex.graph_examples(task, net, self.split, [self.index], OPTION)
                else:
                    [example] = ex.EXTRACT[self.kind](task, net, [self.index], self.batch)
        finally:
            for module, training in modes:
                module.training = training
        return example

    def draw(self, example: ex.Example, epoch: int) -> Path:
        from attnbench.analysis import map_figures
        from attnbench.analysis.maps import figure

        layers = list(range(len(example.layers)))
        heads = list(range(example.layers[0].size(0)))
        label = f"{self.title}, {self.split} #{self.index}, epoch {epoch}"
        self.dirpath.mkdir(parents=True, exist_ok=True)
        drawn = figure(self.kind, example, layers, heads, label)
        [path] = map_figures.save(drawn, self.dirpath / f"epoch_{epoch}", suffixes=(".png",))
        return path

    def log_image(self, trainer: pl.Trainer, path: Path, caption: str) -> None:
        """The PNG just written, as an image in every TensorBoard and wandb logger."""
        tag = f"{TAG}/{self.split}_{self.index}"
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                from matplotlib.image import imread

                pixels = imread(path)[..., :3]  # (H, W, 3) floats in [0, 1]; alpha dropped
                logger.experiment.add_image(tag, pixels, global_step=step, dataformats="HWC")
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=tag, images=[str(path)], step=step, caption=[caption])


def _cuda_devices(net: torch.nn.Module) -> list[int]:
    """The CUDA device the net is on (its random state is kept too), else none."""
    device = ex.device_of(net)
    return [device.index or 0] if device.type == "cuda" else []
