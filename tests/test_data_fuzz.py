"""Fuzz the IDX and CIFAR readers (hypothesis): random bytes and mutated real-looking files must give
either a DataError or valid arrays, never another exception and never a hang (each example runs
under a 10 s alarm). Bounded to a few hundred examples per reader so the file takes seconds.
Run: pytest tests/test_data_fuzz.py"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data import formats
from data.errors import DataError

from conftest import no_hang

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HANG_S = 10  # one example taking longer than this is a hang, not slowness
MNIST_IMAGES_HEADER = bytes.fromhex("00000803 0000ea60 0000001c 0000001c")  # the real one: 60,000 x 28 x 28
MNIST_LABELS_HEADER = bytes.fromhex("00000801 0000ea60")


def _check_idx_result(arr, content: bytes) -> None:
    """A successful parse must be an array that accounts for every byte of the content."""
    assert isinstance(arr, np.ndarray) and arr.dtype.isnative and 1 <= arr.ndim <= 4
    assert 4 + 4 * arr.ndim + arr.size * arr.dtype.itemsize == len(content)


def _check_cifar_result(out: dict, label_keys: tuple) -> None:
    n = len(out["data"])
    assert out["data"].shape == (n, 32, 32, 3) and out["data"].dtype == np.uint8
    for key in label_keys:
        assert out[key].shape == (n,) and out[key].dtype == np.int64


# --- strategies ---------------------------------------------------------------------------------------

def _mutate(draw, blob: bytes) -> bytes:
    """Overwrite a few bytes, then maybe truncate or extend: what a bad disk or a bad mirror does."""
    b = bytearray(blob)
    for _ in range(draw(st.integers(0, 4))):
        if b:
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(b))))
    if cut is not None:
        del b[cut:]
    return bytes(b) + draw(st.binary(max_size=8))


@st.composite
def idx_contents(draw):
    """A valid small IDX (any dtype, 1-4 dims) or the real MNIST headers with a small count, mutated."""
    kind = draw(st.sampled_from(["any", "mnist-images", "mnist-labels"]))
    if kind == "any":
        code = draw(st.sampled_from(sorted(formats.IDX_DTYPES)))
        dims = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
        body = draw(st.binary(min_size=int(np.prod(dims)) * formats.IDX_DTYPES[code].itemsize,
                              max_size=int(np.prod(dims)) * formats.IDX_DTYPES[code].itemsize))
        blob = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body
    else:
        n = draw(st.integers(0, 2))
        header = MNIST_IMAGES_HEADER if kind == "mnist-images" else MNIST_LABELS_HEADER
        per = 784 if kind == "mnist-images" else 1
        blob = header[:4] + struct.pack(">I", n) + header[8:] + bytes(draw(st.binary(min_size=n * per, max_size=n * per)))
    return _mutate(draw, blob)


@st.composite
def cifar_pickles(draw):
    """A valid small CIFAR batch pickle (list or (n, 1) labels, any protocol 2-5), mutated."""
    n = draw(st.integers(0, 2))
    labels = draw(st.sampled_from(["list", "column"]))
    lab = [i % 10 for i in range(n)]
    batch = {b"data": np.full((n, 3072), 7, np.uint8),
             b"labels": lab if labels == "list" else np.array(lab, np.int64).reshape(n, 1)}
    return _mutate(draw, pickle.dumps(batch, protocol=draw(st.integers(2, 5))))


@st.composite
def cifar_archives(draw):
    """A small CIFAR tarball (gz or plain) holding one batch, mutated."""
    blob = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]}, protocol=2)
    buf = io.BytesIO()
    mode = draw(st.sampled_from(["w:gz", "w"]))
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    return _mutate(draw, buf.getvalue())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One file path, overwritten by each example (hypothesis reruns a test many times)."""
    return tmp_path_factory.mktemp("fuzz") / "train-images-idx3-ubyte.gz"


# --- IDX ------------------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=512))
def test_parse_idx_random_bytes(blob):
    with no_hang(HANG_S):
        try:
            _check_idx_result(formats.parse_idx(blob, "fuzz"), blob)
        except DataError:
            pass


@FUZZ
@given(idx_contents())
def test_parse_idx_mutated_headers(blob):
    with no_hang(HANG_S):
        try:
            _check_idx_result(formats.parse_idx(blob, "fuzz"), blob)
        except DataError:
            pass


@FUZZ
@given(content=idx_contents(), compress=st.booleans(), data=st.data())
def test_read_idx_mutated_files_raw_or_gzip(scratch, content, compress, data):
    blob = gzip.compress(content, mtime=0) if compress else content
    if compress and data.draw(st.booleans()):
        blob = _mutate(data.draw, blob)  # damage the gzip stream itself
    scratch.write_bytes(blob)
    with no_hang(HANG_S):
        try:
            arr = formats.read_idx(scratch)
        except DataError:
            return
    raw = gzip.decompress(blob) if blob[:2] == formats.GZIP_MAGIC else blob
    _check_idx_result(arr, raw)


# --- CIFAR ----------------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=512))
def test_parse_cifar_batch_random_bytes(blob):
    with no_hang(HANG_S):
        try:
            _check_cifar_result(formats.parse_cifar_batch(blob, "fuzz", ("labels",)), ("labels",))
        except DataError:
            pass


@FUZZ
@given(cifar_pickles())
def test_parse_cifar_batch_mutated_pickles(blob):
    with no_hang(HANG_S):
        try:
            _check_cifar_result(formats.parse_cifar_batch(blob, "fuzz", ("labels",)), ("labels",))
        except DataError:
            pass


@settings(FUZZ, max_examples=200)
@given(st.one_of(st.binary(max_size=512), cifar_archives()))
def test_read_cifar_archive_random_and_mutated(scratch, blob):
    path = scratch.with_name("cifar-10-python.tar.gz")
    path.write_bytes(blob)
    with no_hang(HANG_S):
        try:
            _check_cifar_result(formats.read_cifar_archive(path, ("test_batch",), ("labels",)), ("labels",))
        except DataError:
            pass


def test_fuzz_inputs_include_valid_files():
    # the strategies are not all garbage: unmutated, each base input reads back (so "valid arrays" is exercised)
    good_idx = bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"\x01\x02"
    _check_idx_result(formats.parse_idx(good_idx), good_idx)
    blob = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]}, protocol=2)
    _check_cifar_result(formats.parse_cifar_batch(blob, "x", ("labels",)), ("labels",))
