"""Sentence-level sentiment: one label per sequence (SST-2, or a synthetic language)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.batching import BucketBatchSampler, SequenceDataset, collate_padded
from attnbench.data.text import DataError, Vocab, find_file, read_tsv
from attnbench.nn.embed import PooledClassifier, TokenEmbedder
from attnbench.task import Task

DATASETS = ("synthetic", "sst2")
SST2_HELP = ("put SST-2 (GLUE) TSV files train.tsv, dev.tsv, test.tsv (or .gz) with a "
             "'sentence<TAB>label' header under <data_dir>/sentiment/ (set ATTNBENCH_DATA or "
             "data_dir=...); GLUE's SST-2 is at https://gluebenchmark.com/tasks")

_POS = "good great excellent wonderful brilliant charming moving superb".split()
_NEG = "bad awful boring terrible dull weak poor tedious".split()
_SUBJ = "movie film plot acting script ending cast story".split()
_VERB = "is was seems felt looks".split()
_INTENS = "very really quite truly so".split()
_NEGATE = "not never hardly".split()
_FILL = ["honestly", "i think", "overall", "to be fair", "in the end", "for me", "frankly"]


def _clause(rng: random.Random) -> tuple[list[str], int]:
    positive = rng.random() < 0.5
    negated = rng.random() < 0.5
    words = ["the", rng.choice(_SUBJ), rng.choice(_VERB)]
    if negated:
        words.append(rng.choice(_NEGATE))
    if rng.random() < 0.5:
        words.append(rng.choice(_INTENS))
    words.append(rng.choice(_POS if positive else _NEG))
    return words, int(positive != negated)


def synthetic_sentiment(n: int, seed: int) -> list[tuple[list[str], int]]:
    """A tiny language where negation flips polarity and 'but' hands the verdict to the
    last clause, so word order and context matter (a bag of words cannot solve it)."""
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        words, label = _clause(rng)
        if rng.random() < 0.4:
            first, _ = _clause(rng)
            words = first + ["but"] + words
        if rng.random() < 0.5:
            words = rng.choice(_FILL).split() + [","] + words
        data.append((words, label))
    return data


@register("task", "sentiment")
class Sentiment(Task):
    """Binary sentence sentiment: task.dataset=synthetic (built in) or sst2 (from data_dir)."""

    def __init__(self, data_dir: str, dataset: str = "synthetic", batch_size: int = 64,
                 min_freq: int = 1, max_len: int = 128, num_workers: int = 0):
        super().__init__(data_dir)
        if dataset not in DATASETS:
            raise DataError(f"task.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        self.dataset, self.batch_size, self.min_freq = dataset, batch_size, min_freq
        self.max_len, self.num_workers = max_len, num_workers
        self.classes = 2
        self.splits: dict[str, SequenceDataset] = {}

    def _raw(self) -> dict[str, list[tuple[list[str], int]]]:
        if self.dataset == "synthetic":
            return {"train": synthetic_sentiment(5000, 1), "val": synthetic_sentiment(1000, 2),
                    "test": synthetic_sentiment(1000, 3)}
        folder = Path(self.data_dir) / "sentiment"
        raw = {}
        for split, stem in (("train", "train.tsv"), ("val", "dev.tsv"), ("test", "test.tsv")):
            path = find_file(folder, stem, SST2_HELP)
            rows = []
            for lineno, row in read_tsv(path, ("sentence", "label")):
                if row["label"] not in ("0", "1"):
                    raise DataError(f"{path}:{lineno}: label {row['label']!r} is not 0 or 1")
                rows.append((row["sentence"].split(), int(row["label"])))
            if not rows:
                raise DataError(f"{path}: no examples; {SST2_HELP}")
            raw[split] = rows
        return raw

    def setup(self) -> None:
        if self.splits:
            return
        raw = self._raw()
        self.vocab = Vocab.build((s for s, _ in raw["train"]), min_freq=self.min_freq)
        for split, rows in raw.items():
            seqs = [self.vocab.encode(s[: self.max_len] or ["<unk>"]) for s, _ in rows]
            self.splits[split] = SequenceDataset(seqs, torch.tensor([y for _, y in rows]))

    def dataloader(self, split: str) -> DataLoader:
        ds = self.splits[split]
        sampler = BucketBatchSampler(ds.lengths, self.batch_size, shuffle=split == "train",
                                     seed=torch.initial_seed())
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_padded,
                          num_workers=self.num_workers)

    def build_embedder(self, d_model: int) -> TokenEmbedder:
        return TokenEmbedder(len(self.vocab), d_model)

    def build_head(self, d_model: int) -> PooledClassifier:
        return PooledClassifier(d_model, self.classes)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits, batch["label"])

    def metrics(self) -> dict:
        from torchmetrics import Accuracy, F1Score

        return {"acc": Accuracy(task="multiclass", num_classes=self.classes),
                "f1": F1Score(task="multiclass", num_classes=self.classes, average="macro")}

    def metric_inputs(self, logits: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return logits.argmax(-1), batch["label"]

    def num_samples(self, batch: dict[str, Tensor]) -> int:
        return batch["tokens"].size(0)
