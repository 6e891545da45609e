"""Shared test helpers. The pytest process itself never imports tensorflow or torch: everything
that needs a framework runs in a child process (`python -m tf_impl ...`, `python -m torch_impl ...`,
or the backends' job runners), exchanging JSON and .npz files. That keeps the suite safe with torch
builds that ship triton (TensorFlow then triton in one process segfaults, tensorflow#124205) and
keeps the two frameworks' thread pools apart."""
from __future__ import annotations

import contextlib
import gzip
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_module(module: str, *args, timeout: float = 600, env: dict | None = None, check: bool = False,
               cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m module args...` in a child process; returns the CompletedProcess (text)."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or child_env(), cwd=cwd or ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {module} {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


@contextlib.contextmanager
def no_hang(seconds: int):
    """Fail the test (AssertionError) when its block runs past `seconds`: a hang, not slowness (SIGALRM)."""
    def timeout(signum, frame):
        raise AssertionError(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array (magic 0x0000 08 ndim, big-endian dims, data)."""
    array = np.ascontiguousarray(array, np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    blob = idx_bytes(array)
    path.write_bytes(gzip.compress(blob) if compress else blob)
    return path


def real_dataset_dir(name: str) -> Path | None:
    """A folder with the real files of `name` on this machine, or None."""
    if name == "mnist":
        env = os.environ.get("KLC_DATA_DIR")
        for cand in ([Path(env) / "mnist", Path(env)] if env else []) + [SHARED_MNIST]:
            if (cand / "train-images-idx3-ubyte.gz").is_file():
                return cand
        return None
    if name == "fashion_mnist":
        return SYSTEM_FASHION if (SYSTEM_FASHION / "train-images-idx3-ubyte.gz").is_file() else None
    return None


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty user cache and no implicit data dir or downloads, for source-order tests."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KLC_CACHE_DIR", str(cache))
    monkeypatch.delenv("KLC_DATA_DIR", raising=False)
    monkeypatch.setenv("KLC_OFFLINE", "1")
    return cache


def run_jobs_in_both(folder: Path, name: str, jobs: list, **spec) -> None:
    """Run the same job list in `python -m tf_impl.jobs` and `python -m torch_impl.jobs`, one child
    each. Output paths containing "_BK" get the backend's name ("_tf" / "_torch") in its place."""
    import json
    for backend in ("tf", "torch"):
        path = Path(folder) / f"{name}_{backend}.json"
        path.write_text(json.dumps({**spec, "jobs": json.loads(json.dumps(jobs).replace("_BK", f"_{backend}"))}))
        run_module(f"{backend}_impl.jobs", path, check=True, timeout=600)



def _untracked() -> set | None:
    """Files in the checkout that git neither tracks nor ignores; None outside a git checkout."""
    proc = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                          capture_output=True, text=True)
    return set(filter(None, proc.stdout.split("\0"))) if proc.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_checkout():
    """Tests write under tmp_path only: a file that appears in the repository (say, a run folder from a
    misnamed --out) would end up committed. Fails the session, naming the files."""
    before = _untracked()
    yield
    after = _untracked()
    if before is not None and after is not None and after - before:
        pytest.fail(f"tests wrote into the checkout: {sorted(after - before)[:5]}", pytrace=False)
