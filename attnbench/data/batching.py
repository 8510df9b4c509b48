"""Datasets and samplers for variable-length sequences.

Shuffling is seeded by (seed, epoch) through ``set_epoch`` (Lightning calls it), so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler


class SequenceDataset(Dataset):
    """Token-id sequences with one label each (or one label per token)."""

    def __init__(self, sequences: Sequence[Tensor], labels: Sequence[Tensor] | Tensor):
        self.sequences, self.labels = list(sequences), labels
        self.lengths = torch.tensor([len(s) for s in self.sequences])

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.sequences[i], self.labels[i]


def collate_padded(items: list[tuple[Tensor, Tensor]], pad: int = 0) -> dict[str, Tensor]:
    """Pad token ids to the longest in the batch (one tensor op, no loop over tokens)."""
    seqs, labels = zip(*items)
    tokens = pad_sequence(seqs, batch_first=True, padding_value=pad)
    if labels[0].dim() == 0:
        label = torch.stack(labels)
    else:  # per-token labels, padded with -100 (ignored by cross_entropy)
        label = pad_sequence(labels, batch_first=True, padding_value=-100)
    return {"tokens": tokens, "label": label}


class EpochShuffle(Sampler[int]):
    """A random permutation that is a pure function of (seed, epoch). Lightning calls
    ``set_epoch`` on a loader's ``sampler`` / ``batch_sampler.sampler`` every epoch."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed % 2**31, 0  # initial_seed() may be 64-bit

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(self.n, generator=self.generator()).tolist()


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort within pools of ``pool`` batches, shuffle
    batch order. Cuts padding; ``shuffle=False`` keeps data order (for val/test)."""

    def __init__(
        self, lengths: Tensor, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50
    ):
        self.lengths, self.batch_size, self.pool = lengths, batch_size, pool
        self.sampler = EpochShuffle(len(lengths), seed) if shuffle else None

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        if self.sampler is None:
            order = torch.arange(len(self.lengths))
            yield from (b.tolist() for b in order.split(self.batch_size))
            return
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        batches = []
        for chunk in order.split(self.batch_size * self.pool):
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk.split(self.batch_size))
        for i in torch.randperm(len(batches), generator=self.sampler.generator()).tolist():
            yield batches[i].tolist()


def bucketed_loader(
    dataset, batch_size: int, train: bool, collate_fn, num_workers: int = 0
) -> DataLoader:
    """A DataLoader over a dataset with ``.lengths``: length-bucketed batches, shuffled by
    (seed, epoch) for training (the seed is the one seed_everything set), in order otherwise."""
    sampler = BucketBatchSampler(
        dataset.lengths, batch_size, shuffle=train, seed=torch.initial_seed()
    )
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers
    )
