"""Audio input: 16-bit PCM WAV files and log-mel filterbank frames.

WAV files are read with the standard library's ``wave`` (plus numpy for the samples);
anything but mono 16-bit PCM is a one-line DataError naming the file.

Features are computed with ``torch.stft`` and a mel filterbank matrix built here. Why by
hand: torchaudio would be the maintained choice, but its wheels are built for one torch
release each and none exists for the torch attnbench runs on (``pip index versions
torchaudio`` stops at 2.11 while torch is 2.13); the filterbank is a few lines of tensor
code with the HTK mel formula (the one torchaudio uses by default, ``mel_scale="htk"``).

Frames are centred: frame t covers the window centred on sample t * hop (the signal is
zero-padded by half an FFT at both ends), so a recording of T samples gives 1 + T // hop
frames and frame t's label is whatever is sounding at sample t * hop.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnbench.data.errors import DataError, one_line
from attnbench.data.text import how_to_replace, unreadable
from attnbench.registry import ConfigError

WAV_HELP = "expected a mono 16-bit PCM WAV file"
LOG_FLOOR = 1e-6  # added to mel power before the log: silence stays finite


def read_wav(path: Path) -> tuple[Tensor, int]:
    """(samples (T,) float32 in [-1, 1), sample rate) of a mono 16-bit PCM WAV file."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            if channels != 1:
                raise DataError(f"{path}: {channels} channels; {WAV_HELP} (mix it down first)")
            if width != 2:
                raise DataError(f"{path}: {8 * width}-bit samples; {WAV_HELP}")
            expected = w.getnframes()
            data = w.readframes(expected)
    except (wave.Error, EOFError, RuntimeError, struct.error) as e:  # malformed chunks
        raise DataError(
            f"{path}: not a readable WAV file ({one_line(e)}); {how_to_replace(path)}"
        ) from None
    except OSError as e:
        raise unreadable(path, e) from None
    if len(data) < 2 * expected:
        raise DataError(
            f"{path}: truncated, the header promises {expected} samples but the file holds "
            f"{len(data) // 2}; {how_to_replace(path)}"
        )
    if expected == 0:
        raise DataError(f"{path}: holds no samples; {how_to_replace(path)}")
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return torch.from_numpy(samples), rate


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, sample_rate: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """(n_freqs, n_mels) triangular filters on the FFT bins 0..sample_rate/2; filter m
    rises from mel point m to m+1 and falls to m+2 (n_mels + 2 points equally spaced in
    mel between f_min and f_max). A filter that covers no FFT bin is a ConfigError."""
    f_max = sample_rate / 2 if f_max is None else f_max
    bins = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)  # (F,)
    mels = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2
    )
    points = mel_to_hz(mels.double())  # (M + 2,) Hz
    lower, centre, upper = points[:-2], points[1:-1], points[2:]  # (M,) each
    rising = (bins[:, None] - lower) / (centre - lower)  # (F, M)
    falling = (upper - bins[:, None]) / (upper - centre)
    fbank = torch.clamp(torch.minimum(rising, falling), min=0.0)
    empty = (fbank.sum(0) == 0).nonzero().flatten()
    if len(empty):
        raise ConfigError(
            f"task.n_mels={n_mels} is too many for a {2 * (n_freqs - 1)}-point FFT: mel band "
            f"{int(empty[0])} covers no frequency bin; use fewer mels or a longer task.win_ms"
        )
    return fbank.float()


class LogMel:
    """Log-mel filterbank frames: samples (T,) or (B, T) -> (frames, n_mels) or
    (B, frames, n_mels), frames = 1 + T // hop. One STFT per call (all frames at once)."""

    def __init__(self, sample_rate: int, win_ms: float, hop_ms: float, n_mels: int):
        self.sample_rate = sample_rate
        self.win = round(sample_rate * win_ms / 1000)
        self.hop = round(sample_rate * hop_ms / 1000)
        if self.win < 2 or self.hop < 1:
            raise ConfigError(
                f"task.win_ms={win_ms} / task.hop_ms={hop_ms} give a window of {self.win} and a "
                f"hop of {self.hop} samples at {sample_rate} Hz; need at least 2 and 1"
            )
        self.n_fft = 1 << (self.win - 1).bit_length()  # the next power of two >= win
        self.window = torch.hann_window(self.win)
        self.fbank = mel_filterbank(self.n_fft // 2 + 1, sample_rate, n_mels)  # (F, M)

    def frames(self, samples: int) -> int:
        return 1 + samples // self.hop

    def __call__(self, samples: Tensor) -> Tensor:
        spec = torch.stft(
            samples,
            self.n_fft,
            hop_length=self.hop,
            win_length=self.win,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (..., F, frames)
        power = spec.real.square() + spec.imag.square()
        mel = power.transpose(-1, -2) @ self.fbank  # (..., frames, M)
        return torch.log(mel + LOG_FLOOR)
