"""Part-of-speech tagging: one UPOS tag per token (UD English EWT, or a synthetic language).

Unknown words: a from-scratch tagger meets many words at test time it never saw in
training. These let it tag them from their form and context instead of guessing:
  * form features: each token also gets a word-shape id (``Xx``, ``d.d``, ``x-x``, ...,
    computed before lowercasing) and ids for its last 1..``affixes`` characters; the
    embedder sums one embedding per feature;
  * characters (``char_dim > 0``): a small CNN over each word's characters (width-3
    convolution, max-pool over the word) adds an embedding learnt from spelling. It runs
    once per distinct word in a batch, on a char table tensorised once per word type;
  * word dropout: during training a word with training count c is replaced by <unk>
    with probability ``word_dropout / (word_dropout + c)`` (Kiperwasser & Goldberg 2016),
    so the <unk> embedding is trained on rare words, where the form features matter.
Features are computed once per word type and cached on disk with the vocabularies.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.batching import SequenceDataset, bucketed_loader
from attnbench.data.cache import cached, unpack
from attnbench.data.conllu import UPOS, Sentence, read_conllu
from attnbench.data.text import PAD, UNK, Vocab, find_file
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError
from attnbench.task import Task

DATASETS = ("synthetic", "ud_ewt")
SPLIT_FILES = {
    "train": "en_ewt-ud-train.conllu",
    "val": "en_ewt-ud-dev.conllu",
    "test": "en_ewt-ud-test.conllu",
}
UD_HELP = (
    "put UD English EWT en_ewt-ud-{train,dev,test}.conllu (or .gz) under "
    "<data_dir>/pos/ (set ATTNBENCH_DATA or data_dir=...); to fetch them: "
    "attnbench download ud_ewt --data-dir <data_dir>"
)
UNK_ID = 1

# ----------------------------------------------------------------------------- synthetic

# Words that take several tags: their tag follows only from their neighbours
# ("i saw a saw": VERB after a subject, NOUN after a determiner or adjective;
#  "a light saw" / "a light": ADJ before a noun, NOUN at the end of the phrase).
_AMBIG_NV = "saw watch fly book play run park light".split()
_AMBIG_ADJ = ["light"]
_PRON = "i you we they".split()
_DET = "a the this my".split()
_ADJ = "old new red big small".split() + _AMBIG_ADJ
_NOUN = "man dog cat tree house".split() + _AMBIG_NV
_VERB = "see like want".split() + _AMBIG_NV
_ADP = "in near with".split()


def _noun_phrase(rng: random.Random) -> Sentence:
    words, tags = [rng.choice(_DET)], ["DET"]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADJ))
        tags.append("ADJ")
    words.append(rng.choice(_NOUN))
    tags.append("NOUN")
    return words, tags


def synthetic_pos(n: int, seed: int) -> list[Sentence]:
    """Sentences SUBJ VERB OBJ [ADP NP] [.] whose ambiguous words need context to tag."""
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        if rng.random() < 0.5:
            words, tags = [rng.choice(_PRON)], ["PRON"]
        else:
            words, tags = _noun_phrase(rng)
        words, tags = words + [rng.choice(_VERB)], tags + ["VERB"]
        obj = _noun_phrase(rng)
        words, tags = words + obj[0], tags + obj[1]
        if rng.random() < 0.4:
            pp = _noun_phrase(rng)
            words, tags = words + [rng.choice(_ADP)] + pp[0], tags + ["ADP"] + pp[1]
        if rng.random() < 0.7:
            words, tags = words + ["."], tags + ["PUNCT"]
        if rng.random() < 0.3:  # capitalised sentence start: shape features see it
            words[0] = words[0].capitalize()
        data.append((words, tags))
    return data


# ----------------------------------------------------------------------------- features

_SHAPE_CLASSES = [
    (re.compile(r"[A-Z]"), "X"),
    (re.compile(r"[a-z]"), "x"),
    (re.compile(r"[0-9]"), "d"),
]
_REPEAT = re.compile(r"(.)\1+")


def word_shape(form: str) -> str:
    """'Hello' -> 'Xx', 'U.S.' -> 'X.X.', '1,000' -> 'd,d', 'e-mail' -> 'x-x' (max 6 chars)."""
    for pattern, cls in _SHAPE_CLASSES:
        form = pattern.sub(cls, form)
    return _REPEAT.sub(r"\1", form)[:6]


def _ranked_vocab(counts: Counter, min_freq: int, max_size: int | None) -> Vocab:
    ranked = sorted(
        (t for t, c in counts.items() if c >= min_freq and t not in (PAD, UNK)),
        key=lambda t: (-counts[t], t),
    )
    return Vocab(ranked[:max_size] if max_size else ranked)


def char_table(forms: list[str], chars: Vocab, width: int) -> Tensor:
    """(len(forms), width) char ids, 0-padded; long words keep their first and last
    width/2 characters (prefixes and suffixes carry the part of speech)."""
    half = width // 2
    rows = [
        torch.tensor(
            [
                chars.stoi.get(c, UNK_ID)
                for c in (f if len(f) <= width else f[:half] + f[-(width - half) :])
            ],
            dtype=torch.long,
        )
        for f in forms
    ]
    return pad_sequence(rows, batch_first=True, padding_value=0)


class Featurizer:
    """Per-type feature strings: [word, shape?, suffix_1..suffix_k] (+ a form id if chars)."""

    def __init__(self, lowercase: bool, affixes: int, shape: bool, chars: bool = False):
        self.lowercase, self.affixes, self.shape = lowercase, affixes, shape
        self.chars = chars
        self.columns = (
            ["word"] + (["shape"] if shape else []) + [f"suffix{k}" for k in range(1, affixes + 1)]
        )

    def strings(self, form: str) -> list[str]:
        word = form.lower() if self.lowercase else form
        out = [word] + ([word_shape(form)] if self.shape else [])
        low = form.lower()
        return out + [low[-k:] for k in range(1, self.affixes + 1)]


def build_payload(
    raw: dict[str, list[Sentence]], feat: Featurizer, min_freq: int, max_size: int | None
) -> dict:
    """Vocabularies from train, then every split as packed (tokens, F) feature ids + tags.
    Work is per word type (a few 10k), then one gather over all tokens."""
    type_counts = Counter(w for s, _ in raw["train"] for w in s)
    col_counts = [Counter() for _ in feat.columns]
    for form, c in type_counts.items():
        for counter, s in zip(col_counts, feat.strings(form)):
            counter[s] += c
    vocabs = [_ranked_vocab(col_counts[0], min_freq, max_size)]
    vocabs += [_ranked_vocab(cnt, 2, None) for cnt in col_counts[1:]]  # rare affix -> <unk>
    char_counts: Counter = Counter()
    for form, c in type_counts.items():
        for ch in form:
            char_counts[ch] += c
    chars = _ranked_vocab(char_counts, 2, None)  # rare characters -> <unk>
    forms: dict[str, int] = {"": 0}  # form id 0 = padding (no characters)
    word_counts = torch.tensor([col_counts[0].get(t, 0) for t in vocabs[0].itos])
    tag_id = {t: i for i, t in enumerate(UPOS)}
    splits = {}
    for split, sentences in raw.items():
        types: dict[str, int] = {}
        ids = torch.tensor([types.setdefault(w, len(types)) for s, _ in sentences for w in s])
        table = torch.tensor(
            [[v.stoi.get(s, UNK_ID) for v, s in zip(vocabs, feat.strings(w))] for w in types],
            dtype=torch.long,
        ).view(len(types), -1)
        if feat.chars:  # form ids over all splits: a test word's spelling is input, not label
            form_ids = torch.tensor(
                [forms.setdefault(w, len(forms)) for w in types], dtype=torch.long
            )
            table = torch.cat([table, form_ids[:, None]], dim=1)
        tags = torch.tensor([tag_id[t] for _, ts in sentences for t in ts])
        lengths = torch.tensor([len(s) for s, _ in sentences])
        splits[split] = {"feats": table[ids], "tags": tags, "lengths": lengths}  # (T, F)
    payload = {
        "columns": feat.columns,
        "itos": [v.itos for v in vocabs],
        "word_counts": word_counts,
        "splits": splits,
    }
    if feat.chars:
        payload["chars"] = {"itos": chars.itos, "table": char_table(list(forms), chars, 16)}
    return payload


# ----------------------------------------------------------------------------- modules


class CharCNN(nn.Module):
    """Form ids (B, N) -> (B, N, d): char embeddings, width-3 conv, max over the word."""

    def __init__(self, table: Tensor, n_chars: int, char_dim: int, filters: int, d_model: int):
        super().__init__()
        self.register_buffer("table", table, persistent=False)  # (forms, L) char ids
        self.embed = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, filters, kernel_size=3, padding=1)
        self.proj = nn.Linear(filters, d_model)

    def forward(self, forms: Tensor) -> Tensor:
        uniq, inv = torch.unique(forms, return_inverse=True)  # each distinct word once
        chars = self.table[uniq]  # (U, L)
        real = chars != 0
        h = self.conv(self.embed(chars).transpose(1, 2))  # (U, filters, L)
        h = h.masked_fill(~real[:, None], float("-inf")).amax(-1)  # (U, filters)
        h = torch.where(real.any(-1, keepdim=True), h, torch.zeros_like(h))  # padding -> 0
        return self.proj(torch.relu(h))[inv]  # (B, N, d)


class TaggingEmbedder(nn.Module):
    """batch -> (sum of word + form-feature (+ char CNN) embeddings (B, N, d), Ctx); pad 0."""

    def __init__(
        self, sizes: list[int], d_model: int, drop_p: Tensor, chars: CharCNN | None = None
    ):
        super().__init__()
        self.embeds = nn.ModuleList(nn.Embedding(n, d_model, padding_idx=0) for n in sizes)
        for e in self.embeds:
            nn.init.normal_(e.weight, std=d_model**-0.5)
        self.scale = math.sqrt(d_model / len(sizes))  # the sum keeps unit variance
        self.register_buffer("drop_p", drop_p, persistent=False)  # (V,) per word id
        self.chars = chars  # reads the form id in the last feature column

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Ctx]:
        tokens, feats = batch["tokens"], batch["feats"]  # (B, N), (B, N, F-1)
        real = tokens != 0
        words = tokens
        if self.training:  # word dropout: rare words -> <unk>
            drop = torch.rand(tokens.shape, device=tokens.device) < self.drop_p[tokens]
            words = tokens.masked_fill(drop & real, UNK_ID)
        x = self.embeds[0](words)
        for i, embed in enumerate(self.embeds[1:]):
            x = x + embed(feats[..., i])
        x = x * self.scale
        if self.chars is not None:
            x = x + self.chars(feats[..., -1])
        return x, Ctx(key_padding_mask=real)


class TokenClassifier(nn.Module):
    """Per-token linear layer: (B, N, d) -> (B, N, classes)."""

    def __init__(self, d_model: int, classes: int):
        super().__init__()
        self.proj = nn.Linear(d_model, classes)

    def forward(self, h: Tensor, ctx: Ctx) -> Tensor:
        return self.proj(h)


def collate_tagged(items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Pad (L, F) feature rows and (L,) tags in one op each; tags padded with -100."""
    seqs, tags = zip(*items)
    feats = pad_sequence(seqs, batch_first=True, padding_value=0)  # (B, N, F)
    label = pad_sequence(tags, batch_first=True, padding_value=-100)  # (B, N)
    return {"tokens": feats[..., 0], "feats": feats[..., 1:], "label": label}


# ----------------------------------------------------------------------------- task


@register("task", "pos")
class POS(Task):
    """POS tagging, one UPOS tag per token: task.dataset=synthetic (built in) or ud_ewt."""

    def __init__(
        self,
        data_dir: str,
        dataset: str = "synthetic",
        batch_size: int = 32,
        lowercase: bool = True,
        min_freq: int = 1,
        max_size: int | None = None,
        affixes: int = 3,
        shape: bool = True,
        word_dropout: float = 0.25,
        char_dim: int = 0,
        char_filters: int = 128,
        max_len: int = 256,
        num_workers: int = 0,
    ):
        super().__init__(data_dir)
        if dataset not in DATASETS:
            raise ConfigError(f"task.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        if affixes < 0 or word_dropout < 0 or min_freq < 1 or max_len < 1 or char_dim < 0:
            raise ConfigError(
                "task.affixes, task.word_dropout and task.char_dim must be >= 0, "
                "task.min_freq and task.max_len >= 1"
            )
        if char_dim and char_filters < 1:
            raise ConfigError(f"task.char_filters={char_filters} must be >= 1 with task.char_dim")
        self.char_dim, self.char_filters = char_dim, char_filters
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.min_freq, self.max_size, self.max_len = min_freq, max_size, max_len
        self.word_dropout = word_dropout
        self.featurizer = Featurizer(lowercase, affixes, shape, chars=char_dim > 0)
        self.classes = len(UPOS)
        self.splits: dict[str, SequenceDataset] = {}
        self.cache_path: Path | None = None
        self.from_cache = False

    def _settings(self) -> dict:
        f = self.featurizer
        settings = {
            "dataset": self.dataset,
            "lowercase": f.lowercase,
            "affixes": f.affixes,
            "shape": f.shape,
            "min_freq": self.min_freq,
            "max_size": self.max_size,
        }
        return {**settings, "chars": True} if f.chars else settings  # old entries stay valid

    def _payload(self) -> dict:
        def build(raw: dict[str, list[Sentence]]) -> dict:
            return build_payload(raw, self.featurizer, self.min_freq, self.max_size)

        if self.dataset == "synthetic":  # generated in a blink: nothing to cache
            return build(
                {
                    "train": synthetic_pos(4000, 1),
                    "val": synthetic_pos(500, 2),
                    "test": synthetic_pos(500, 3),
                }
            )
        folder = Path(self.data_dir) / "pos"
        paths = {s: find_file(folder, stem, UD_HELP) for s, stem in SPLIT_FILES.items()}
        payload, self.cache_path, self.from_cache = cached(
            "pos",
            list(paths.values()),
            self._settings(),
            lambda: build({s: read_conllu(p) for s, p in paths.items()}),
            self.data_dir,
        )
        return payload

    def setup(self) -> None:
        payload = self._payload()
        self.sizes = [len(itos) for itos in payload["itos"]]
        # one vocabulary per feature column (word, shape, suffixes): itos holds <pad>, <unk>
        self.vocabs = [Vocab(itos[2:]) for itos in payload["itos"]]
        self.vocab = self.vocabs[0]  # the words, for token text (attnbench maps)
        self.chars = payload.get("chars")
        counts = payload["word_counts"].float()
        a = self.word_dropout
        self.drop_p = a / (a + counts) if a > 0 else torch.zeros_like(counts)
        self.drop_p[:2] = 0.0  # never drop <pad>/<unk>
        for split, data in payload["splits"].items():
            seqs = unpack(data["feats"], data["lengths"])
            tags = unpack(data["tags"], data["lengths"])
            if split == "train":  # eval splits are never cut: every token is scored
                seqs, tags = [s[: self.max_len] for s in seqs], [t[: self.max_len] for t in tags]
            self.splits[split] = SequenceDataset(seqs, tags)

    def encode_text(self, text: str) -> dict[str, Tensor]:
        """One sentence as a batch, as the loaders give it (``attnbench maps --text``): each
        word's feature ids in the task's vocabularies, unknown ones <unk>; tags are 0."""
        if self.chars is not None:
            raise ConfigError(
                "--text needs the word features only; it cannot spell out new "
                "words for the char CNN (task.char_dim > 0)"
            )
        words = text.split()
        if not words:
            raise ConfigError("--text is empty; give a sentence")
        feats = torch.tensor(
            [
                [v.stoi.get(s, UNK_ID) for v, s in zip(self.vocabs, self.featurizer.strings(w))]
                for w in words
            ]
        )  # (N, F)
        return collate_tagged([(feats, torch.zeros(len(words), dtype=torch.long))])

    def dataloader(self, split: str) -> DataLoader:
        return bucketed_loader(
            self.splits[split], self.batch_size, split == "train", collate_tagged, self.num_workers
        )

    def build_embedder(self, d_model: int) -> TaggingEmbedder:
        chars = None
        if self.chars is not None:
            chars = CharCNN(
                self.chars["table"],
                len(self.chars["itos"]),
                self.char_dim,
                self.char_filters,
                d_model,
            )
        return TaggingEmbedder(self.sizes, d_model, self.drop_p, chars)

    def build_head(self, d_model: int) -> TokenClassifier:
        return TokenClassifier(d_model, self.classes)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), batch["label"].flatten(), ignore_index=-100)

    def metrics(self) -> dict:
        from torchmetrics import Accuracy, F1Score

        return {
            "acc": Accuracy(task="multiclass", num_classes=self.classes),
            "f1": F1Score(task="multiclass", num_classes=self.classes, average="macro"),
        }

    def metric_inputs(self, logits: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        real = batch["label"] != -100  # (B, N): padding is not scored
        return logits.argmax(-1)[real], batch["label"][real]

    def num_samples(self, batch: dict[str, Tensor]) -> int:
        return batch["tokens"].size(0)
