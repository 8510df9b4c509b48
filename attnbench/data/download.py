"""Download the real data sets from their canonical sources, checksum-verified.

For users who are online; nothing in attnbench downloads at training or test time.

    attnbench download ud_ewt --data-dir ~/data   # -> ~/data/pos/*.conllu

or from Python: ``download("ud_ewt", "~/data")``.

Data sets (folder under the data directory, source):
  ud_ewt       pos/          UniversalDependencies/UD_English-EWT, tag r2.16 (raw files)
  sst2         sentiment/    GLUE's SST-2.zip (train/dev labelled; test unlabeled, GLUE order)
  multi30k     translation/  multi30k/dataset, data/task1/raw (gzip files)
  cora         graph/        kimiyoung/planetoid, data/ind.cora.* (pickles, uncompressed)
  mnist        images/mnist/ the PyTorch (ossci-datasets) MNIST mirror (IDX .gz files)
  fsdd         speech/fsdd/  Jakobovski/free-spoken-digit-dataset, recordings/*.wav out of
                             the repository's zip archive at a pinned commit

Every file is checked against a pinned digest: sha256 of the bytes, sha256 after
gunzip (where mirrors recompress), or the upstream git blob id (GLUE's unlabeled SST-2
test, whose sha256 we do not pin). All files of a data set are fetched into a temporary
folder inside the data directory and moved into place only when every one verified, so
a failed or tampered download leaves nothing behind. ``base_url`` replaces the source's
base URL (a mirror, or a local ``file://`` folder laid out like the source).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from attnbench.data.errors import DataError, one_line


@dataclass(frozen=True)
class Remote:
    """One file: fetched from ``<base>/<url>``, written to ``<data_dir>/<folder>/<dest>``."""

    url: str
    dest: str
    sha256: str | None = None  # of the bytes written (or after gunzip, see gunzip_digest)
    gunzip_digest: bool = False  # sha256 is of the decompressed content
    git_blob: str | None = None  # sha1 of "blob <size>\0<content>" (git hash-object)
    member: str | None = None  # take this member out of the zip archive at url


@dataclass(frozen=True)
class Source:
    folder: str
    base_url: str
    files: tuple[Remote, ...]
    note: str = ""


_UD = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/"
_M30K = (
    "https://raw.githubusercontent.com/multi30k/dataset/"
    "a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/"
)
_PLANETOID = (
    "https://raw.githubusercontent.com/kimiyoung/planetoid/"
    "af6abf468a772cc055bec88c52e4d6f51b7c37e3/data/"
)
_FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"


def _fsdd() -> Source:
    """3,000 WAV files out of one archive: GitHub builds archives on request, so their
    bytes are not promised to stay the same; each recording's own sha256 is pinned instead
    (attnbench/data/fsdd_manifest.py)."""
    from attnbench.data.fsdd_manifest import recordings_sha256

    member = f"free-spoken-digit-dataset-{_FSDD_COMMIT}/recordings/"
    return Source(
        "speech/fsdd",
        "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/",
        tuple(
            Remote(f"{_FSDD_COMMIT}.zip", f"recordings/{name}", digest, member=member + name)
            for name, digest in recordings_sha256().items()
        ),
        note="the speech task splits the recordings by index: 0-4 test, 5-9 validation, "
        "10-49 train (task.dataset=fsdd)",
    )


SOURCES: dict[str, Source] = {
    "ud_ewt": Source(
        "pos",
        _UD,
        (
            Remote(
                "en_ewt-ud-train.conllu",
                "en_ewt-ud-train.conllu",
                "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
            ),
            Remote(
                "en_ewt-ud-dev.conllu",
                "en_ewt-ud-dev.conllu",
                "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
            ),
            Remote(
                "en_ewt-ud-test.conllu",
                "en_ewt-ud-test.conllu",
                "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
            ),
        ),
    ),
    "sst2": Source(
        "sentiment",
        "https://dl.fbaipublicfiles.com/glue/data/",
        (
            Remote(
                "SST-2.zip",
                "train.tsv",
                "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
                member="SST-2/train.tsv",
            ),
            Remote(
                "SST-2.zip",
                "dev.tsv",
                "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
                member="SST-2/dev.tsv",
            ),
            Remote(
                "SST-2.zip",
                "test.tsv",
                git_blob="57346405d63e46c8eb34d1a0b2dd189d21516928",
                member="SST-2/test.tsv",
            ),
        ),
        note="GLUE's test split has no labels: runs predict it into predictions_test.tsv",
    ),
    "multi30k": Source(
        "translation",
        _M30K,
        tuple(
            Remote(f"{name}.gz", f"{name}.gz", digest)
            for name, digest in (
                ("train.en", "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
                ("train.de", "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
                ("val.en", "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
                ("val.de", "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
                (
                    "test_2016_flickr.en",
                    "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
                ),
                (
                    "test_2016_flickr.de",
                    "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
                ),
            )
        ),
    ),
    "cora": Source(
        "graph",
        _PLANETOID,
        tuple(
            Remote(f"ind.cora.{part}", f"planetoid_raw/ind.cora.{part}", digest)
            for part, digest in (
                ("x", "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab"),
                ("y", "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1"),
                ("tx", "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a"),
                ("ty", "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad"),
                ("allx", "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543"),
                ("ally", "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71"),
                ("graph", "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d"),
                ("test.index", "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875"),
            )
        ),
        note="the original Planetoid pickles; the converted cora_planetoid.npz is not "
        "published upstream",
    ),
    "mnist": Source(
        "images/mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        tuple(
            Remote(name, name, digest, gunzip_digest=True)
            for name, digest in (
                (
                    "train-images-idx3-ubyte.gz",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            )
        ),
    ),
    "fsdd": _fsdd(),
}


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return response.read()
    except (OSError, ValueError) as e:
        raise DataError(
            f"could not download {url}: {one_line(e)}; check the network, or fetch the "
            "files elsewhere and pass --base-url <a mirror URL or file:///folder>"
        ) from None


def _verify(remote: Remote, data: bytes, url: str) -> None:
    if remote.git_blob is not None:
        got = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        want, what = remote.git_blob, "git blob id"
    else:
        try:
            content = gzip.decompress(data) if remote.gunzip_digest else data
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{url}: not intact gzip data ({one_line(e)}); a broken or truncated "
                "download, or a mirror that serves other files: nothing was written"
            ) from None
        got, want = hashlib.sha256(content).hexdigest(), remote.sha256
        what = "sha256 (decompressed)" if remote.gunzip_digest else "sha256"
    if got != want:
        raise DataError(
            f"checksum mismatch for {url}{f' [{remote.member}]' * bool(remote.member)}"
            f": {what} {got}, expected {want}; nothing was written"
        )


def fetch(source: Source, data_dir: str | Path, base_url: str | None = None) -> list[Path]:
    """Fetch and verify every file of ``source``, then move them into place together."""
    base = base_url if base_url is not None else source.base_url
    base = base if base.endswith("/") else base + "/"
    root = Path(data_dir).expanduser()
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    except OSError as e:
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise DataError(
            f"cannot write into the data directory {root} ({e.strerror or one_line(e)}); "
            "pass a writable --data-dir"
        ) from None
    ok = False
    dest = root
    try:
        fetched: dict[str, bytes] = {}  # one download per URL (the SST-2 zip holds 3 files)
        archives: dict[str, zipfile.ZipFile] = {}  # read each zip's index once (FSDD: 3,000)
        staged = []
        for remote in source.files:
            url = base + remote.url
            if url not in fetched:
                fetched[url] = _fetch(url)
            data = fetched[url]
            if remote.member is not None:
                try:
                    if url not in archives:
                        archives[url] = zipfile.ZipFile(io.BytesIO(data))
                    data = archives[url].read(remote.member)
                except (zipfile.BadZipFile, KeyError, EOFError, zlib.error) as e:
                    raise DataError(
                        f"{url}: {one_line(e)}; expected a zip archive holding "
                        f"{remote.member}; nothing was written"
                    ) from None
            _verify(remote, data, url)
            tmp = staging / f"{len(staged)}.part"
            tmp.write_bytes(data)
            staged.append((tmp, root / source.folder / remote.dest))
        for tmp, dest in staged:  # all verified: move into place (same file system)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        ok = True
        return [dest for _, dest in staged]
    except OSError as e:  # disk full, or a directory where a file goes
        raise DataError(
            f"cannot write {dest} ({e.strerror or one_line(e)}); free space or remove "
            "what is in the way, then download again"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not ok:  # leave no trace of a failed download
            shutil.rmtree(root, ignore_errors=True)


def download(dataset: str, data_dir: str | Path, base_url: str | None = None) -> list[Path]:
    """Download ``dataset`` (one of SOURCES) into ``data_dir``; returns the files written."""
    if dataset not in SOURCES:
        raise DataError(f"unknown data set {dataset!r}; one of {', '.join(SOURCES)}")
    return fetch(SOURCES[dataset], data_dir, base_url)


def default_data_dir() -> Path:
    """The data directory a run uses when data_dir is not set (as in conf/config.yaml)."""
    home = os.environ.get("HOME", ".")
    return Path(os.environ.get("ATTNBENCH_DATA", f"{home}/.cache/attnbench/data"))


def main(argv: list[str] | None = None) -> None:
    """``attnbench download DATASET [--data-dir DIR] [--base-url URL]``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="attnbench download",
        description="Download a data set from its canonical source, checksum-verified.",
    )
    parser.add_argument("dataset", choices=sorted(SOURCES))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="default: $ATTNBENCH_DATA or ~/.cache/attnbench/data",
    )
    parser.add_argument("--base-url", default=None, help="a mirror (or file:// folder)")
    args = parser.parse_args(argv)
    try:
        written = download(args.dataset, args.data_dir or default_data_dir(), args.base_url)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(path)
    if SOURCES[args.dataset].note:
        print(f"note: {SOURCES[args.dataset].note}")


if __name__ == "__main__":
    main()
