"""Sentence-level sentiment: one label per sequence (SST-2, or a synthetic language).

SST-2's vocabulary and token ids are built once and cached on disk (attnbench.data.cache).
GLUE's own SST-2 test file has no labels (header ``index<TAB>sentence``): such a test split
is predicted and written to ``predictions_test.tsv`` in the run directory, never scored.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.batching import SequenceDataset, bucketed_loader, collate_padded
from attnbench.data.cache import cached, pack, unpack
from attnbench.data.text import DataError, Vocab, find_file, open_text, read_tsv
from attnbench.nn.embed import PooledClassifier, TokenEmbedder
from attnbench.registry import ConfigError
from attnbench.task import ClassificationTask

DATASETS = ("synthetic", "sst2")
SPLIT_FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}
SST2_HELP = (
    "put SST-2 (GLUE) TSV files train.tsv, dev.tsv, test.tsv (or .gz) with a "
    "'sentence<TAB>label' header (test may be GLUE's unlabeled 'index<TAB>sentence') "
    "under <data_dir>/sentiment/ (set ATTNBENCH_DATA or data_dir=...); to fetch them: "
    "attnbench download sst2 --data-dir <data_dir>"
)
NO_LABEL = -1

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


def synthetic_sentiment(n: int, seed: int) -> list[tuple[str, int]]:
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
        data.append((" ".join(words), label))
    return data


# (sentence, label or NO_LABEL, GLUE index)
Rows = list[tuple[str, int, int]]


def read_sst2(path: Path, split: str) -> Rows:
    """Rows of an SST-2 TSV. A test file may lack the label column (GLUE's test)."""
    with open_text(path) as f:
        header = f.readline().rstrip("\n").split("\t")
    if not header or header == [""]:
        raise DataError(
            f"{path}: is empty; expected a 'sentence<TAB>label' header line "
            "and one example per line"
        )
    labeled = "label" in header or split != "test"  # train/dev must have labels
    columns = (
        ("sentence", "label")
        if labeled
        else (("sentence", "index") if "index" in header else ("sentence",))
    )
    rows: Rows = []
    for lineno, row in read_tsv(path, columns):
        if labeled and row["label"] not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: label {row['label']!r} is not 0 or 1")
        if "index" in row and not row["index"].isdigit():
            raise DataError(f"{path}:{lineno}: index {row['index']!r} is not an integer")
        label = int(row["label"]) if labeled else NO_LABEL
        rows.append((row["sentence"], label, int(row.get("index", lineno - 2))))
    if not rows:
        raise DataError(f"{path}: no examples after the header; {SST2_HELP}")
    return rows


def build_payload(
    raw: dict[str, Rows], lowercase: bool, min_freq: int, max_size: int | None
) -> dict:
    """Vocabulary from train, every split as packed token ids + labels + GLUE index."""

    def tokens(s: str) -> list[str]:
        return (s.lower() if lowercase else s).split() or ["<unk>"]

    vocab = Vocab.build(
        (tokens(s) for s, _, _ in raw["train"]), min_freq=min_freq, max_size=max_size
    )
    splits = {}
    for split, rows in raw.items():
        ids, lengths = pack([vocab.encode(tokens(s)) for s, _, _ in rows])
        splits[split] = {
            "ids": ids,
            "lengths": lengths,
            "labels": torch.tensor([y for _, y, _ in rows]),
            "index": torch.tensor([i for _, _, i in rows]),
        }
    return {"itos": vocab.itos, "splits": splits}


@register("task", "sentiment")
class Sentiment(ClassificationTask):
    """Binary sentence sentiment: task.dataset=synthetic (built in) or sst2 (from data_dir)."""

    def __init__(
        self,
        data_dir: str,
        dataset: str = "synthetic",
        batch_size: int = 64,
        lowercase: bool = True,
        min_freq: int = 1,
        max_size: int | None = None,
        max_len: int = 128,
        num_workers: int = 0,
    ):
        super().__init__(data_dir)
        if dataset not in DATASETS:
            raise ConfigError(f"task.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        if min_freq < 1 or max_len < 1:
            raise ConfigError("task.min_freq and task.max_len must be >= 1")
        self.dataset, self.batch_size, self.lowercase = dataset, batch_size, lowercase
        self.min_freq, self.max_size = min_freq, max_size
        self.max_len, self.num_workers = max_len, num_workers
        self.classes = 2
        self.splits: dict[str, SequenceDataset] = {}
        self.index: dict[str, Tensor] = {}
        self.cache_path: Path | None = None
        self.from_cache = False

    def _payload(self) -> dict:
        def build(raw: dict[str, Rows]) -> dict:
            return build_payload(raw, self.lowercase, self.min_freq, self.max_size)

        if self.dataset == "synthetic":  # generated in a blink: nothing to cache
            return build(
                {
                    split: [(s, y, i) for i, (s, y) in enumerate(synthetic_sentiment(n, seed))]
                    for split, n, seed in (("train", 5000, 1), ("val", 1000, 2), ("test", 1000, 3))
                }
            )
        folder = Path(self.data_dir) / "sentiment"
        paths = {s: find_file(folder, stem, SST2_HELP) for s, stem in SPLIT_FILES.items()}
        settings = {
            "dataset": self.dataset,
            "lowercase": self.lowercase,
            "min_freq": self.min_freq,
            "max_size": self.max_size,
        }
        payload, self.cache_path, self.from_cache = cached(
            "sentiment",
            list(paths.values()),
            settings,
            lambda: build({s: read_sst2(p, s) for s, p in paths.items()}),
            self.data_dir,
        )
        return payload

    def setup(self) -> None:
        payload = self._payload()
        self.vocab = Vocab(payload["itos"][2:])
        for split, data in payload["splits"].items():
            seqs = [s[: self.max_len] for s in unpack(data["ids"], data["lengths"])]
            self.splits[split] = SequenceDataset(seqs, data["labels"])
            self.index[split] = data["index"]
        # e.g. GLUE's SST-2 test: predicted and saved, never scored
        self.unlabeled_splits = tuple(
            split
            for split, data in payload["splits"].items()
            if split != "train" and bool((data["labels"] == NO_LABEL).all())
        )

    def dataloader(self, split: str) -> DataLoader:
        return bucketed_loader(
            self.splits[split], self.batch_size, split == "train", collate_padded, self.num_workers
        )

    def build_embedder(self, d_model: int) -> TokenEmbedder:
        return TokenEmbedder(len(self.vocab), d_model)

    def build_head(self, d_model: int) -> PooledClassifier:
        return PooledClassifier(d_model, self.classes)

    def save_predictions(self, split: str, outputs: list[Tensor], out_dir: Path) -> Path:
        """GLUE submission format: 'index<TAB>prediction' in data order (the eval sampler
        does not shuffle)."""
        preds = torch.cat([o.argmax(-1) for o in outputs]).tolist()
        index = self.index[split].tolist()
        if len(preds) < len(index):  # e.g. fast_dev_run predicts one batch only
            warnings.warn(
                f"{split}: predictions for {len(preds)} of {len(index)} examples", stacklevel=2
            )
        path = Path(out_dir) / f"predictions_{split}.tsv"
        tmp = path.with_suffix(".tsv.tmp")
        tmp.write_text("index\tprediction\n" + "".join(f"{i}\t{p}\n" for i, p in zip(index, preds)))
        tmp.replace(path)
        return path

    def num_samples(self, batch: dict[str, Tensor]) -> int:
        return batch["tokens"].size(0)
