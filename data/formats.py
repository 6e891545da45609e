"""Readers for the on-disk formats: IDX (MNIST family, .gz or raw) and CIFAR python pickles.

Pure functions over bytes and paths; numpy only. Every malformed input raises `DataError`
naming the file; nothing else escapes (the fuzz tests hold the readers to that).
"""
from __future__ import annotations

import gzip
import io
import lzma
import math
import pickle
import pickletools
import reprlib
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

# IDX type codes (third byte of the magic) -> numpy dtype, big-endian as the format stores them
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 1 << 31  # refuse headers that claim more than 2 GiB (a corrupt header, not data)
GZIP_CHUNK = 1 << 24  # bytes decompressed per read


def decompress(raw: bytes, name: str = "<bytes>") -> bytes:
    """`raw` itself, or its gzip content when it starts with the gzip magic (all members).

    Corrupt or truncated gzip, or content over MAX_IDX_BYTES (a gzip bomb, not a dataset), -> DataError."""
    if raw[:2] != GZIP_MAGIC:
        return raw
    parts, total = [], 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            while part := f.read(GZIP_CHUNK):  # in chunks: read(n) reserves n bytes up front
                parts.append(part)
                total += len(part)
                if total > MAX_IDX_BYTES:
                    raise DataError(f"{name}: gzip content exceeds {MAX_IDX_BYTES:,} bytes; not a dataset file")
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{name}: corrupt or truncated gzip ({e}); replace it with an intact copy") from None
    return b"".join(parts)


def read_bytes(path: str | Path) -> bytes:
    """The content of `path`, decompressed when it is gzip. Corrupt or truncated gzip -> DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return decompress(raw, str(path))


def looks_like_html(content: bytes) -> bool:
    """True for what dead mirrors serve under a data file's name: an HTML or XML error page."""
    head = content[:512].lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<error"))


def parse_idx(content: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (already decompressed) into an array, validating magic, dims and length."""
    if len(content) < 4:
        raise DataError(f"{name}: {len(content)} bytes is too short for an IDX header")
    if content[:2] != b"\x00\x00" or content[2] not in IDX_DTYPES:
        hint = (" (it is an HTML page: a mirror served an error page; replace it with the real file)"
                if looks_like_html(content) else "")
        raise DataError(f"{name}: not an IDX file, bad magic {content[:4].hex()} (IDX starts 00 00 <type 08-0e> <ndim>){hint}")
    dtype, ndim = IDX_DTYPES[content[2]], content[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{name}: IDX claims {ndim} dimensions; expected 1 to 4")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{name}: truncated IDX header ({len(content)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(content, ">u4", ndim, 4))
    expected = math.prod(dims) * dtype.itemsize  # Python ints: four 32-bit dims cannot overflow
    # an empty dimension beside huge ones is a corrupt header too (numpy refuses such a shape)
    if expected > MAX_IDX_BYTES or math.prod(d for d in dims if d) * dtype.itemsize > MAX_IDX_BYTES:
        raise DataError(f"{name}: IDX dimensions {dims} claim {expected:,} bytes; refusing")
    if len(content) - header != expected:
        raise DataError(f"{name}: IDX dimensions {dims} need {expected:,} data bytes, "
                        f"file has {len(content) - header:,} (truncated or padded)")
    return np.frombuffer(content, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (.gz or raw) into a native-endian numpy array."""
    return parse_idx(read_bytes(path), str(path))


def check_idx_pair(images: np.ndarray, labels: np.ndarray, name: str, num_classes: int) -> None:
    """Images (n, H, W) uint8 and labels (n,) uint8 in range: else DataError."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{name}: images should be (n, H, W) uint8, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{name}: labels should be (n,) uint8, got {labels.shape} {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(labels) and labels.max() >= num_classes:
        raise DataError(f"{name}: label {labels.max()} out of range for {num_classes} classes")


# --- CIFAR -------------------------------------------------------------------------------------
# A pickle is a program. These are the only globals a CIFAR batch needs (numpy's array rebuild,
# and codecs.encode, which protocol-2 pickles written by Python 3 use for bytes); anything else
# (os.system, eval, subprocess ...) is refused before it can run. numpy's own rebuild is not used
# either: numpy.dtype's __setstate__ takes the dtype's flags from the file, and a damaged file that
# flags uint8 as "holds Python objects" gave arrays numpy could neither copy safely nor free. The
# numpy names are served by _Dtype, _Array and _scalar below, which build plain numeric arrays.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("__builtin__", "bytes"), ("builtins", "bytes"),  # b"" at protocol 2 from Python 3: bytes(), served by _empty_bytes
}


def _short(x) -> str:
    """A bounded repr for messages: a pickle's shared references make a full str() exponential."""
    return _REPR.repr(x)[:60]


def _text(x) -> str:
    """A name as a pickle holds it: str (Python 3), or bytes (Python 2's str, read with encoding='bytes')."""
    if isinstance(x, bytes):
        return x.decode("latin1")
    if isinstance(x, str):
        return x
    raise pickle.UnpicklingError(f"expected a name, got {type(x).__name__}")


class _Dtype:
    """numpy.dtype(name, align, copy) with its pickled state: a plain number type only (kinds b, i, u, f),
    built by name and byte order; the flags in the state are never applied."""

    def __init__(self, name, align=False, copy=True):
        self.name, self.order = _text(name), "|"

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or _text(state[1]) not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"malformed dtype state {_short(state)}")
        self.order = _text(state[1])

    def build(self) -> np.dtype:
        try:
            d = np.dtype(self.name)
        except (TypeError, ValueError) as e:
            raise pickle.UnpicklingError(f"unknown dtype {self.name!r} ({e})") from None
        if d.kind not in "biuf" or d.fields or d.subdtype:
            raise pickle.UnpicklingError(f"dtype {self.name!r}: CIFAR batches hold plain numbers only")
        return d.newbyteorder(self.order) if self.order in "<>" else d


def _numeric(dtype) -> np.dtype:
    if not isinstance(dtype, _Dtype):
        raise pickle.UnpicklingError(f"expected a numpy dtype, got {type(dtype).__name__}")
    return dtype.build()


class _Array:
    """numpy's _reconstruct(ndarray, (0,), b'b') followed by __setstate__((version,) shape, dtype,
    is_fortran, raw bytes): the array is built from the raw bytes with a clean dtype (array)."""
    array = None

    def __init__(self, subtype=None, shape=None, code=None):
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError(f"malformed array state {_short(state)}")
        shape, dtype, fortran, raw = state[-4:]
        d = _numeric(dtype)
        if isinstance(raw, str):  # Python 2's str read as text
            raw = raw.encode("latin1")
        if not isinstance(raw, bytes) or not isinstance(shape, tuple) or \
                not all(isinstance(n, int) and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"malformed array state (shape {_short(shape)})")
        count = math.prod(shape)
        if len(raw) != count * d.itemsize:
            raise pickle.UnpicklingError(f"array of shape {shape} {d} needs {count * d.itemsize} bytes, has {len(raw)}")
        self.array = np.frombuffer(raw, d, count=count).reshape(shape, order="F" if fortran else "C").copy()


def _scalar(dtype, raw=None):
    """numpy's scalar(dtype, raw bytes): a numpy number of a clean dtype."""
    d = _numeric(dtype)
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes) or len(raw) != d.itemsize:
        raise pickle.UnpicklingError(f"malformed {d} scalar")
    return np.frombuffer(raw, d, count=1)[0]


def _empty_bytes(*args):
    """bytes() as Python 3 pickles b"" at protocol 2 (an empty array's data, an empty name); never bytes(n),
    which would allocate n bytes."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments: CIFAR batches hold plain data only")
    return b""


_REPR = reprlib.Repr()  # (Python 3.11 takes no keyword arguments here)
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 4, 20, 20
_NDARRAY = object()  # what the unpickler hands out for numpy.ndarray: only _reconstruct's first argument
_NUMPY = {"_reconstruct": _Array, "ndarray": _NDARRAY, "dtype": _Dtype, "scalar": _scalar}


def _unwrap(obj):
    """The unpickled object with each _Array replaced by its array: the object itself, a dict's values or a list's
    items, one level down (where a CIFAR batch holds its arrays). Not deeper: a pickle may share one object
    under many names, and a full walk of a few KB of such references took seconds and gigabytes."""
    def one(x):
        if isinstance(x, _Array):
            if x.array is None:
                raise pickle.UnpicklingError("an array without its data")
            return x.array
        return x
    if isinstance(obj, dict):
        return {k: one(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(one(v) for v in obj)
    return one(obj)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds plain data only: numbers, bytes, str, lists, dicts, numeric numpy arrays."""

    def find_class(self, module, name):
        if (module, name) in SAFE_GLOBALS:
            if name == "bytes":
                return _empty_bytes
            return _NUMPY[name] if module.startswith("numpy") else super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}: CIFAR batches hold plain data only")

    def load(self):
        return _unwrap(super().load())


def check_opcodes(blob: bytes) -> None:
    """Walk the pickle's opcodes (pickletools builds nothing) before the C unpickler runs them. A memo index is
    at most the number of opcodes before it in any pickle a writer makes; CPython's unpickler grows and zeroes
    its memo up to the index named, so a damaged LONG_BINPUT of 2**31 (a 20-byte file) took gigabytes: the
    fuzz test was killed for memory at 24 GB. Truncated arguments are found here too, before the unpickler
    allocates the length a damaged BINBYTES8 names."""
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(blob)):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > count:
                raise pickle.UnpicklingError(f"memo index {arg} at opcode {count}: a damaged pickle")
    except (ValueError, TypeError, AssertionError, pickle.UnpicklingError) as e:
        raise pickle.UnpicklingError(str(e)[:200]) from None


def parse_cifar_batch(blob: bytes, name: str, label_keys: tuple) -> dict:
    """One CIFAR batch pickle -> {'data': (n, 32, 32, 3) uint8 NHWC, key: (n,) int64 for each label key}.

    Labels may be lists or arrays of shape (n,) or (n, 1); they must be integers (range checks need
    the class count and live in `check_labels`)."""
    try:
        check_opcodes(blob)
        obj = RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{name}: {e}") from None
    except Exception as e:  # truncated or garbled pickles raise many types; all mean "bad file"
        raise DataError(f"{name}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: CIFAR batch should be a dict, got {type(obj).__name__}")
    obj = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    data = obj.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{name}: 'data' should be (n, 3072) uint8, got {got}")
    out = {"data": data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()}  # (n, 3072) -> (n, C, H, W) -> (n, H, W, C)
    for key in label_keys:
        if key not in obj:
            raise DataError(f"{name}: no labels {key!r} in the batch (keys: {', '.join(_short(k) for k in list(obj)[:12])})")
        value = obj[key]
        if isinstance(value, (list, tuple)) and not all(  # flat, before numpy walks it: a shared nesting would not end
                isinstance(v, (int, np.integer)) or (isinstance(v, (list, tuple)) and len(v) == 1
                                                     and isinstance(v[0], (int, np.integer))) for v in value):
            raise DataError(f"{name}: labels {key!r} should be integers of shape (n,) or (n, 1)")
        try:
            labels = np.asarray(value)
        except (TypeError, ValueError, OverflowError) as e:  # ragged or odd lists
            raise DataError(f"{name}: malformed labels {key!r} ({e})") from None
        if labels.dtype.kind not in "iu" or labels.ndim > 2 or (labels.ndim == 2 and labels.shape[1] != 1):
            raise DataError(f"{name}: labels {key!r} should be integers of shape (n,) or (n, 1), "
                            f"got {labels.shape} {labels.dtype}")
        labels = labels.reshape(-1).astype(np.int64)  # lists or (n, 1) -> (n,)
        if len(labels) != len(data):
            raise DataError(f"{name}: {len(data)} images but {len(labels)} {key!r}")
        out[key] = labels
    return out


def check_labels(labels: np.ndarray, name: str, num_classes: int) -> None:
    """Every label in [0, num_classes): else DataError naming the offending value."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataError(f"{name}: label {bad} out of range for {num_classes} classes")


def _check_batch_size(path: Path, member: str, size: int) -> None:
    if size > MAX_IDX_BYTES:  # CIFAR-100's train batch, the largest, is 155 MB
        raise DataError(f"{path}: {member!r} holds {size:,} bytes, more than any CIFAR batch "
                        f"({MAX_IDX_BYTES:,} at most); not a CIFAR archive")


def read_cifar_blobs(path: str | Path, members: tuple) -> dict:
    """{member: bytes} for the named batches of a CIFAR python tarball (or an extracted folder).
    Only regular files count: links inside an archive are refused, not followed."""
    path = Path(path)
    blobs = {}
    try:
        if path.is_dir():
            for m in members:
                hits = sorted(p for p in path.rglob(m) if p.is_file())
                if not hits:
                    raise DataError(f"{path}: no CIFAR batch {m!r} inside")
                _check_batch_size(path, m, hits[0].stat().st_size)
                blobs[m] = hits[0].read_bytes()
        else:
            with tarfile.open(path, "r:*") as tar:
                found = {Path(info.name).name: info for info in tar.getmembers()}
                for m in members:
                    if m not in found:
                        raise DataError(f"{path}: no CIFAR batch {m!r} inside the archive")
                    if not found[m].isfile():
                        raise DataError(f"{path}: {m!r} is not a regular file in the archive")
                    _check_batch_size(path, m, found[m].size)  # before reading it whole: a tar.gz of zeros
                    blobs[m] = tar.extractfile(found[m]).read()  # may declare gigabytes in a few KB
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise DataError(f"{path}: corrupt or truncated CIFAR archive ({e}); replace it with an intact copy") from None
    return blobs


def read_cifar_archive(path: str | Path, members: tuple, label_keys: tuple) -> dict:
    """Read and concatenate the named batches from a CIFAR python tarball (or an extracted folder)."""
    blobs = read_cifar_blobs(path, members)
    parts = [parse_cifar_batch(blobs[m], f"{path}:{m}", label_keys) for m in members]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
