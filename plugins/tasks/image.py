"""Image classification on patch sequences (ViT-style): digits, MNIST or CIFAR-10.

An image of H x W pixels becomes a sequence of (H/p)(W/p) patches in row-major order,
each flattened and linearly projected to d_model. ``ctx.positions`` is (B, N, 2) long, the
(row, col) of each patch on the patch grid. With ``pooling=cls`` a learned CLS token is
appended LAST, at 2-D position (-1, -1): patches keep indices 0..N-1, so 1-D encodings
(which fall back to 0..N-1 for 2-D positions) see the patches in row-major order and the
CLS token at index N; 2-D encodings can tell the CLS token by its negative position.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.batching import batched_loader
from attnbench.data.images import (
    BatchDataset,
    identity_collate,
    load_cifar10,
    load_digits_splits,
    load_mnist,
)
from attnbench.data.text import DataError
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError
from attnbench.task import ClassificationTask

DATASETS = ("digits", "mnist", "cifar10")
POOLINGS = ("cls", "mean")
DEFAULT_PATCH = {"digits": 2, "mnist": 4, "cifar10": 4}
PIXEL_MAX = {"digits": 16.0, "mnist": 255.0, "cifar10": 255.0}


def patch_grid(rows: int, cols: int) -> Tensor:
    """(rows*cols, 2) long (row, col) of each patch, row-major."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r.flatten(), c.flatten()], dim=-1)


def training_subset(x: Tensor, y: Tensor, fraction: float) -> tuple[Tensor, Tensor]:
    """A fixed class-stratified share of the training images (scikit-learn's split with a
    fixed random_state: the same subset for every seed and model)."""
    if fraction >= 1:
        return x, y
    from sklearn.model_selection import train_test_split

    classes, kept = int(y.unique().numel()), int(fraction * len(y))  # scikit-learn floors
    if kept < classes:
        raise ConfigError(
            f"task.train_fraction={fraction} keeps {kept} of {len(y)} "
            f"training images, fewer than the {classes} classes; raise it to at least "
            f"{classes / len(y):.3g}"
        )
    if len(y) - kept < classes:  # the stratified split needs a class's worth left out too
        raise ConfigError(
            f"task.train_fraction={fraction} leaves {len(y) - kept} of {len(y)} training "
            f"images out, fewer than the {classes} classes a stratified subset needs; use "
            f"task.train_fraction=1 for all of them or at most {1 - classes / len(y):.3g}"
        )
    keep, _ = train_test_split(
        torch.arange(len(y)).numpy(), train_size=fraction, stratify=y.numpy(), random_state=0
    )
    keep = torch.from_numpy(keep).sort().values
    return x[keep], y[keep]


class PatchEmbedder(nn.Module):
    """uint8 images (B, C, H, W) -> (patch embeddings (B, N[+1], d), Ctx with 2-D positions)."""

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        patch: int,
        d_model: int,
        cls: bool,
        mean: Tensor,
        std: Tensor,
        pixel_max: float,
        shift: int = 0,
    ):
        super().__init__()
        self.patch, self.pixel_max, self.shift = patch, pixel_max, shift
        self.proj = nn.Linear(channels * patch * patch, d_model)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        grid = patch_grid(height // patch, width // patch)  # (N, 2)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if cls else None
        if cls:
            nn.init.normal_(self.cls, std=0.02)
            grid = torch.cat([grid, grid.new_full((1, 2), -1)])  # CLS last, at (-1, -1)
        self.register_buffer("grid", grid, persistent=False)

    def translate(self, img: Tensor) -> Tensor:
        """Shift each image by its own random (dy, dx) in [-shift, shift], zero-filled."""
        b, _, h, w = img.shape
        s = self.shift
        padded = F.pad(img, (s, s, s, s))  # (B, C, H+2s, W+2s)
        dy, dx = torch.randint(0, 2 * s + 1, (2, b, 1), device=img.device)
        rows = dy + torch.arange(h, device=img.device)  # (B, H)
        cols = dx + torch.arange(w, device=img.device)  # (B, W)
        out = padded[
            torch.arange(b, device=img.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]
        ]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Ctx]:
        img = batch["image"].float() / self.pixel_max
        if self.training and self.shift > 0:
            img = self.translate(img)
        img = (img - self.mean) / self.std  # (B, C, H, W)
        b, c, p = img.size(0), img.size(1), self.patch
        patches = img.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/p, W/p, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)  # (B, N, C*p*p)
        x = self.proj(patches)  # (B, N, d)
        if self.cls is not None:
            x = torch.cat([x, self.cls.expand(b, -1, -1)], dim=1)  # (B, N+1, d)
        return x, Ctx(positions=self.grid.expand(b, -1, -1))


class ImageHead(nn.Module):
    """The CLS token's state (last position) or the mean over patches -> class logits."""

    def __init__(self, d_model: int, classes: int, pooling: str):
        super().__init__()
        self.pooling = pooling
        self.proj = nn.Linear(d_model, classes)

    def forward(self, h: Tensor, ctx: Ctx) -> Tensor:
        pooled = h[:, -1] if self.pooling == "cls" else h.mean(dim=1)  # (B, d)
        return self.proj(pooled)


@register("task", "image")
class ImageClassification(ClassificationTask):
    """Image classification on patches: task.dataset=digits (built in), mnist or cifar10.

    task.shift > 0 augments training images by a random translation of up to that many
    pixels (per image, zero-filled), which small data sets such as digits need.
    task.train_fraction < 1 trains on that share of the training images (a fixed subset,
    stratified by class, the same for every seed and model); val and test stay whole.
    Mean pooling by default: it serves every backbone (a CNN or MLP leaves a CLS token as
    it is, so pooling=cls suits attention backbones only)."""

    grid = True  # patches sit on a 2-D grid: ctx.positions (B, N, 2)
    pads = False  # every image has the same patches

    def __init__(
        self,
        data_dir: str,
        dataset: str = "digits",
        patch: int | None = None,
        pooling: str = "mean",
        shift: int = 0,
        train_fraction: float = 1.0,
        batch_size: int = 64,
        num_workers: int = 0,
    ):
        super().__init__(data_dir)
        if not 0 < train_fraction <= 1:
            raise ConfigError(
                f"task.train_fraction={train_fraction} must be in (0, 1], e.g. 0.1 for a tenth "
                "of the training images"
            )
        if dataset not in DATASETS:
            raise DataError(f"task.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        if pooling not in POOLINGS:
            raise ConfigError(f"task.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        patch = DEFAULT_PATCH[dataset] if patch is None else patch
        if not isinstance(patch, int) or patch < 1:
            raise ConfigError(f"task.patch={patch} must be a positive patch size in pixels")
        if not isinstance(shift, int) or shift < 0:
            raise ConfigError(f"task.shift={shift} must be a number of pixels >= 0")
        self.dataset, self.patch, self.pooling, self.shift = dataset, patch, pooling, shift
        self.train_fraction = train_fraction
        self.batch_size, self.num_workers = batch_size, num_workers
        self.classes = 10
        self.splits: dict[str, BatchDataset] = {}

    def _raw(self) -> dict[str, tuple[Tensor, Tensor]]:
        if self.dataset == "digits":
            return load_digits_splits()
        if self.dataset == "mnist":
            return load_mnist(Path(self.data_dir) / "images" / "mnist")
        return load_cifar10(Path(self.data_dir) / "images" / "cifar-10-batches-py")

    def max_positions(self) -> int:
        """Patches (and the CLS token): 2-D positions fall back to 0..N-1 in 1-D tables."""
        _, h, w = self.shape
        return (h // self.patch) * (w // self.patch) + (self.pooling == "cls")

    def setup(self) -> None:
        raw = self._raw()
        self.shape = tuple(raw["train"][0].shape[1:])  # (C, H, W)
        _, h, w = self.shape
        if h % self.patch or w % self.patch:
            raise ConfigError(
                f"task.patch={self.patch} does not divide the {h}x{w} "
                f"{self.dataset} images; pick a divisor of {h} and {w}"
            )
        raw["train"] = training_subset(*raw["train"], self.train_fraction)
        # per-channel normalisation from the training images, in [0, 1] units
        train = raw["train"][0].float() / PIXEL_MAX[self.dataset]
        self.mean, self.std = train.mean((0, 2, 3)), train.std((0, 2, 3)).clamp(min=1e-6)
        self.splits = {s: BatchDataset(image=x, label=y) for s, (x, y) in raw.items()}

    def dataloader(self, split: str) -> DataLoader:
        return batched_loader(
            self.splits[split],
            self.batch_size,
            split == "train",
            identity_collate,
            self.num_workers,
        )

    def build_embedder(self, d_model: int) -> PatchEmbedder:
        c, h, w = self.shape
        return PatchEmbedder(
            c,
            h,
            w,
            self.patch,
            d_model,
            self.pooling == "cls",
            self.mean,
            self.std,
            PIXEL_MAX[self.dataset],
            self.shift,
        )

    def build_head(self, d_model: int) -> ImageHead:
        return ImageHead(d_model, self.classes, self.pooling)
