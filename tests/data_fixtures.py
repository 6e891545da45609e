"""Helpers and fixtures for the data-layer tests: tiny IDX and CIFAR datasets written on the fly,
registry specs whose checksums are those tiny files', and a loopback HTTP server that plays a
mirror (good files, an HTML error page, or a 404). Nothing here touches the network beyond
127.0.0.1.

Use: `from data_fixtures import make_idx_dataset, ...` (tests/ is on sys.path under pytest), and
import a fixture by name into the test module to use it.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import socket
import tarfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import idx_bytes
from data import registry
from data.registry import DatasetSpec, FileSpec

IDX_NAMES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
N_TRAIN, N_TEST = 30, 10  # tiny: 3 train and 1 test image per class
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
             b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n")


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def gz(blob: bytes, level: int = 9, mtime: int = 0) -> bytes:
    """gzip with a fixed header time, so the same content gives the same .gz bytes."""
    return gzip.compress(blob, compresslevel=level, mtime=mtime)


def tiny_idx_arrays(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> dict:
    """{role: uint8 array}: 28x28 images of noise, labels 0..9 cycling (balanced)."""
    rng = np.random.default_rng(seed)
    return {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
            "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}


def canonical_files(arrays: dict) -> dict:
    """{file name: canonical .gz bytes} for the arrays (what the 'mirror' serves)."""
    return {IDX_NAMES[role]: gz(idx_bytes(a)) for role, a in arrays.items()}


def idx_spec(arrays: dict, name: str = "mnist", mirrors: tuple = (), system_dirs: tuple = ()) -> DatasetSpec:
    """A copy of the MNIST spec whose files and checksums are those of `arrays`' canonical .gz files."""
    files = {}
    for role, a in arrays.items():
        content = idx_bytes(a)
        blob = gz(content)
        files[role] = FileSpec(IDX_NAMES[role], len(blob), sha(blob), sha(content))
    return replace(registry.MNIST, name=name, files=files, mirrors=tuple(mirrors), system_dirs=tuple(system_dirs),
                   train_size=len(arrays["train_labels"]), test_size=len(arrays["test_labels"]))


def write_idx_dataset(folder: Path, arrays: dict, level: int = 9, mtime: int = 0, raw: bool = False) -> Path:
    """Write the four files into `folder` (created): canonical .gz by default, recompressed with
    another level/mtime, or raw IDX under the names without .gz."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, a in arrays.items():
        name = IDX_NAMES[role]
        if raw:
            (folder / name[:-3]).write_bytes(idx_bytes(a))
        else:
            (folder / name).write_bytes(gz(idx_bytes(a), level, mtime))
    return folder


def snapshot(folder: Path) -> dict:
    """{relative path: (bytes sha256, mtime_ns)} of every file under `folder`."""
    return {str(p.relative_to(folder)): (sha(p.read_bytes()), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- CIFAR ---------------------------------------------------------------------------------------

def cifar_batch(n: int, label_keys: dict, seed: int = 0) -> dict:
    """A batch dict as the CIFAR python pickles hold it (bytes keys): {b'data': (n, 3072) uint8, ...}.
    `label_keys` maps key -> labels (list or array)."""
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"testing batch", b"data": data, **{k.encode(): v for k, v in label_keys.items()}}


def cifar_tarball(path: Path, top: str, batches: dict, compression: str = "gz") -> Path:
    """Write {member name: batch dict} as pickles under `top/` into a tarball at `path`."""
    with tarfile.open(path, f"w:{compression}") as tar:
        for member, batch in batches.items():
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{top}/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def cifar_spec(base: DatasetSpec, archive: Path, system_dirs: tuple = ()) -> DatasetSpec:
    """`base` (registry.CIFAR10 or CIFAR100) with its archive checksum set to that of `archive`."""
    blob = archive.read_bytes()
    fs = FileSpec(base.files["archive"].name, len(blob), sha(blob))
    return replace(base, files={"archive": fs}, mirrors=(), system_dirs=tuple(system_dirs))


# --- a loopback mirror ---------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    files: dict = {}  # name -> bytes; set per server
    mode = "files"  # "files": serve files (404 otherwise); "html": 200 with an HTML error page; "404"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = self.path.rsplit("/", 1)[-1]
        if self.mode == "html":
            self._send(200, HTML_PAGE, "text/html")
        elif self.mode == "files" and name in self.files:
            self._send(200, self.files[name], "application/octet-stream")
        else:
            self._send(404, HTML_PAGE, "text/html")

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


class LoopbackMirror:
    """An HTTP server on 127.0.0.1 (a free port) in a thread; `url` is the base URL to put in a spec."""

    def __init__(self, mode: str = "files", files: dict | None = None):
        handler = type("Handler", (_Handler,), {"mode": mode, "files": dict(files or {})})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror_factory():
    """mirror_factory(mode, files) -> LoopbackMirror; every mirror is shut down after the test."""
    made = []

    def make(mode: str = "files", files: dict | None = None) -> LoopbackMirror:
        made.append(LoopbackMirror(mode, files))
        return made[-1]

    yield make
    for m in made:
        m.close()


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (a port bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture
def no_proxy(monkeypatch):
    """Loopback downloads must not go through a proxy the environment may set."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
