"""Checks on the real datasets, when this machine has them: Debian's recompressed Fashion-MNIST
(apt-get install dataset-fashion-mnist) and canonical MNIST (a folder via $KLC_DATA_DIR, or
../shared/data/mnist beside the checkout). Each test skips, saying why, when its data is absent.
Run: pytest tests/test_data_real.py"""
from __future__ import annotations

import gzip
import hashlib
import shutil
from dataclasses import replace

import numpy as np
import pytest

from conftest import SYSTEM_FASHION, child_env, real_dataset_dir, run_module
from data import registry, sources

pytestmark = pytest.mark.realdata

MNIST_TRAIN_PER_CLASS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # the canonical counts
MNIST_TEST_PER_CLASS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def fashion_dir():
    d = real_dataset_dir("fashion_mnist")
    if d is None:
        pytest.skip(f"real Fashion-MNIST not on this machine ({SYSTEM_FASHION} missing; "
                    f"apt-get install dataset-fashion-mnist provides it)")
    return d


@pytest.fixture
def mnist_dir():
    d = real_dataset_dir("mnist")
    if d is None:
        pytest.skip("real MNIST not on this machine (set KLC_DATA_DIR to a folder holding mnist/ "
                    "or place it in ../shared/data/mnist)")
    return d


@pytest.fixture
def env(tmp_path):
    """Child environment: empty cache, no implicit data dir, downloads off."""
    e = child_env(KLC_CACHE_DIR=tmp_path / "cache", KLC_OFFLINE=1)
    e.pop("KLC_DATA_DIR", None)
    return e


# --- Fashion-MNIST (Debian's recompressed copy) -----------------------------------------------------

def test_fashion_system_copy_is_recompressed_but_content_identical(fashion_dir):
    fs = registry.FASHION_MNIST.files["test_labels"]
    blob = (fashion_dir / fs.name).read_bytes()
    assert hashlib.sha256(blob).hexdigest() != fs.sha256  # Debian's .gz is not the canonical .gz ...
    assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == fs.content_sha256  # ... its content is


def test_fashion_loads_60000_10000_with_6000_per_class(fashion_dir, isolated_cache, monkeypatch):
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS, fashion_mnist=replace(
        registry.FASHION_MNIST, system_dirs=(str(fashion_dir),))))
    data = sources.load("fashion_mnist")
    assert data.source == f"system:{fashion_dir}"
    assert data.train_images.shape == (60_000, 28, 28, 1) and data.test_images.shape == (10_000, 28, 28, 1)
    assert np.bincount(data.train_labels).tolist() == [6_000] * 10
    assert np.bincount(data.test_labels).tolist() == [1_000] * 10


def test_cli_verify_fashion_exits_0_on_the_system_copy(fashion_dir, env):
    if fashion_dir != SYSTEM_FASHION:
        pytest.skip(f"the CLI finds Fashion-MNIST only in {SYSTEM_FASHION}")
    proc = run_module("data", "verify", "fashion_mnist", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"fashion_mnist: system:{SYSTEM_FASHION} verified (4 files, content sha256 match)\n"


def test_cli_verify_fashion_with_one_pixel_changed_names_file_and_hashes(fashion_dir, env, tmp_path):
    copy = tmp_path / "fashion"
    copy.mkdir()
    for fs in registry.FASHION_MNIST.files.values():
        shutil.copyfile(fashion_dir / fs.name, copy / fs.name)
    target = copy / "train-images-idx3-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    content[16 + 28 * 14 + 14] ^= 0x01  # one pixel of the first image (after the 16-byte header)
    target.write_bytes(gzip.compress(bytes(content), compresslevel=1))
    proc = run_module("data", "verify", "fashion_mnist", "--data-dir", copy, env=env, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    expected = registry.FASHION_MNIST.files["train_images"].content_sha256
    actual = hashlib.sha256(bytes(content)).hexdigest()
    assert lines[0].startswith(f"python -m data: error: {target}: content sha256 {actual} does not match "
                               f"the expected {expected}")


# --- MNIST (canonical) ------------------------------------------------------------------------------------

def test_mnist_loads_with_the_canonical_class_counts(mnist_dir, isolated_cache):
    data = sources.load("mnist", mnist_dir)
    assert data.source == f"data-dir:{mnist_dir}" and not data.is_subset
    assert data.train_images.shape == (60_000, 28, 28, 1) and data.test_images.shape == (10_000, 28, 28, 1)
    assert np.bincount(data.train_labels).tolist() == MNIST_TRAIN_PER_CLASS
    assert np.bincount(data.test_labels).tolist() == MNIST_TEST_PER_CLASS


def test_cli_verify_mnist_exits_0(mnist_dir, env):
    proc = run_module("data", "verify", "mnist", "--data-dir", mnist_dir, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"mnist: data-dir:{mnist_dir} verified (4 files, content sha256 match)\n"


# --- the registry against the real files (gaps found by mutation testing) ------------------------------------

def _counts(folder, spec) -> tuple:
    """(train, test) sample counts from the label files' IDX headers (bytes 4-8), without reading the images."""
    return tuple(int.from_bytes(gzip.open(folder / spec.files[f"{split}_labels"].name).read(8)[4:], "big")
                 for split in ("train", "test"))


def test_mnist_registry_entries_match_the_canonical_files(mnist_dir):
    """The canonical .gz passes on its file sha256 alone, so a wrong content_sha256 (what recompressed copies are
    checked against) or size went unnoticed: every field is checked against the files here."""
    spec = registry.MNIST
    for fs in spec.files.values():
        blob = (mnist_dir / fs.name).read_bytes()
        assert (len(blob), hashlib.sha256(blob).hexdigest()) == (fs.size, fs.sha256), fs.name
        assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == fs.content_sha256, fs.name
    assert _counts(mnist_dir, spec) == (spec.train_size, spec.test_size) == (60_000, 10_000)


def test_fashion_registry_content_hashes_and_sizes_match_the_system_copy(fashion_dir):
    """Debian's .gz files are recompressed: only the content sums (all four) and the sample counts can be checked."""
    spec = registry.FASHION_MNIST
    for fs in spec.files.values():
        content = gzip.decompress((fashion_dir / fs.name).read_bytes())
        assert hashlib.sha256(content).hexdigest() == fs.content_sha256, fs.name
    assert _counts(fashion_dir, spec) == (spec.train_size, spec.test_size) == (60_000, 10_000)
