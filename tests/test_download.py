"""Checksum-verified downloads, against file:// URLs and a local http.server (no network)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from attnbench.data import download as dl
from attnbench.data.text import DataError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def http_root(tmp_path):
    """A folder served on 127.0.0.1 for the duration of the test; yields (folder, url)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_over_http_verifies_and_places_files(http_root, tmp_path):
    root, url = http_root
    a, b = b"alpha\n", gzip.compress(b"beta\n")
    (root / "a.txt").write_bytes(a)
    (root / "b.gz").write_bytes(b)
    source = dl.Source(
        "stuff",
        "https://example.invalid/",
        (
            dl.Remote("a.txt", "a.txt", sha(a)),
            dl.Remote("b.gz", "sub/b.gz", sha(b"beta\n"), gunzip_digest=True),
        ),
    )
    data = tmp_path / "data"
    written = dl.fetch(source, data, base_url=url)
    assert written == [data / "stuff" / "a.txt", data / "stuff" / "sub" / "b.gz"]
    assert written[0].read_bytes() == a and written[1].read_bytes() == b
    assert sorted(p.name for p in data.iterdir()) == ["stuff"]  # no staging left over


def test_zip_members_and_git_blob(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SST-2/train.tsv", "sentence\tlabel\nok\t1\n")
        z.writestr("SST-2/test.tsv", "index\tsentence\n0\tok\n")
    (tmp_path / "SST-2.zip").write_bytes(buf.getvalue())
    test = b"index\tsentence\n0\tok\n"
    source = dl.Source(
        "sentiment",
        "https://example.invalid/",
        (
            dl.Remote(
                "SST-2.zip", "train.tsv", sha(b"sentence\tlabel\nok\t1\n"), member="SST-2/train.tsv"
            ),
            dl.Remote(
                "SST-2.zip",
                "test.tsv",
                member="SST-2/test.tsv",
                git_blob=hashlib.sha1(b"blob %d\0" % len(test) + test).hexdigest(),
            ),
        ),
    )
    written = dl.fetch(source, tmp_path / "data", base_url=tmp_path.as_uri())
    assert [p.name for p in written] == ["train.tsv", "test.tsv"]
    assert written[1].read_bytes() == test


def test_checksum_mismatch_is_one_line_and_leaves_nothing(http_root, tmp_path):
    root, url = http_root
    (root / "good.txt").write_bytes(b"good")
    (root / "bad.txt").write_bytes(b"tampered")
    source = dl.Source(
        "stuff",
        "https://example.invalid/",
        (
            dl.Remote("good.txt", "good.txt", sha(b"good")),
            dl.Remote("bad.txt", "bad.txt", sha(b"original")),
        ),
    )
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match=r"checksum mismatch for .*bad\.txt") as err:
        dl.fetch(source, fresh, base_url=url)
    assert "\n" not in str(err.value)
    assert not fresh.exists()  # not even the good file, nor the folder we made
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(DataError):
        dl.fetch(source, existing, base_url=url)
    assert list(existing.iterdir()) == []


def test_unreachable_source_is_a_clear_error(tmp_path):
    source = dl.Source("x", "", (dl.Remote("missing.txt", "m.txt", sha(b"")),))
    with pytest.raises(DataError, match=r"could not download .*missing\.txt.*--base-url"):
        dl.fetch(source, tmp_path / "data", base_url=(tmp_path / "nowhere").as_uri())
    assert not (tmp_path / "data").exists()


def test_unknown_dataset():
    with pytest.raises(DataError, match="ud_ewt"):
        dl.download("imagenet", ".")


def test_every_source_pins_a_digest():
    for name, source in dl.SOURCES.items():
        for remote in source.files:
            digest = remote.sha256 or remote.git_blob
            assert digest and len(digest) in (40, 64), (name, remote)
            assert source.base_url.startswith("https://")


def test_download_ud_ewt_from_a_local_mirror(shared_data, tmp_path):
    """The pinned UD checksums match the real files (served decompressed, as upstream)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for split in ("train", "dev", "test"):
        gz = shared_data / "pos" / f"en_ewt-ud-{split}.conllu.gz"
        (mirror / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    written = dl.download("ud_ewt", tmp_path / "data", base_url=mirror.as_uri())
    assert sorted(p.name for p in written) == [
        "en_ewt-ud-dev.conllu",
        "en_ewt-ud-test.conllu",
        "en_ewt-ud-train.conllu",
    ]
    assert all(p.parent == tmp_path / "data" / "pos" for p in written)
    for gz in (shared_data / "graph" / "planetoid_raw").glob("ind.cora.*.gz"):
        (mirror / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    assert len(dl.download("cora", tmp_path / "data", base_url=mirror.as_uri())) == 8


def test_download_multi30k_and_mnist_checksums_match_shared_data(shared_data, tmp_path):
    # Multi30k gz files are upstream's bytes; our MNIST .gz files are recompressed, which
    # the decompressed-content digest is meant to accept.
    for name, folder in (("multi30k", "translation"), ("mnist", "images/mnist")):
        written = dl.download(name, tmp_path / "data", base_url=(shared_data / folder).as_uri())
        assert len(written) == len(dl.SOURCES[name].files)


def test_command_line(tmp_path, capsys):
    (tmp_path / "mirror").mkdir()
    for name in (
        "train.en",
        "train.de",
        "val.en",
        "val.de",
        "test_2016_flickr.en",
        "test_2016_flickr.de",
    ):
        (tmp_path / "mirror" / f"{name}.gz").write_bytes(b"not the real file")
    with pytest.raises(SystemExit) as exit_:
        dl.main(
            [
                "multi30k",
                "--data-dir",
                str(tmp_path / "data"),
                "--base-url",
                (tmp_path / "mirror").as_uri(),
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checksum mismatch") and err.count("\n") == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "served",
    [b"plain text, not gzip", gzip.compress(b"x" * 1000)[:-4]],
    ids=["not-gzip", "truncated-gzip"],
)
def test_broken_gzip_download_is_one_line_and_leaves_nothing(tmp_path, served):
    (tmp_path / "f.gz").write_bytes(served)
    source = dl.Source("x", "", (dl.Remote("f.gz", "f.gz", sha(b"x" * 1000), gunzip_digest=True),))
    with pytest.raises(DataError, match=r"f\.gz: not intact gzip data") as err:
        dl.fetch(source, tmp_path / "data", base_url=tmp_path.as_uri())
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()


def test_broken_zip_member_is_one_line(tmp_path):
    (tmp_path / "SST-2.zip").write_bytes(b"PK\x03\x04 not really a zip")
    source = dl.Source("s", "", (dl.Remote("SST-2.zip", "t.tsv", sha(b""), member="SST-2/t.tsv"),))
    with pytest.raises(DataError, match=r"SST-2\.zip: .*expected a zip archive holding"):
        dl.fetch(source, tmp_path / "data", base_url=tmp_path.as_uri())
    assert not (tmp_path / "data").exists()


def test_unwritable_data_directory_is_one_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"alpha")
    source = dl.Source("x", "", (dl.Remote("a.txt", "a.txt", sha(b"alpha")),))
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("a file, not a directory")
    with pytest.raises(DataError, match=r"cannot write into the data directory .*file") as err:
        dl.fetch(source, not_a_dir, base_url=tmp_path.as_uri())
    assert "\n" not in str(err.value)
    assert not_a_dir.read_text() == "a file, not a directory"


def test_a_directory_in_the_way_is_one_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"alpha")
    source = dl.Source("x", "", (dl.Remote("a.txt", "a.txt", sha(b"alpha")),))
    (tmp_path / "data" / "x" / "a.txt" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cannot write .*a\.txt") as err:
        dl.fetch(source, tmp_path / "data", base_url=tmp_path.as_uri())
    assert "\n" not in str(err.value)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["x"]  # no staging left


FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_MEMBER = f"free-spoken-digit-dataset-{FSDD_COMMIT}/recordings/"
# sha256 of all 3,000 recordings concatenated in file-name order (shared/data/speech/README.md)
FSDD_COMBINED = "ddb17656a0bca4c5ddace082be188ca630516dc2ef1110afe3c4e9cc71173de4"


def test_download_fsdd_from_a_local_archive(shared_data, tmp_path):
    """GitHub's archive layout (<repo>-<commit>/recordings/*.wav) built from the real files:
    every recording's pinned sha256 matches, and together they give the README's checksum."""
    recordings = sorted((shared_data / "speech" / "fsdd" / "recordings").glob("*.wav"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / f"{FSDD_COMMIT}.zip", "w") as z:
        z.writestr(f"free-spoken-digit-dataset-{FSDD_COMMIT}/README.md", "FSDD\n")
        for path in recordings:
            z.write(path, FSDD_MEMBER + path.name)
    written = dl.download("fsdd", tmp_path / "data", base_url=mirror.as_uri())
    folder = tmp_path / "data" / "speech" / "fsdd" / "recordings"
    assert len(written) == 3000 and all(p.parent == folder for p in written)
    combined = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        combined.update(path.read_bytes())
    assert combined.hexdigest() == FSDD_COMBINED
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in recordings]


def test_a_tampered_fsdd_recording_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / f"{FSDD_COMMIT}.zip", "w") as z:
        z.writestr(FSDD_MEMBER + "0_george_0.wav", b"RIFF not the recording")
    with pytest.raises(DataError, match=r"checksum mismatch .*recordings/0_george_0\.wav\]") as e:
        dl.download("fsdd", tmp_path / "data", base_url=tmp_path.as_uri())
    assert "\n" not in str(e.value)
    assert not (tmp_path / "data").exists()
