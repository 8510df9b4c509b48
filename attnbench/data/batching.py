"""Datasets and samplers for variable-length sequences.

Shuffling is seeded by (seed, epoch) through ``set_epoch`` (Lightning calls it), so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run would.

Under DDP the batch samplers here shard themselves across processes (``shard_batches``):
Lightning's own DistributedSampler cannot be injected into a custom batch sampler (the
trainer presets set ``use_distributed_sampler: false``), and it would pad the data with
repeated examples, which biases metrics. Every process draws the same single-process batch
list from (seed, epoch) and keeps every world-th batch, so each example is seen exactly
once per epoch across processes: nothing is padded or dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from attnbench.registry import ConfigError

# Set by the harness once the trainer is built: pin host memory when the accelerator is a
# CUDA device (faster, non-blocking copies); plain memory on the CPU, as before.
LOADER_OPTIONS = {"pin_memory": False}


def loader_options(num_workers: int = 0) -> dict:
    """The DataLoader keywords every task's loader shares: workers (kept alive across
    epochs, not re-forked each one) and pinned memory on CUDA."""
    options = {"num_workers": num_workers, "pin_memory": LOADER_OPTIONS["pin_memory"]}
    if num_workers > 0:
        options["persistent_workers"] = True
    return options


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


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process in torch.distributed; (0, 1) outside DDP."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def balanced(batches: list[Tensor], world: int) -> list[Tensor]:
    """Split the largest batches in two until every process gets as many batches as the
    others (DDP steps in lockstep), without repeating or dropping an example."""
    batches = list(batches)
    while len(batches) % world:
        sizes = torch.tensor([len(b) for b in batches])
        i = len(batches) - 1 - int(torch.argmax(sizes.flip(0)))  # the last of the largest
        if sizes[i] < 2:
            raise ConfigError(
                f"{sum(sizes.tolist())} examples cannot be shared by {world} processes; "
                "use fewer devices (trainer.devices) or more data"
            )
        half = (len(batches[i]) + 1) // 2
        batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


def shard_batches(batches: list[Tensor], rank: int, world: int) -> list[Tensor]:
    """This process's share of a batch list that every process computed alike: batches
    rank, rank + world, ... of the balanced list. Concatenating the shards batch by batch
    (round robin) gives back the single-process order (predictions rely on it)."""
    if world == 1:
        return batches
    return balanced(batches, world)[rank::world]


def num_shard_batches(num_batches: int, num_examples: int, world: int) -> int:
    """How many batches each process gets (``len`` of a sharded sampler)."""
    if world == 1:
        return num_batches
    per_process = -(-num_batches // world)
    if num_examples < per_process * world:  # balanced() could not split enough batches
        raise ConfigError(
            f"{num_examples} examples cannot be shared by {world} processes; "
            "use fewer devices (trainer.devices) or more data"
        )
    return per_process


class ShardedBatches(Sampler[list[int]]):
    """Base of attnbench's batch samplers: subclasses list the single-process batches of
    an epoch (``epoch_batches``); this class shards them across DDP processes. ``rank`` and
    ``world`` default to torch.distributed's, read when the batches are drawn (after
    Lightning has set the process group up)."""

    shards_across_processes = True  # the harness refuses training loaders without it

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int):
        self.n, self.batch_size = n, batch_size
        self.sampler = EpochShuffle(n, seed) if shuffle else None  # Lightning's set_epoch
        self.rank: int | None = None
        self.world: int | None = None

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is None or self.world is None:
            return process_rank()
        return self.rank, self.world

    def epoch_batches(self) -> list[Tensor]:
        raise NotImplementedError

    def __len__(self) -> int:
        return num_shard_batches(-(-self.n // self.batch_size), self.n, self._rank_world()[1])

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._rank_world()
        for batch in shard_batches(self.epoch_batches(), rank, world):
            yield batch.tolist()


class ShuffledBatchSampler(ShardedBatches):
    """Fixed-size batches of a permutation drawn from (seed, epoch), or in data order
    (``shuffle=False``, for val/test): torch's BatchSampler over EpochShuffle, sharded."""

    def epoch_batches(self) -> list[Tensor]:
        if self.sampler is None:
            order = torch.arange(self.n)
        else:
            order = torch.tensor(list(self.sampler), dtype=torch.long)
        return list(order.split(self.batch_size))


class BucketBatchSampler(ShardedBatches):
    """Batches of similar length: shuffle, sort within pools of ``pool`` batches, shuffle
    batch order. Cuts padding; ``shuffle=False`` keeps data order (for val/test)."""

    def __init__(
        self, lengths: Tensor, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50
    ):
        super().__init__(len(lengths), batch_size, shuffle, seed)
        self.lengths, self.pool = lengths, pool

    def epoch_batches(self) -> list[Tensor]:
        if self.sampler is None:
            return list(torch.arange(len(self.lengths)).split(self.batch_size))
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        batches = []
        for chunk in order.split(self.batch_size * self.pool):
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk.split(self.batch_size))
        shuffled = torch.randperm(len(batches), generator=self.sampler.generator()).tolist()
        return [batches[i] for i in shuffled]


def bucketed_loader(
    dataset, batch_size: int, train: bool, collate_fn, num_workers: int = 0
) -> DataLoader:
    """A DataLoader over a dataset with ``.lengths``: length-bucketed batches, shuffled by
    (seed, epoch) for training (the seed is the one seed_everything set), in order otherwise."""
    sampler = BucketBatchSampler(
        dataset.lengths, batch_size, shuffle=train, seed=torch.initial_seed()
    )
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_fn, **loader_options(num_workers)
    )


def batched_loader(
    dataset, batch_size: int, train: bool, collate_fn, num_workers: int = 0
) -> DataLoader:
    """A DataLoader of fixed-size batches, shuffled by (seed, epoch) for training, in data
    order otherwise; sharded under DDP like :func:`bucketed_loader`."""
    sampler = ShuffledBatchSampler(len(dataset), batch_size, train, seed=torch.initial_seed())
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_fn, **loader_options(num_workers)
    )
