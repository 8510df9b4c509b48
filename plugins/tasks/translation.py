"""Sequence-to-sequence translation: Multi30k (de<->en) from data_dir, or a synthetic
transduction built in (reverse a sentence and translate every word through a fixed dictionary).

Training is teacher-forced; validation, test and predict also generate (greedy, or beam search
with a length penalty: task.val_beam_size for validation, task.beam_size for test and predict,
task.length_penalty) and score the detokenised output with SacreBLEU (13a tokenisation;
lowercased when task.lowercase) and exact match. The test translations are written to
``translations_test.txt`` next to summary.json.
Multi30k's vocabularies and token ids are built once and cached (attnbench.data.cache).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.batching import bucketed_loader
from attnbench.data.cache import cached, pack, unpack
from attnbench.data.parallel import (
    BOS,
    EOS,
    ParallelDataset,
    collate_parallel,
    detokenize,
    read_parallel,
    tokenize,
)
from attnbench.data.text import Vocab, find_file
from attnbench.nn.ctx import Ctx
from attnbench.nn.decoding import beam_search, greedy_search
from attnbench.nn.embed import TokenEmbedder
from attnbench.registry import ConfigError
from attnbench.task import Network, Stage, Task

DATASETS = ("synthetic", "multi30k")
SPLIT_STEMS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
MULTI30K_HELP = (
    "put Multi30k's {train,val,test_2016_flickr}.{de,en}.gz (one sentence per "
    "line) under <data_dir>/translation/ (set ATTNBENCH_DATA or data_dir=...); "
    "they are data/task1/raw in https://github.com/multi30k/dataset"
)
PAD, BOS_ID, EOS_ID = 0, 2, 3  # Vocab puts <pad>, <unk> first; BOS and EOS follow

_SYMBOLS = "abcdefghijklmnop"


def synthetic_pairs(
    n: int, seed: int, min_len: int = 3, max_len: int = 10
) -> tuple[list[str], list[str]]:
    """Source: random words 'a'..'p'; target: the words in reverse order, each translated
    through a fixed dictionary (a -> AA, ...). Needs the whole source before the first word."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(_SYMBOLS) for _ in range(rng.randint(min_len, max_len))]
        src.append(" ".join(words))
        tgt.append(" ".join((w + w).upper() for w in reversed(words)))
    return src, tgt


# split -> (source lines, target lines)
Raw = dict[str, tuple[list[str], list[str]]]


def build_payload(
    raw: Raw, lowercase: bool, shared: bool, min_freq: int, max_size: int | None
) -> dict:
    """Vocabularies from train (one for both sides when shared), every split as packed ids
    (target wrapped in <s> ... </s>) plus its raw reference lines for BLEU."""
    tok = {
        s: ([tokenize(x, lowercase) for x in src], [tokenize(y, lowercase) for y in tgt])
        for s, (src, tgt) in raw.items()
    }
    train_src, train_tgt = tok["train"]

    def vocab(sentences: list[list[str]]) -> Vocab:
        v = Vocab.build(sentences, min_freq=min_freq, max_size=max_size)
        return Vocab([BOS, EOS, *v.itos[2:]])

    src_vocab = vocab(train_src + train_tgt if shared else train_src)
    tgt_vocab = src_vocab if shared else vocab(train_tgt)
    bos, eos = torch.tensor([BOS_ID]), torch.tensor([EOS_ID])
    splits = {}
    for split, (src, tgt) in tok.items():
        src_ids, src_len = pack([src_vocab.encode(s) for s in src])
        tgt_ids, tgt_len = pack([torch.cat([bos, tgt_vocab.encode(t), eos]) for t in tgt])
        splits[split] = {
            "src": src_ids,
            "src_len": src_len,
            "tgt": tgt_ids,
            "tgt_len": tgt_len,
            "refs": raw[split][1],
        }
    return {"src_itos": src_vocab.itos, "tgt_itos": tgt_vocab.itos, "splits": splits}


class Seq2SeqEmbedder(nn.Module):
    """Source and target token embeddings (one table when the vocabulary is shared).
    Called on a batch it embeds the source: -> (x (B, S, d), Ctx with the padding mask)."""

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int, shared: bool):
        super().__init__()
        self.src = TokenEmbedder(src_vocab, d_model, pad=PAD)
        self.tgt = self.src if shared else TokenEmbedder(tgt_vocab, d_model, pad=PAD)

    def source(self, tokens: Tensor) -> tuple[Tensor, Ctx]:
        return self.src({"tokens": tokens})  # (B, S, d), Ctx

    def target(self, tokens: Tensor) -> Tensor:
        return self.tgt({"tokens": tokens})[0]  # (B, T, d)

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, Ctx]:
        return self.source(batch["src"])


class OutputProjection(nn.Module):
    """(h (B, T, d), ctx) -> logits (B, T, V); optionally tied to the target embedding."""

    def __init__(self, d_model: int, vocab: int, tied: nn.Embedding | None = None):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab, bias=False)
        if tied is not None:
            self.proj.weight = tied.weight

    def forward(self, h: Tensor, ctx: Ctx | None = None) -> Tensor:
        return self.proj(h)


def _exact_match_metric(lowercase: bool):
    """A torchmetrics Metric: share of hypotheses equal to their (first) reference, compared
    as token sequences (so spacing around punctuation does not count)."""
    from torchmetrics import Metric

    class ExactMatch(Metric):
        higher_is_better = True

        def __init__(self):
            super().__init__()
            self.add_state("correct", torch.tensor(0.0), dist_reduce_fx="sum")
            self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

        def update(self, preds: list[str], target: list[list[str]] | list[str]) -> None:
            refs = [t if isinstance(t, str) else t[0] for t in target]
            same = sum(
                tokenize(p, lowercase) == tokenize(r, lowercase) for p, r in zip(preds, refs)
            )
            self.correct += same
            self.total += len(preds)

        def compute(self) -> Tensor:
            return self.correct / self.total.clamp(min=1)

    return ExactMatch()


def _bleu_metric(lowercase: bool):
    """Corpus SacreBLEU (13a tokenisation) on the 0-100 scale sacrebleu reports."""
    from torchmetrics.text import SacreBLEUScore

    class BLEU(SacreBLEUScore):
        def compute(self) -> Tensor:
            return super().compute() * 100

    return BLEU(tokenize="13a", lowercase=lowercase)


@register("task", "translation")
class Translation(Task):
    """Seq2seq translation: task.dataset=synthetic (built in) or multi30k (source -> target).

    Test (and predict) decodes with beam_size (1 = greedy), validation with val_beam_size
    (greedy by default: a beam search every epoch is slow on a CPU); length_penalty is GNMT's
    alpha. max_len caps the tokens of a training sentence and of a generated translation.
    """

    monitor = "val/bleu"
    seq2seq = True
    prediction_splits = ("test",)

    def __init__(
        self,
        data_dir: str,
        dataset: str = "synthetic",
        source: str = "de",
        target: str = "en",
        shared_vocab: bool = False,
        tie_embeddings: bool = True,
        lowercase: bool = True,
        min_freq: int = 2,
        max_size: int | None = None,
        max_len: int = 64,
        batch_size: int = 64,
        beam_size: int = 1,
        val_beam_size: int = 1,
        length_penalty: float = 0.6,
        label_smoothing: float = 0.1,
        num_workers: int = 0,
    ):
        super().__init__(data_dir)
        if dataset not in DATASETS:
            raise ConfigError(f"task.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        if source == target:
            raise ConfigError(
                f"task.source and task.target are both {source!r}; "
                "translate between two languages (e.g. de -> en)"
            )
        if min(min_freq, max_len, batch_size, beam_size, val_beam_size) < 1:
            raise ConfigError(
                "task.min_freq, task.max_len, task.batch_size, task.beam_size and "
                "task.val_beam_size must be >= 1"
            )
        if not 0.0 <= label_smoothing < 1.0 or length_penalty < 0:
            raise ConfigError("task.label_smoothing must be in [0, 1) and task.length_penalty >= 0")
        self.dataset, self.source, self.target = dataset, source, target
        self.shared_vocab, self.tie_embeddings = shared_vocab, tie_embeddings
        self.lowercase, self.min_freq, self.max_size = lowercase, min_freq, max_size
        self.max_len, self.batch_size, self.num_workers = max_len, batch_size, num_workers
        self.beam_size, self.val_beam_size = beam_size, val_beam_size
        self.length_penalty = length_penalty
        self.label_smoothing = label_smoothing
        self.splits: dict[str, ParallelDataset] = {}
        self.cache_path: Path | None = None
        self.from_cache = False
        self._embedder: Seq2SeqEmbedder | None = None

    # ------------------------------------------------------------------ data
    def _payload(self) -> dict:
        def build(raw: Raw) -> dict:
            return build_payload(
                raw, self.lowercase, self.shared_vocab, self.min_freq, self.max_size
            )

        if self.dataset == "synthetic":  # generated in a blink: nothing to cache
            return build(
                {
                    split: synthetic_pairs(n, seed)
                    for split, n, seed in (("train", 10000, 1), ("val", 500, 2), ("test", 500, 3))
                }
            )
        folder = Path(self.data_dir) / "translation"
        paths = {
            split: (
                find_file(folder, f"{stem}.{self.source}", MULTI30K_HELP),
                find_file(folder, f"{stem}.{self.target}", MULTI30K_HELP),
            )
            for split, stem in SPLIT_STEMS.items()
        }
        settings = {
            "dataset": self.dataset,
            "source": self.source,
            "target": self.target,
            "lowercase": self.lowercase,
            "shared_vocab": self.shared_vocab,
            "min_freq": self.min_freq,
            "max_size": self.max_size,
        }
        sources = [p for pair in paths.values() for p in pair]
        payload, self.cache_path, self.from_cache = cached(
            "translation",
            sources,
            settings,
            lambda: build({s: read_parallel(*pair) for s, pair in paths.items()}),
            self.data_dir,
        )
        return payload

    def max_positions(self) -> int | None:
        """Sources as stored; targets up to the longest a decoder may generate (<s> + max_len
        tokens + </s>), whichever is longer."""
        return max(super().max_positions() or 0, self.max_len + 2)

    def setup(self) -> None:
        payload = self._payload()
        self.src_itos, self.tgt_itos = payload["src_itos"], payload["tgt_itos"]
        keep = self.max_len + 2  # <s> ... </s>
        for split, d in payload["splits"].items():
            src = [s[: self.max_len] for s in unpack(d["src"], d["src_len"])]
            # a cut target keeps its </s>, so the model still learns to stop
            tgt = [
                t if len(t) <= keep else torch.cat([t[: keep - 1], t[-1:]])
                for t in unpack(d["tgt"], d["tgt_len"])
            ]
            self.splits[split] = ParallelDataset(src, tgt, d["refs"])

    def dataloader(self, split: str) -> DataLoader:
        return bucketed_loader(
            self.splits[split],
            self.batch_size,
            split == "train",
            collate_parallel,
            self.num_workers,
        )

    # ------------------------------------------------------------------ model pieces
    def build_embedder(self, d_model: int) -> Seq2SeqEmbedder:
        self._embedder = Seq2SeqEmbedder(
            len(self.src_itos), len(self.tgt_itos), d_model, self.shared_vocab
        )
        return self._embedder

    def build_head(self, d_model: int) -> OutputProjection:
        tied = None
        if self.tie_embeddings and self._embedder is not None:
            tied = self._embedder.tgt.embed
        return OutputProjection(d_model, len(self.tgt_itos), tied)

    def forward(self, net: Network, batch: dict[str, Any], stage: Stage) -> dict[str, Tensor]:
        """Teacher-forced logits (B, T, V); outside training also the generated ids (B, L),
        decoded with val_beam_size for validation and beam_size for test and predict."""
        x, src_ctx = net.embedder.source(batch["src"])
        memory = net.backbone.encode(x, src_ctx)  # (B, S, d)
        y = net.embedder.target(batch["tgt"][:, :-1])  # <s> w1 ... wn: predict w1 ... </s>
        h, _ = net.backbone.decode(y, memory, src_ctx)
        out = {"logits": net.head(h, Ctx())}
        if stage != "train":
            beam = self.val_beam_size if stage == "val" else self.beam_size
            out["generated"] = self.generate(net, memory, src_ctx, beam)
        return out

    def generate(
        self, net: Network, memory: Tensor, src_ctx: Ctx, beam_size: int | None = None
    ) -> Tensor:
        """Token ids (B, L) after <s>: greedy (beam 1) or beam search, incremental."""
        B, S = memory.shape[:2]
        K = beam_size or self.beam_size
        max_len = min(self.max_len + 1, int(1.5 * S) + 10)  # + 1: room for </s>
        mask = src_ctx.key_padding_mask
        if K > 1:  # row b*K + k is beam k of example b
            memory = memory.repeat_interleave(K, 0)
            mask = mask.repeat_interleave(K, 0) if mask is not None else None
        ctx = src_ctx.replace(key_padding_mask=mask)

        def step(tokens: Tensor, cache: Any) -> tuple[Tensor, Any]:
            h, cache = net.backbone.decode(net.embedder.target(tokens[:, None]), memory, ctx, cache)
            return net.head(h, Ctx())[:, -1].float().log_softmax(-1), cache

        kw = dict(bos=BOS_ID, eos=EOS_ID, pad=PAD, max_len=max_len, device=memory.device)
        if K == 1:
            return greedy_search(step, B, **kw)
        return beam_search(step, B, beam_size=K, alpha=self.length_penalty, **kw)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        logits = outputs["logits"]  # (B, T, V)
        labels = batch["tgt"][:, 1:]  # (B, T)
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            labels.reshape(-1),
            ignore_index=PAD,
            label_smoothing=self.label_smoothing,
        )

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> dict:
        return {"bleu": _bleu_metric(self.lowercase), "exact": _exact_match_metric(self.lowercase)}

    def decode_text(self, ids: Tensor) -> list[str]:
        """(B, L) generated ids -> detokenised sentences (up to </s>, specials dropped)."""
        lines = []
        for row in ids.tolist():
            row = row[: row.index(EOS_ID)] if EOS_ID in row else row
            lines.append(detokenize([self.tgt_itos[i] for i in row if i not in (PAD, BOS_ID)]))
        return lines

    def metric_inputs(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        return self.decode_text(outputs["generated"]), [[r] for r in batch["refs"]]

    def save_predictions(self, split: str, outputs: list[dict[str, Tensor]], out_dir: Path) -> Path:
        """One translation per line, in the order of the split's source file."""
        lines = [line for o in outputs for line in self.decode_text(o["generated"])]
        if len(lines) < len(self.splits[split]):  # e.g. fast_dev_run predicts one batch
            warnings.warn(
                f"{split}: translations for {len(lines)} of {len(self.splits[split])} sentences",
                stacklevel=2,
            )
        path = Path(out_dir) / f"translations_{split}.txt"
        tmp = path.with_suffix(".txt.tmp")
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        tmp.replace(path)
        return path

    def num_samples(self, batch: dict[str, Any]) -> int:
        return batch["src"].size(0)
