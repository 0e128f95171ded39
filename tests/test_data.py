"""The Fashion-MNIST loader on files the tests write themselves, and the shared batch order."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest

from common import data
from common.data import DataError, IdxFile, batch_order, load_fashion_mnist, scale_images


def idx_bytes(magic: int, items: np.ndarray) -> bytes:
    dims = items.shape[1:] if magic == 2051 else ()
    return struct.pack(f">{2 + len(dims)}I", magic, len(items), *dims) + items.astype(np.uint8).tobytes()


def write_gz(path, raw: bytes):
    path.write_bytes(gzip.compress(raw, compresslevel=1))
    return path


def fake_split(count: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28)), rng.integers(0, 10, count)


@pytest.fixture
def tiny_files(monkeypatch, tmp_path):
    """Four small, valid IDX files and a FILES table that expects exactly them."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    arrays = {}
    table = {}
    for split, count, seed in (("train", 12, 0), ("test", 5, 1)):
        images, labels = fake_split(count, seed)
        for kind, magic, items in (("images", 2051, images), ("labels", 2049, labels)):
            raw = idx_bytes(magic, items)
            real = data.FILES[f"{split}_{kind}"]
            write_gz(folder / real.filename, raw)
            table[f"{split}_{kind}"] = IdxFile(real.filename, magic, count, hashlib.sha256(raw).hexdigest())
            arrays[f"{split}_{kind}"] = items
    monkeypatch.setattr(data, "FILES", table)
    # Nothing outside tmp_path is looked at: no env var, an empty cache, no Debian folder.
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "no-debian-package")
    return folder, arrays


def test_loads_valid_files(tiny_files):
    folder, arrays = tiny_files
    loaded = load_fashion_mnist(folder, download=False)
    assert loaded.train_images.dtype == np.uint8 and loaded.train_images.shape == (12, 28, 28)
    np.testing.assert_array_equal(loaded.train_images, arrays["train_images"])
    np.testing.assert_array_equal(loaded.test_labels, arrays["test_labels"])
    assert loaded.source == str(folder)


def test_subsets_keep_the_first_examples(tiny_files):
    folder, arrays = tiny_files
    loaded = load_fashion_mnist(folder, train_subset=4, test_subset=2)
    np.testing.assert_array_equal(loaded.train_labels, arrays["train_labels"][:4])
    assert len(loaded.test_images) == 2
    with pytest.raises(DataError, match="train subset must be between 0 and 12"):
        load_fashion_mnist(folder, train_subset=13)


def test_empty_subset_leaves_its_files_unread(tiny_files):
    folder, arrays = tiny_files
    (folder / data.FILES["train_images"].filename).write_bytes(b"not read")
    loaded = load_fashion_mnist(folder, train_subset=0)
    assert loaded.train_images.shape == (0, 28, 28) and loaded.train_images.dtype == np.uint8
    assert loaded.train_labels.shape == (0,) and loaded.train_labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.test_images, arrays["test_images"])


def test_environment_variable_is_searched(tiny_files, monkeypatch):
    folder, _ = tiny_files
    monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
    assert load_fashion_mnist(download=False).source == str(folder)


def corrupt(tiny_files, key: str, raw: bytes | None = None, gz: bytes | None = None):
    folder, _ = tiny_files
    path = folder / data.FILES[key].filename
    if raw is not None:
        write_gz(path, raw)
    if gz is not None:
        path.write_bytes(gz)
    with pytest.raises(DataError) as caught:
        load_fashion_mnist(folder, download=False)
    message = str(caught.value)
    assert message.startswith(str(path)) and "Fix:" in message
    return message


def test_truncated_gzip(tiny_files):
    folder, _ = tiny_files
    gz = (folder / data.FILES["train_images"].filename).read_bytes()
    assert "cannot be decompressed" in corrupt(tiny_files, "train_images", gz=gz[: len(gz) // 2])


def test_not_gzip(tiny_files):
    assert "is not gzip" in corrupt(tiny_files, "test_labels", gz=b"plain text, not gzip")


def test_wrong_magic(tiny_files):
    images, _ = fake_split(12, 0)
    assert "magic number is 2049, expected images (2051)" in corrupt(tiny_files, "train_images", raw=idx_bytes(2049, images))


def test_wrong_count(tiny_files):
    _, labels = fake_split(7, 1)
    assert "holds 7 items, expected 5" in corrupt(tiny_files, "test_labels", raw=idx_bytes(2049, labels))


def test_wrong_dimensions(tiny_files):
    raw = struct.pack(">IIII", 2051, 5, 32, 32) + bytes(5 * 32 * 32)
    assert "images are 32x32, expected 28x28" in corrupt(tiny_files, "test_images", raw=raw)


def test_short_payload(tiny_files):
    images, _ = fake_split(5, 1)
    assert "payload is" in corrupt(tiny_files, "test_images", raw=idx_bytes(2051, images)[:-10])


def test_header_too_short(tiny_files):
    assert "shorter than the IDX header" in corrupt(tiny_files, "test_labels", raw=b"\x00\x00")


def test_labels_out_of_range(tiny_files):
    labels = np.array([0, 1, 2, 3, 12])
    assert "label 12, outside 0..9" in corrupt(tiny_files, "test_labels", raw=idx_bytes(2049, labels))


def test_wrong_checksum(tiny_files):
    images, _ = fake_split(12, 99)  # well-formed, but not the expected content
    assert "SHA-256 of the decompressed content" in corrupt(tiny_files, "train_images", raw=idx_bytes(2051, images))


def test_recompressed_file_is_accepted(tiny_files):
    """Checksums are over decompressed bytes, so a copy gzipped at another level still loads."""
    folder, arrays = tiny_files
    path = folder / data.FILES["train_images"].filename
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=9))
    np.testing.assert_array_equal(load_fashion_mnist(folder).train_images, arrays["train_images"])


def test_offline_without_files_lists_the_ways(tiny_files, tmp_path):
    with pytest.raises(DataError) as caught:
        load_fashion_mnist(mirrors=(f"file://{tmp_path}/no-mirror/",))
    message = str(caught.value)
    assert "could not download" in message
    for way in ("apt-get install dataset-fashion-mnist", "FASHION_MNIST_DIR", "cache folder"):
        assert way in message
    with pytest.raises(DataError, match="downloading is off.*FASHION_MNIST_DIR"):
        load_fashion_mnist(download=False)


def test_download_falls_back_to_the_next_mirror(tiny_files, tmp_path):
    mirror, arrays = tiny_files
    broken = tmp_path / "broken-mirror"
    broken.mkdir()
    (broken / data.FILES["train_labels"].filename).write_bytes(b"garbage")
    loaded = load_fashion_mnist(mirrors=(f"file://{broken}/", f"file://{mirror}/"))
    cache = data.cache_dir()
    assert loaded.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f.filename for f in data.FILES.values())
    np.testing.assert_array_equal(loaded.train_labels, arrays["train_labels"])


def test_unwritable_cache_is_a_data_error(tiny_files, tmp_path, monkeypatch):
    mirror, _ = tiny_files
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(DataError, match=f"download cache {blocker}/.*: {blocker} is a file, not a folder.*XDG_CACHE_HOME"):
        load_fashion_mnist(mirrors=(f"file://{mirror}/",))


@pytest.fixture
def good_files_elsewhere(tiny_files, tmp_path, monkeypatch):
    """Valid files in both fallback places, so a named folder that fell through would load silently."""
    folder, _ = tiny_files
    system = tmp_path / "debian"
    shutil.copytree(folder, system)
    shutil.copytree(folder, data.cache_dir())
    monkeypatch.setattr(data, "SYSTEM_DIR", system)
    return folder


def named_folder_cases(tmp_path):
    """A missing folder, an empty one, one without two of the files, and a plain file."""
    empty = tmp_path / "empty"
    empty.mkdir()
    partial = tmp_path / "partial"
    partial.mkdir()
    for key in ("test_images", "test_labels"):
        (partial / data.FILES[key].filename).write_bytes(b"")
    plain = tmp_path / "plain-file"
    plain.write_text("")
    every = [idx.filename for idx in data.FILES.values()]
    return [
        (tmp_path / "absent", "does not exist"),
        (empty, "holds none of the four Fashion-MNIST files; missing " + ", ".join(every)),
        (partial, "holds 2 of the four Fashion-MNIST files; missing " + ", ".join(every[:2])),
        (plain, "is a file, not a folder"),
    ]


def test_named_folder_is_used_before_the_fallbacks(good_files_elsewhere, tmp_path, monkeypatch):
    folder = good_files_elsewhere
    assert load_fashion_mnist(folder).source == str(folder)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "absent"))
    assert load_fashion_mnist(folder).source == str(folder)  # data_dir wins over the variable
    monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
    assert load_fashion_mnist().source == str(folder)
    monkeypatch.setenv("FASHION_MNIST_DIR", "")  # set but empty counts as unset
    assert load_fashion_mnist().source == str(data.cache_dir())


def test_bad_data_dir_is_rejected_not_replaced(good_files_elsewhere, tmp_path):
    for folder, problem in named_folder_cases(tmp_path):
        with pytest.raises(DataError) as caught:
            load_fashion_mnist(folder)
        message = str(caught.value)
        assert message.startswith(f"{folder} (from --data-dir) {problem}. Fix:"), message
        assert "point --data-dir at a folder that holds them" in message


def test_bad_environment_folder_is_rejected_not_replaced(good_files_elsewhere, tmp_path, monkeypatch):
    for folder, problem in named_folder_cases(tmp_path):
        monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
        with pytest.raises(DataError) as caught:
            load_fashion_mnist()
        message = str(caught.value)
        assert message.startswith(f"{folder} (from FASHION_MNIST_DIR) {problem}. Fix:"), message
        assert "unset it" in message


def damaged_file_message(folder, **load_args) -> str:
    (folder / data.FILES["test_labels"].filename).write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError) as caught:
        load_fashion_mnist(download=False, **load_args)
    return str(caught.value)


def test_advice_for_a_damaged_file_in_debians_folder(tiny_files, monkeypatch):
    folder, _ = tiny_files
    monkeypatch.setattr(data, "SYSTEM_DIR", folder)
    assert damaged_file_message(folder).endswith("Fix: `apt-get install --reinstall dataset-fashion-mnist`.")


def test_advice_for_a_damaged_file_in_the_cache(tiny_files):
    folder, _ = tiny_files
    cache = data.cache_dir()
    shutil.copytree(folder, cache)
    path = cache / data.FILES["test_labels"].filename
    assert damaged_file_message(cache).endswith(f"Fix: delete {path} and run again to download a fresh copy.")


def test_advice_for_a_damaged_file_in_the_users_folder(tiny_files, monkeypatch):
    folder, _ = tiny_files
    for load_args in (dict(data_dir=folder), {}):
        monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
        message = damaged_file_message(folder, **load_args)
        assert "Fix: replace it with a good copy (`apt-get install dataset-fashion-mnist`" in message
        assert "download" not in message


def test_real_files_when_present():
    try:
        real = load_fashion_mnist(download=False)
    except DataError as err:
        pytest.skip(f"real Fashion-MNIST not available: {err}")
    assert real.train_images.shape == (60000, 28, 28) and real.test_images.shape == (10000, 28, 28)
    assert real.train_images.dtype == np.uint8 and real.train_labels.dtype == np.int64
    assert np.bincount(real.train_labels).tolist() == [6000] * 10


def test_scale_images():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)
    scaled = scale_images(images)
    assert scaled.dtype == np.float32 and scaled.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(scaled[0, 0], np.array([[0, 1], [0.2, 0.4]], np.float32))


def test_batch_order_is_shared_and_complete():
    first = batch_order(1000, 128, seed=7, epoch=3)
    again = batch_order(1000, 128, seed=7, epoch=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True)) and len(first) == 8
    assert [len(b) for b in first] == [128] * 7 + [104]  # the partial batch is kept
    assert sorted(np.concatenate(first).tolist()) == list(range(1000))
    assert not np.array_equal(first[0], batch_order(1000, 128, seed=7, epoch=4)[0])
    assert not np.array_equal(first[0], batch_order(1000, 128, seed=8, epoch=3)[0])


def test_batch_order_is_pinned():
    """The order is part of the contract: it must not change with the NumPy version."""
    assert [b.tolist() for b in batch_order(10, 4, seed=0, epoch=0)] == [[4, 6, 2, 7], [3, 5, 9, 0], [8, 1]]
