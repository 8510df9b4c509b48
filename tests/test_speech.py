"""The speech task: WAV reading, log-mel features, the split by recording index, the frames
variant's labels, bad WAV files, runs through the harness and the task contract."""

from __future__ import annotations

import math
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from attnbench.plugins.tasks.speech import concatenate, frame_labels
from conftest import fast_dev_run

from attnbench import registry
from attnbench.data.audio import LogMel, read_wav
from attnbench.data.errors import DataError
from attnbench.registry import ConfigError
from attnbench.testing import assert_conforms

Speech = registry.get("task", "speech").cls

RATE = 8000
GAP = 10  # the frames variant's label for a gap (digits are 0-9)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE, width: int = 2, channels=1):
    """A PCM WAV written with the standard library, independently of the code under test."""
    if width == 2:
        data = (np.clip(samples, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()
    else:  # 8-bit WAV samples are unsigned
        data = (np.clip(samples, -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    if channels == 2:
        data = b"".join(data[i : i + width] * 2 for i in range(0, len(data), width))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)


def sine(freq: float, n: int, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(n) / RATE)


def htk_band(freq: float, n_mels: int = 40, top: float = RATE / 2) -> int:
    """The mel band whose centre is nearest ``freq``: n_mels centres equally spaced on the
    HTK mel scale 2595 log10(1 + f/700) between 0 Hz and ``top`` (endpoints excluded)."""
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    step = mel(top) / (n_mels + 1)
    return min(range(n_mels), key=lambda m: abs((m + 1) * step - mel(freq)))


# ----------------------------------------------------------------------------- features


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_a_pure_tone_lands_in_its_mel_band(tmp_path, freq):
    path = tmp_path / "tone.wav"
    write_wav(path, sine(freq, 4000))  # 0.5 s
    samples, rate = read_wav(path)
    assert rate == RATE and samples.shape == (4000,)
    feats = LogMel(RATE, 25.0, 10.0, 40)(samples)
    assert feats.shape == (1 + 4000 // 80, 40)  # one frame per 10 ms hop, centred
    inner = feats[3:-3]  # frames whose window lies inside the tone
    assert (inner.argmax(-1) == htk_band(freq)).all()
    # the tone's band holds far more energy than a band an octave away
    assert (inner[:, htk_band(freq)] - inner[:, htk_band(freq / 2)] > 3).all()


@pytest.mark.parametrize(
    "win_ms, hop_ms, samples, frames", [(25, 10, 3999, 50), (30, 5, 4000, 101)]
)
def test_frame_count_follows_the_hop(win_ms, hop_ms, samples, frames):
    feats = LogMel(RATE, win_ms, hop_ms, 40)(torch.from_numpy(sine(700.0, samples)).float())
    assert feats.shape == (frames, 40)


def test_too_many_mels_for_the_window_is_a_config_error():
    with pytest.raises(ConfigError, match="task.n_mels=128 is too many"):
        LogMel(RATE, 25.0, 10.0, 128)


# ----------------------------------------------------------------------------- bad files


def test_bad_wav_files_are_one_line_naming_the_file(tmp_path):
    cases = {
        "corrupt.wav": lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk, not a wav"),
        "eight_bit.wav": lambda p: write_wav(p, sine(440, 800), width=1),
        "stereo.wav": lambda p: write_wav(p, sine(440, 800), channels=2),
        "empty.wav": lambda p: write_wav(p, np.zeros(0)),
    }
    reasons = {
        "corrupt.wav": "not a readable WAV file",
        "eight_bit.wav": "8-bit samples; expected a mono 16-bit PCM WAV",
        "stereo.wav": "2 channels; expected a mono 16-bit PCM WAV",
        "empty.wav": "holds no samples",
    }
    for name, make in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(DataError) as err:
            read_wav(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and reasons[name] in message, message
        assert "\n" not in message


def test_the_task_reports_a_bad_recording_by_name(tmp_path):
    folder = tmp_path / "speech" / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for index in range(11):
        write_wav(folder / f"3_ann_{index}.wav", sine(440, 1600))
    write_wav(folder / "3_ann_11.wav", sine(440, 1600), channels=2)
    with pytest.raises(DataError, match=r"3_ann_11\.wav: 2 channels") as err:
        Speech(str(tmp_path), dataset="fsdd").setup()
    assert "\n" not in str(err.value)


def test_a_missing_folder_says_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError, match=r"missing data folder .*recordings.*download fsdd"):
        Speech(str(tmp_path), dataset="fsdd").setup()


# ----------------------------------------------------------------------------- split


def fixture_dir(root: Path, digits=(0, 1), speakers=("alice", "bob"), takes=12) -> Path:
    """Recordings whose length encodes their index: 800 + 80 * index samples, so a
    recording has 11 + index frames at the 10 ms hop."""
    folder = root / "speech" / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for digit in digits:
        for speaker in speakers:
            for index in range(takes):
                n = 800 + 80 * index
                write_wav(folder / f"{digit}_{speaker}_{index}.wav", sine(400 + 300 * digit, n))
    return folder


def test_the_split_is_the_datasets_own_by_index(tmp_path):
    fixture_dir(tmp_path)
    task = Speech(str(tmp_path), dataset="fsdd", target="speaker")
    task.setup()
    frames = {s: sorted(set(task.splits[s].lengths.tolist())) for s in ("train", "val", "test")}
    assert frames["test"] == [11, 12, 13, 14, 15]  # indices 0-4
    assert frames["val"] == [16, 17, 18, 19, 20]  # 5-9
    assert frames["train"] == [21, 22]  # 10-11
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [8, 20, 20]
    assert task.classes == 2 and task.speakers == ["alice", "bob"]
    assert sorted(torch.stack(list(task.splits["test"].labels)).tolist()) == [0] * 10 + [1] * 10


def test_features_are_cached_per_setting(tmp_path):
    fixture_dir(tmp_path, takes=11)
    first = Speech(str(tmp_path), dataset="fsdd")
    first.setup()
    again = Speech(str(tmp_path), dataset="fsdd", norm="global")  # normalised after loading
    again.setup()
    other_hop = Speech(str(tmp_path), dataset="fsdd", hop_ms=20.0)
    other_hop.setup()
    assert not first.from_cache and again.from_cache and again.cache_path == first.cache_path
    assert not other_hop.from_cache and other_hop.cache_path != first.cache_path
    # 160-sample hop: test recordings of 800..1120 samples have 6, 6, 7, 7, 8 frames
    assert sorted(set(other_hop.splits["test"].lengths.tolist())) == [6, 7, 8]


def test_utterance_normalisation_gives_each_recording_zero_mean_unit_variance():
    task = Speech("unused", synthetic_takes=11, norm="utterance")
    task.setup()
    for x in task.splits["val"].sequences[:20]:
        assert x.mean(0).abs().max() < 1e-4
        assert (x.std(0, unbiased=False) - 1).abs().max() < 1e-2


# ----------------------------------------------------------------------------- frames


def test_frame_labels_follow_the_concatenation_boundaries():
    waves = [torch.ones(800), torch.ones(1200), torch.ones(960)]
    samples, spans = concatenate(waves, [400, 240])
    assert samples.shape == (800 + 400 + 1200 + 240 + 960,)
    assert spans.tolist() == [[0, 800], [1200, 2400], [2640, 3600]]
    labels = frame_labels(spans, torch.tensor([4, 7, 2]), 1 + 3600 // 80, 80, 3600)
    # frame t is centred on sample 80 t: [0, 800) -> 10 frames, the gap [800, 1200) -> 5,
    # [1200, 2400) -> 15, the gap [2400, 2640) -> 3, [2640, 3600] -> 13 (the last frame's
    # centre, 3600, is the end of the signal)
    assert labels.tolist() == [4] * 10 + [GAP] * 5 + [7] * 15 + [GAP] * 3 + [2] * 13


def test_frames_variant_labels_match_what_is_sounding(tmp_path):
    """Each digit is a tone of its own; every labelled frame away from a boundary must show
    that digit's tone, every gap frame silence."""
    tones = {0: 400.0, 1: 700.0, 2: 1000.0, 3: 1600.0}
    folder = tmp_path / "speech" / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for digit, freq in tones.items():
        for index in range(11):
            n = int(rng.integers(1200, 4000))
            write_wav(folder / f"{digit}_ann_{index}.wav", sine(freq, n))
    task = Speech(str(tmp_path), dataset="fsdd", target="frames", norm="none", k=4, mixes=2)
    task.setup()
    assert task.classes == 11
    # every recording of a split is one run of its digit's label, once per pass: 4 digits x
    # 5 indices in val and test, 4 digits x 1 index (10) twice in train
    for split, recordings in (("val", 20), ("test", 20), ("train", 2 * 4)):
        runs = 0
        for y in task.splits[split].labels:
            before = torch.cat([torch.tensor([GAP]), y[:-1]])
            runs += int(((y != GAP) & (before == GAP)).sum())
        assert runs == recordings, split
    for x, y in zip(task.splits["test"].sequences, task.splits["test"].labels):
        assert len(x) == len(y) and y[0] != GAP and y[-1] != GAP  # no gap at either end
        steady = torch.ones_like(y, dtype=torch.bool)
        for shift in (1, 2, 3):  # the window (25 ms) reaches 1.25 hops either side
            steady[shift:] &= y[shift:] == y[:-shift]
            steady[:-shift] &= y[:-shift] == y[shift:]
        for t in steady.nonzero().flatten().tolist():
            if y[t] == GAP:
                assert x[t].max() < -5  # faint noise only: log mel power
            else:
                assert x[t].argmax() == htk_band(tones[int(y[t])]), (t, int(y[t]))


def test_frames_examples_are_drawn_from_the_data_seed(tmp_path):
    a = Speech("unused", target="frames", synthetic_takes=11, k=5)
    b = Speech("unused", target="frames", synthetic_takes=11, k=5)
    c = Speech("unused", target="frames", synthetic_takes=11, k=5, data_seed=1)
    for task in (a, b, c):
        task.setup()
    lengths = [t.splits["train"].lengths for t in (a, b, c)]
    assert torch.equal(lengths[0], lengths[1]) and not torch.equal(lengths[0], lengths[2])
    assert len(a.splits["train"]) == 4 * math.ceil(60 / 5)  # 4 passes over 60 recordings


# ----------------------------------------------------------------------------- harness


def test_frames_carry_1d_positions_and_a_padding_mask():
    task = Speech("unused", synthetic_takes=11, batch_size=4)
    task.setup()
    batch = next(iter(task.dataloader("val")))
    x, ctx = task.build_embedder(8)(batch)
    b, n = batch["frames"].shape[:2]
    assert x.shape == (b, n, 8)
    assert torch.equal(ctx.positions, torch.arange(n).expand(b, n))
    assert ctx.key_padding_mask.sum(1).tolist() == batch["lengths"].tolist()


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=transformer", "posenc=rope"],
        ["model=cnn", "task.target=speaker"],
        ["model=rnn", "task.target=frames"],
        ["model=transformer", "task.target=frames", "attention=truncated", "attention.window=4"],
    ],
    ids=["transformer-digit", "cnn-speaker", "rnn-frames", "truncated-frames"],
)
def test_synthetic_fast_dev_run(overrides, tmp_path):
    summary = fast_dev_run(
        ["task=speech", "task.synthetic_takes=11", "model.d_model=16", *overrides], tmp_path
    )
    assert summary["status"] == "ok"
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert summary["plugins"]["model"]["name"] == overrides[0].split("=")[1]


@pytest.mark.parametrize("target", ["digit", "frames"])
def test_the_task_conforms(target):
    checks = {
        c.name: c
        for c in assert_conforms(
            "task", "speech", target=target, synthetic_takes=11, k=3, batch_size=4
        )
    }
    assert checks["ctx_padding"].detail.startswith("pads, key_padding_mask")
    assert checks["ctx_grid"].detail.startswith("grid False")


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="task.target='phones' is not one of digit"):
        Speech("unused", target="phones")
    with pytest.raises(ConfigError, match="task.synthetic_takes=8 leaves no training"):
        Speech("unused", synthetic_takes=8)


# ----------------------------------------------------------------------------- real data


def test_setup_on_a_subset_of_the_real_recordings(shared_data, tmp_path):
    source = shared_data / "speech" / "fsdd" / "recordings"
    folder = tmp_path / "speech" / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    picked = [p for p in sorted(source.glob("*_[gj]*_*.wav")) if int(p.stem.split("_")[2]) < 12]
    for path in picked:  # george and jackson, indices 0-11: 240 recordings
        shutil.copyfile(path, folder / path.name)
    task = Speech(str(tmp_path), dataset="fsdd")
    task.setup()
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [40, 100, 100]
    with wave.open(str(folder / "7_george_3.wav")) as w:
        samples = w.getnframes()
    assert 1 + samples // 80 in task.splits["test"].lengths.tolist()
    labels = torch.stack(list(task.splits["test"].labels))
    assert labels.bincount().tolist() == [10] * 10  # each digit: 2 speakers x 5 indices
    frames = Speech(str(tmp_path), dataset="fsdd", target="frames", k=4)
    frames.setup()
    assert len(frames.splits["test"]) == 25  # 100 recordings, 4 each
    assert all(torch.isfinite(x).all() for x in frames.splits["test"].sequences)
