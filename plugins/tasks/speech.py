"""Spoken digits as log-mel frame sequences: the Free Spoken Digit Dataset, or a synthetic one.

Each recording becomes one vector per ``win_ms`` window every ``hop_ms`` (25 ms / 10 ms:
about 40 frames for a spoken digit at 8 kHz, at most ~230), so sequences are long and
mostly local: the lectures' case for truncated attention. Frames carry 1-D positions and a
key padding mask (recordings differ in length). Targets:

* ``digit`` (10 classes) or ``speaker`` (one per speaker, 6 in FSDD): one label per
  recording, from the mean over its frames.
* ``frames``: sequence labelling. Each example concatenates ``k`` recordings of the split,
  drawn without replacement by ``data_seed`` (every recording once per pass; ``mixes``
  passes over the training recordings, one over val and test), with a gap of faint noise
  between consecutive ones, uniform in [gap_ms/4, gap_ms]. Every frame is labelled with the
  digit being spoken, or 10 for a gap. A frame belongs to the recording its centre sample
  falls in. No energy threshold: the whole span of a recording carries its digit, silence
  at its edges included (FSDD's recordings are trimmed close to the speech, and a threshold
  would tie the labels to a level setting). Per-frame accuracy and macro-F1 skip padding.

Data: ``task.dataset=synthetic`` (built in, the default: per digit three chirps, per
speaker a pitch and a timbre, noise) or ``fsdd`` from <data_dir>/speech/fsdd/recordings/
(``{digit}_{speaker}_{index}.wav``; ``attnbench download fsdd``). The split is the
dataset's own by recording index: 0-4 test, 5-9 validation (carved out of FSDD's training
indices 5-49), the rest train. FSDD's features are computed once and cached
(attnbench.data.cache), keyed by the recordings' bytes and the feature settings (the
synthetic set is generated in about a second); normalisation (``norm``: per utterance,
``global`` from the training frames, or ``none``) is applied after loading.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.audio import LogMel, read_wav
from attnbench.data.batching import SequenceDataset, bucketed_loader
from attnbench.data.cache import cached, pack, unpack
from attnbench.data.errors import DataError
from attnbench.nn.ctx import Ctx
from attnbench.nn.embed import PooledClassifier
from attnbench.params import Range
from attnbench.registry import ConfigError
from attnbench.task import ClassificationTask

DATASETS = ("synthetic", "fsdd")
TARGETS = ("digit", "speaker", "frames")
NORMS = ("utterance", "global", "none")
SAMPLE_RATE = 8000
TEST_INDEX, VAL_INDEX = range(0, 5), range(5, 10)  # the rest of the indices: train
SPLITS = ("train", "val", "test")
DIGITS = 10
GAP = DIGITS  # the frame label of a gap between recordings
GAP_NOISE = 1e-3  # rms of the noise in a gap (about FSDD's quietest 20 ms)
IGNORE = -100  # padded labels (cross_entropy's ignore_index)
FSDD_NAME = re.compile(r"(?P<digit>\d)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav")
FSDD_HELP = (
    "put the Free Spoken Digit Dataset's recordings ({digit}_{speaker}_{index}.wav) under "
    "<data_dir>/speech/fsdd/recordings/ (set ATTNBENCH_DATA or data_dir=...); to fetch "
    "them: attnbench download fsdd --data-dir <data_dir>"
)


@dataclass
class Recording:
    samples: Tensor  # (T,) float32 in [-1, 1)
    digit: int
    speaker: str
    index: int


def split_of(index: int) -> str:
    """The dataset's own split by recording index (validation carved out of train)."""
    return "test" if index in TEST_INDEX else "val" if index in VAL_INDEX else "train"


# ----------------------------------------------------------------------------- sources


def fsdd_files(folder: Path) -> list[tuple[Path, int, str, int]]:
    """(path, digit, speaker, index) of every recording, in file-name order."""
    if not folder.is_dir():
        raise DataError(f"missing data folder {folder}; {FSDD_HELP}")
    found = []
    for path in sorted(folder.glob("*.wav")):
        match = FSDD_NAME.fullmatch(path.name)
        if match is None:
            raise DataError(
                f"{path}: not named {{digit}}_{{speaker}}_{{index}}.wav; rename or remove it"
            )
        found.append((path, int(match["digit"]), match["speaker"], int(match["index"])))
    if not found:
        raise DataError(f"{folder}: holds no .wav recordings; {FSDD_HELP}")
    return found


def read_fsdd(files: Sequence[tuple[Path, int, str, int]]) -> list[Recording]:
    recordings = []
    for path, digit, speaker, index in files:
        samples, rate = read_wav(path)
        if rate != SAMPLE_RATE:
            raise DataError(f"{path}: {rate} Hz; the speech task reads {SAMPLE_RATE} Hz audio")
        recordings.append(Recording(samples, digit, speaker, index))
    return recordings


def synthetic_recordings(takes: int, seed: int = 0) -> list[Recording]:
    """``takes`` recordings of each digit by each of 6 synthetic speakers at 8 kHz.

    A digit is a sequence of three chirps (start/end frequencies fixed per digit); a
    speaker scales every frequency by its pitch and mixes three harmonics in its own
    proportions. Each take varies in length, segment timing, pitch (+-3%), loudness and
    noise level (SNR about 15-30 dB)."""
    table = np.random.default_rng(1234)  # the classes themselves: the same for every seed
    chirps = table.uniform(250.0, 1300.0, size=(DIGITS, 3, 2))  # (digit, segment, from/to Hz)
    timbres = table.dirichlet(np.ones(3), size=6)  # (speaker, harmonic weight)
    pitches = np.linspace(0.8, 1.3, 6)
    harmonics = np.arange(1, 4)[:, None]  # (3, 1)
    rng = np.random.default_rng(seed)
    recordings = []
    for digit in range(DIGITS):
        for speaker in range(6):
            for index in range(takes):
                n = int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)
                t = np.arange(n) / n  # (T,) in [0, 1)
                edges = np.array([rng.uniform(0.25, 0.4), rng.uniform(0.6, 0.75)])
                segment = np.searchsorted(edges, t, side="right")  # (T,) in 0..2
                lo = np.concatenate([[0.0], edges])[segment]
                hi = np.concatenate([edges, [1.0]])[segment]
                u = (t - lo) / (hi - lo)  # position within the segment
                start, end = chirps[digit, segment, 0], chirps[digit, segment, 1]
                freq = (start + (end - start) * u) * pitches[speaker] * rng.uniform(0.97, 1.03)
                phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE  # (T,)
                audible = harmonics * freq < 0.45 * SAMPLE_RATE  # (3, T): no aliasing
                voice = (timbres[speaker][:, None] * np.sin(harmonics * phase) * audible).sum(0)
                level = rng.uniform(0.1, 0.5)
                wave = level * np.sqrt(np.sin(np.pi * t)) * voice
                wave += rng.normal(0.0, level * rng.uniform(0.02, 0.1), n)
                samples = torch.from_numpy(wave.astype(np.float32))
                recordings.append(Recording(samples, digit, f"synth{speaker}", index))
    return recordings


# ----------------------------------------------------------------------------- features


def concatenate(
    waves: Sequence[Tensor], gaps: Sequence[int], noise: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Recordings joined with ``gaps[i]`` samples between recording i and i+1, filled with
    consecutive pieces of ``noise`` (at least sum(gaps) samples; default silence).
    Returns (samples (T,), spans (k, 2): [start, end) of each recording)."""
    gaps = [int(g) for g in gaps[: len(waves) - 1]]
    noise = torch.zeros(sum(gaps)) if noise is None else noise
    parts, spans, at, used = [], [], 0, 0
    for i, wave in enumerate(waves):
        if i:
            parts.append(noise[used : used + gaps[i - 1]])
            at, used = at + gaps[i - 1], used + gaps[i - 1]
        parts.append(wave)
        spans.append((at, at + len(wave)))
        at += len(wave)
    return torch.cat(parts), torch.tensor(spans, dtype=torch.long)


def frame_labels(spans: Tensor, digits: Tensor, frames: int, hop: int, length: int) -> Tensor:
    """(frames,) long: the digit of the recording whose span holds the frame's centre
    sample (t * hop, the last one clamped into the signal), else GAP."""
    centres = (torch.arange(frames) * hop).clamp(max=length - 1)  # (frames,)
    starts = spans[:, 0].contiguous()
    which = torch.searchsorted(starts, centres, right=True) - 1  # the last start <= centre
    inside = centres < spans[which, 1]
    return torch.where(inside, digits[which], torch.full_like(centres, GAP))


def utterance_payload(recordings: list[Recording], logmel: LogMel) -> dict:
    """Per split: each recording's frames (packed), its digit, speaker id and index."""
    speakers = sorted({r.speaker for r in recordings})
    splits = {}
    for split in SPLITS:
        chosen = [r for r in recordings if split_of(r.index) == split]
        feats, lengths = pack([logmel(r.samples) for r in chosen])  # (sum N, M), (n,)
        splits[split] = {
            "feats": feats,
            "lengths": lengths,
            "digit": torch.tensor([r.digit for r in chosen], dtype=torch.long),
            "speaker": torch.tensor([speakers.index(r.speaker) for r in chosen]),
            "index": torch.tensor([r.index for r in chosen], dtype=torch.long),
        }
    return {"speakers": speakers, "splits": splits}


def mixture_payload(
    recordings: list[Recording], logmel: LogMel, k: int, gap: tuple[int, int], mixes: int, seed: int
) -> dict:
    """Per split: examples of k concatenated recordings (the last of a pass may hold fewer),
    their frames and per-frame labels (both packed)."""
    splits = {}
    for number, split in enumerate(SPLITS):
        chosen = [r for r in recordings if split_of(r.index) == split]
        rng = np.random.default_rng([seed, number])
        feats, labels = [], []
        for _ in range(mixes if split == "train" else 1):
            order = rng.permutation(len(chosen))
            for group in np.array_split(order, -(-len(chosen) // k)):
                gaps = rng.integers(gap[0], gap[1] + 1, size=len(group) - 1)
                noise = rng.normal(0.0, GAP_NOISE, int(gaps.sum())).astype(np.float32)
                noise = torch.from_numpy(noise)
                samples, spans = concatenate([chosen[i].samples for i in group], gaps, noise)
                digits = torch.tensor([chosen[i].digit for i in group], dtype=torch.long)
                x = logmel(samples)  # (N, M)
                feats.append(x)
                labels.append(frame_labels(spans, digits, len(x), logmel.hop, len(samples)))
        packed, lengths = pack(feats)
        splits[split] = {"feats": packed, "lengths": lengths, "labels": torch.cat(labels)}
    return {"splits": splits}


def normalise(feats: Tensor, lengths: Tensor, norm: str, train: Tensor | None = None) -> Tensor:
    """Packed frames (sum N, M) -> zero mean, unit variance per mel band: over each
    utterance ("utterance"), over the training frames ``train`` ("global"), or as they are."""
    if norm == "none":
        return feats
    if norm == "global":
        return (feats - train.mean(0)) / (train.std(0) + 1e-5)
    segment = torch.repeat_interleave(torch.arange(len(lengths)), lengths)  # (sum N,)
    count = lengths.clamp(min=1)[:, None].to(feats.dtype)  # (n, 1)
    mean = torch.zeros(len(lengths), feats.size(1)).index_add_(0, segment, feats) / count
    centred = feats - mean[segment]
    var = torch.zeros_like(mean).index_add_(0, segment, centred.square()) / count
    return centred / (var[segment] + 1e-5).sqrt()


# ----------------------------------------------------------------------------- modules


class FrameEmbedder(nn.Module):
    """batch["frames"] (B, N, n_mels) -> (Linear (B, N, d), Ctx with 1-D positions and the
    key padding mask from batch["lengths"])."""

    def __init__(self, n_mels: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(n_mels, d_model)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Ctx]:
        frames, lengths = batch["frames"], batch["lengths"]
        b, n = frames.shape[:2]
        positions = torch.arange(n, device=frames.device)  # (N,)
        real = positions[None, :] < lengths[:, None]  # (B, N) True = a frame
        ctx = Ctx(key_padding_mask=real, positions=positions.expand(b, n))
        return self.proj(frames), ctx


class FrameClassifier(nn.Module):
    """Per-frame linear layer: (B, N, d) -> (B, N, classes)."""

    def __init__(self, d_model: int, classes: int):
        super().__init__()
        self.proj = nn.Linear(d_model, classes)

    def forward(self, h: Tensor, ctx: Ctx) -> Tensor:
        return self.proj(h)


def collate_frames(items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Pad frames (N, M) with zeros and per-frame labels with IGNORE, one op each."""
    feats, labels = zip(*items)
    frames = pad_sequence(feats, batch_first=True)  # (B, N, M)
    lengths = torch.tensor([len(f) for f in feats])
    if labels[0].dim() == 0:
        label = torch.stack(labels)  # (B,)
    else:
        label = pad_sequence(labels, batch_first=True, padding_value=IGNORE)  # (B, N)
    return {"frames": frames, "lengths": lengths, "label": label}


# ----------------------------------------------------------------------------- task


@register("task", "speech")
class Speech(ClassificationTask):
    """Spoken digits as log-mel frames: task.target=digit|speaker|frames on task.dataset=
    synthetic (built in) or fsdd (the Free Spoken Digit Dataset, from data_dir)."""

    def __init__(
        self,
        data_dir: str,
        dataset: Literal["synthetic", "fsdd"] = "synthetic",
        target: Literal["digit", "speaker", "frames"] = "digit",
        win_ms: Annotated[float, Range(min=0, min_open=True)] = 25.0,
        hop_ms: Annotated[float, Range(min=0, min_open=True)] = 10.0,
        n_mels: Annotated[int, Range(min=1)] = 40,
        norm: Literal["utterance", "global", "none"] = "utterance",
        k: Annotated[int, Range(min=1)] = 6,
        gap_ms: Annotated[float, Range(min=0)] = 200.0,
        mixes: Annotated[int, Range(min=1)] = 4,
        data_seed: int = 0,
        synthetic_takes: Annotated[int, Range(min=VAL_INDEX.stop + 1)] = 25,
        batch_size: int = 32,
        num_workers: int = 0,
    ):
        super().__init__(data_dir)
        for name, value, allowed in (
            ("dataset", dataset, DATASETS),
            ("target", target, TARGETS),
            ("norm", norm, NORMS),
        ):
            if value not in allowed:
                raise ConfigError(f"task.{name}={value!r} is not one of {', '.join(allowed)}")
        if win_ms <= 0 or hop_ms <= 0 or n_mels < 1:
            raise ConfigError("task.win_ms and task.hop_ms must be > 0, task.n_mels >= 1")
        if k < 1 or mixes < 1 or gap_ms < 0:
            raise ConfigError("task.k and task.mixes must be >= 1, task.gap_ms >= 0")
        if dataset == "synthetic" and synthetic_takes <= VAL_INDEX.stop:
            raise ConfigError(
                f"task.synthetic_takes={synthetic_takes} leaves no training recordings: "
                f"indices {TEST_INDEX.start}-{VAL_INDEX.stop - 1} are test and validation; "
                f"use at least {VAL_INDEX.stop + 1}"
            )
        self.dataset, self.target, self.norm = dataset, target, norm
        self.win_ms, self.hop_ms, self.n_mels = win_ms, hop_ms, n_mels
        self.k, self.gap_ms, self.mixes, self.data_seed = k, gap_ms, mixes, data_seed
        self.synthetic_takes = synthetic_takes
        self.batch_size, self.num_workers = batch_size, num_workers
        self.logmel = LogMel(SAMPLE_RATE, win_ms, hop_ms, n_mels)  # refuses bad settings now
        self.classes = DIGITS + 1 if target == "frames" else DIGITS  # speaker: set in setup
        self.splits: dict[str, SequenceDataset] = {}
        self.cache_path: Path | None = None
        self.from_cache = False

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / "speech" / "fsdd" / "recordings"

    def _settings(self) -> dict:
        settings = {
            "dataset": self.dataset,
            "sample_rate": SAMPLE_RATE,
            "win_ms": self.win_ms,
            "hop_ms": self.hop_ms,
            "n_mels": self.n_mels,
            "frames": self.target == "frames",
        }
        if self.target == "frames":
            settings.update(k=self.k, gap_ms=self.gap_ms, mixes=self.mixes, seed=self.data_seed)
        return settings

    def _build(self, recordings: list[Recording]) -> dict:
        if self.target != "frames":
            return utterance_payload(recordings, self.logmel)
        gap_max = round(SAMPLE_RATE * self.gap_ms / 1000)
        gap = (gap_max // 4, gap_max)
        return mixture_payload(recordings, self.logmel, self.k, gap, self.mixes, self.data_seed)

    def _payload(self) -> dict:
        if self.dataset == "synthetic":  # generated in about a second: nothing to cache
            return self._build(synthetic_recordings(self.synthetic_takes))
        files = fsdd_files(self.folder)
        payload, self.cache_path, self.from_cache = cached(
            "speech",
            [path for path, *_ in files],
            self._settings(),
            lambda: self._build(read_fsdd(files)),
            self.data_dir,
        )
        return payload

    def setup(self) -> None:
        payload = self._payload()
        data = payload["splits"]
        empty = [s for s in SPLITS if len(data[s]["lengths"]) == 0]
        if empty:
            where = self.folder if self.dataset == "fsdd" else "the synthetic set"
            raise DataError(
                f"{where}: no recordings for the {'/'.join(empty)} split (indices "
                f"{TEST_INDEX.start}-{TEST_INDEX.stop - 1} test, {VAL_INDEX.start}-"
                f"{VAL_INDEX.stop - 1} validation, higher train); {FSDD_HELP}"
            )
        if self.target == "speaker":
            self.speakers = payload["speakers"]
            self.classes = len(self.speakers)
        train = data["train"]["feats"]
        for split in SPLITS:
            d = data[split]
            feats = normalise(d["feats"], d["lengths"], self.norm, train)
            seqs = unpack(feats, d["lengths"])
            if self.target == "frames":
                labels = unpack(d["labels"], d["lengths"])
            else:
                labels = d[self.target]
            self.splits[split] = SequenceDataset(seqs, labels)

    def dataloader(self, split: str) -> DataLoader:
        return bucketed_loader(
            self.splits[split], self.batch_size, split == "train", collate_frames, self.num_workers
        )

    def build_embedder(self, d_model: int) -> FrameEmbedder:
        return FrameEmbedder(self.n_mels, d_model)

    def build_head(self, d_model: int) -> nn.Module:
        if self.target == "frames":
            return FrameClassifier(d_model, self.classes)
        return PooledClassifier(d_model, self.classes)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        import torch.nn.functional as F

        # (B, C) / (B,) for a recording's label, (B, N, C) / (B, N) per frame
        return F.cross_entropy(logits.flatten(0, -2), batch["label"].flatten(), ignore_index=IGNORE)

    def metric_inputs(self, logits: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        real = batch["label"] != IGNORE  # padded frames are not scored
        return logits.argmax(-1)[real], batch["label"][real]
