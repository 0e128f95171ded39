"""Fashion-MNIST: find, download, verify and load it; and the one batch order every framework follows.

Images stay uint8 in memory. Scaling to float32 in [0, 1] (a division by 255, which every
backend does the same way) happens per batch, where the framework wants it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import zlib
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import OutputError, atomic_write, check_output_dir

IMAGE_SIZE = 28
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
HOW_TO_GET_IT = (
    "Ways to get Fashion-MNIST: (1) `apt-get install dataset-fashion-mnist` (files land in "
    f"{SYSTEM_DIR}); (2) put the four .gz files in a folder and set FASHION_MNIST_DIR to it, or pass "
    f"--data-dir; (3) let it download from {MIRRORS[0]} into the cache folder."
)


class DataError(RuntimeError):
    """Anything wrong with the Fashion-MNIST files; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class IdxFile:
    filename: str
    magic: int  # 2051 for images, 2049 for labels
    count: int
    # SHA-256 of the decompressed bytes: recompressed copies (Debian's) have other .gz checksums.
    sha256: str

    @property
    def is_images(self) -> bool:
        return self.magic == 2051


FILES = {
    "train_images": IdxFile("train-images-idx3-ubyte.gz", 2051, 60000, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": IdxFile("train-labels-idx1-ubyte.gz", 2049, 60000, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": IdxFile("t10k-images-idx3-ubyte.gz", 2051, 10000, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": IdxFile("t10k-labels-idx1-ubyte.gz", 2049, 10000, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}


@dataclass(frozen=True)
class FashionMNIST:
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64 in 0..9
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str = ""  # the folder the files came from


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lenet-parity" / "fashion-mnist"


def named_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, str] | None:
    """The folder the user named and how they named it: data_dir first, then $FASHION_MNIST_DIR."""
    if data_dir is not None:
        return Path(data_dir), "--data-dir"
    if os.environ.get("FASHION_MNIST_DIR"):
        return Path(os.environ["FASHION_MNIST_DIR"]), "FASHION_MNIST_DIR"
    return None


def check_named_dir(folder: Path, origin: str) -> Path:
    """The folder if it holds all four files; else a DataError saying what is missing there.

    A folder the user named is never swapped for another one: that would train on data they
    did not ask for.
    """
    drop = "leave it out" if origin == "--data-dir" else "unset it"
    fix = (
        f"Fix: put the four files there, or point {origin} at a folder that holds them "
        f"(`apt-get install dataset-fashion-mnist` puts them in {SYSTEM_DIR}), or {drop} to use "
        f"{SYSTEM_DIR} or the download cache."
    )
    # os.path rather than Path: False instead of a PermissionError inside folders one may not read.
    if not os.path.exists(folder):
        raise DataError(f"{folder} (from {origin}) does not exist. {fix}")
    if not os.path.isdir(folder):
        raise DataError(f"{folder} (from {origin}) is a file, not a folder. {fix}")
    missing = [idx.filename for idx in FILES.values() if not os.path.isfile(folder / idx.filename)]
    if missing:
        held = "none" if len(missing) == len(FILES) else str(len(FILES) - len(missing))
        raise DataError(f"{folder} (from {origin}) holds {held} of the four Fashion-MNIST files; missing {', '.join(missing)}. {fix}")
    return folder


def _fix_for(path: Path) -> str:
    """Advice that is true for the folder the damaged file is in."""
    folder = path.parent.resolve()
    if folder == SYSTEM_DIR.resolve():
        return "Fix: `apt-get install --reinstall dataset-fashion-mnist`."
    if folder == cache_dir().resolve():
        return f"Fix: delete {path} and run again to download a fresh copy."
    return (
        "Fix: replace it with a good copy (`apt-get install dataset-fashion-mnist` puts one in "
        f"{SYSTEM_DIR}), or point --data-dir or FASHION_MNIST_DIR at a folder with good files."
    )


def read_idx(path: Path, idx: IdxFile, fix: str | None = None) -> np.ndarray:
    """Decompress, check and parse one IDX file; every failure is a DataError naming the file.

    fix: the advice to append; by default the one for the folder the file is in.
    """
    path = Path(path)

    def fail(problem: str):
        advice = _fix_for(path) if fix is None else fix
        raise DataError(f"{path}: {problem}. {advice}".rstrip())

    try:
        compressed = path.read_bytes()
    except OSError as err:
        fail(f"cannot be read ({err.strerror or err}); check that it is a file you may read")
    try:
        raw = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as err:
        fail(f"cannot be decompressed ({err}); the file is truncated or is not gzip")
    header = struct.Struct(">IIII" if idx.is_images else ">II")
    if len(raw) < header.size:
        fail(f"only {len(raw)} bytes after decompression, shorter than the IDX header")
    magic, count, *dims = header.unpack_from(raw)
    if magic != idx.magic:
        kind = "images (2051)" if idx.is_images else "labels (2049)"
        fail(f"IDX magic number is {magic}, expected {kind}; this is not the right file")
    if count != idx.count:
        fail(f"holds {count} items, expected {idx.count}")
    if dims and dims != [IMAGE_SIZE, IMAGE_SIZE]:
        fail(f"images are {dims[0]}x{dims[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    item_size = IMAGE_SIZE * IMAGE_SIZE if idx.is_images else 1
    if len(raw) != header.size + count * item_size:
        fail(f"payload is {len(raw) - header.size} bytes, expected {count * item_size} for {count} items")
    data = np.frombuffer(raw, np.uint8, offset=header.size)
    if not idx.is_images and data.max() > 9:
        fail(f"has label {int(data.max())}, outside 0..9")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != idx.sha256:
        fail(f"SHA-256 of the decompressed content is {digest}, expected {idx.sha256}; the file is damaged or not Fashion-MNIST")
    if idx.is_images:
        return data.reshape(count, IMAGE_SIZE, IMAGE_SIZE).copy()  # writable, unlike the decompressed bytes
    return data.astype(np.int64)


def download_files(target_dir: Path, mirrors=MIRRORS, timeout: float = 60) -> Path:
    """Fetch the four files into target_dir: temp file, verify, rename; next mirror on failure."""
    try:
        check_output_dir(target_dir, "download cache")  # before downloading anything
    except OutputError as err:
        raise DataError(f"{err} Or set XDG_CACHE_HOME to a folder you can write to. {HOW_TO_GET_IT}") from None
    for idx in FILES.values():
        path = target_dir / idx.filename
        if path.is_file():
            continue
        errors = []
        for mirror in mirrors:
            url = mirror + idx.filename
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
            except (OSError, ValueError) as err:  # URLError, timeouts and bad URLs
                errors.append(f"{url}: {err}")
                continue
            tmp = target_dir / f".{idx.filename}.download"
            try:
                atomic_write(tmp, lambda f, payload=payload: f.write(payload))
                read_idx(tmp, idx, fix="")  # the next mirror is the fix
                os.replace(tmp, path)
            except DataError as err:
                tmp.unlink()
                errors.append(f"{url}: {err}")
                continue
            except (OutputError, OSError) as err:
                with suppress(OSError):  # the folder itself may be what is broken
                    tmp.unlink()
                raise DataError(f"cannot save the download in {target_dir}: {err} {HOW_TO_GET_IT}") from None
            break
        else:
            raise DataError(
                f"could not download {idx.filename}: " + "; ".join(errors) + f". {HOW_TO_GET_IT}"
            )
    return target_dir


def _has_all_files(folder: Path) -> bool:
    return all(os.path.isfile(folder / idx.filename) for idx in FILES.values())


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    mirrors=MIRRORS,
) -> FashionMNIST:
    """Find (or download), verify and load Fashion-MNIST.

    A folder the user names (data_dir, else $FASHION_MNIST_DIR) is used or rejected with a
    DataError, never replaced by another. Without one, the cache folder and then Debian's
    /usr/share/datasets/fashion-mnist are searched, and with neither holding all four files the
    files are downloaded into the cache folder unless download is False. A subset keeps the
    first N examples; 0 keeps none and leaves that split's files unread.
    """
    splits = (("train", train_subset), ("test", test_subset))
    for split, subset in splits:
        total = FILES[f"{split}_images"].count
        if subset is not None and not 0 <= subset <= total:
            raise DataError(f"{split} subset must be between 0 and {total}, got {subset}")
    named = named_dir(data_dir)
    if named:
        folder = check_named_dir(*named)
    else:
        folders = (cache_dir(), SYSTEM_DIR)
        folder = next((d for d in folders if _has_all_files(d)), None)
        if folder is None:
            searched = ", ".join(str(d) for d in folders)
            if not download:
                raise DataError(f"Fashion-MNIST not found (searched {searched}) and downloading is off. {HOW_TO_GET_IT}")
            folder = download_files(cache_dir(), mirrors)
    arrays = {}
    for split, subset in splits:
        for key in (f"{split}_images", f"{split}_labels"):
            idx = FILES[key]
            # A subset of 0 (say, evaluating on the test set only) skips reading and verifying the file.
            arrays[key] = _no_items(idx) if subset == 0 else read_idx(folder / idx.filename, idx)[:subset]
    return FashionMNIST(**arrays, source=str(folder))


def _no_items(idx: IdxFile) -> np.ndarray:
    """An empty array with the dtype and item shape read_idx gives for this file."""
    if idx.is_images:
        return np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return np.empty(0, np.int64)


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> canonical float32 NCHW (N, 1, 28, 28) in [0, 1]."""
    return (images.astype(np.float32) / np.float32(255))[:, None]


def batch_order(num_examples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The index batches of one epoch, identical in every framework.

    A NumPy Generator seeded with (seed, epoch) shuffles; every index appears exactly once and
    the last, partial batch is kept.
    """
    if num_examples < 1 or batch_size < 1:
        raise ValueError(f"need num_examples >= 1 and batch_size >= 1, got {num_examples} and {batch_size}")
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return [order[start : start + batch_size] for start in range(0, num_examples, batch_size)]
