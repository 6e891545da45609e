"""The deterministic batch stream both backends train on.

For (dataset, seed, batch size) the training order is fixed: epoch e visits the training set
in the permutation `numpy.random.default_rng([seed, e]).permutation(n)`, cut into
n // batch_size full batches. Drop-last policy: the final partial batch of each epoch is
dropped, so every optimizer step sees exactly `batch_size` samples and step s always lives at
(epoch s // steps_per_epoch, batch s % steps_per_epoch): the stream position *is* the step count,
which is what checkpoints store. Evaluation batches run over the whole split in order, the last
batch partial. Normalisation is defined once here: uint8 / 255 -> float32 in [0, 1].

Backends may index the arrays themselves with `epoch_indices` (the fast path: the whole set lives
on the device and each step gathers its batch) or iterate `train_batches`; both give the same batches.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .sources import LoadedData, content_fingerprint


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, C) -> float32 in [0, 1], same layout. The one normalisation both backends use."""
    return images.astype(np.float32) / np.float32(255.0)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass
class Stream:
    """Normalised arrays plus the seeded batch order. Images float32 NHWC, labels int64."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    batch_size: int
    seed: int
    data_id: str = ""  # what the run trains and evaluates on (make_stream): a --resume must find the same

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_labels) // self.batch_size  # drop-last

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """(steps_per_epoch, batch_size) int64 indices into the training arrays for `epoch`."""
        spe = self.steps_per_epoch
        return epoch_permutation(len(self.train_labels), self.seed, epoch)[: spe * self.batch_size].reshape(spe, -1)

    def step_indices(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, batch_size) indices for global steps [start, stop), across epoch boundaries."""
        spe = self.steps_per_epoch
        out, step = [], start
        while step < stop:
            epoch, pos = divmod(step, spe)
            take = min(stop - step, spe - pos)
            out.append(self.epoch_indices(epoch)[pos: pos + take])
            step += take
        return np.concatenate(out) if out else np.zeros((0, self.batch_size), np.int64)

    def train_batches(self, start: int, stop: int):
        """Yield (images, labels) for global steps [start, stop)."""
        for idx in self.step_indices(start, stop):
            yield self.train_images[idx], self.train_labels[idx]

    def test_batches(self, batch_size: int = 256):
        """Yield the test split in order; the last batch may be partial."""
        for i in range(0, len(self.test_labels), batch_size):
            yield self.test_images[i: i + batch_size], self.test_labels[i: i + batch_size]


def held_out_count(n: int, val_fraction: float) -> int:
    """Training samples --val-fraction holds out of `n` for evaluation; 0 without it. ValueError when the
    share rounds to nothing held out, or to nothing left to train on."""
    if not val_fraction:
        return 0
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n:
        raise ValueError(f"--val-fraction {val_fraction:g} of {n:,} training samples holds out {n_val:,}: "
                         f"nothing to {'evaluate on' if n_val == 0 else 'train on'}")
    return n_val


def check_train_limit(data: LoadedData, train_limit: int | None) -> None:
    """ValueError when --train-limit exceeds the training set: it was capped silently, and the run trained
    on fewer samples than asked (a 10k scaling point on the 4k subset trained on 4k)."""
    n = len(data.train_labels)
    if train_limit and train_limit > n:
        raise ValueError(f"--train-limit {train_limit:,} is larger than the training set ({n:,} samples in {data.label})")


def make_stream(data: LoadedData, batch_size: int, seed: int, train_limit: int | None = None,
                val_fraction: float = 0.0) -> Stream:
    """Build the stream. `train_limit` keeps the first N training samples (tests, scaling runs);
    `val_fraction` > 0 holds out that share of the training set (seeded, fixed for `seed`) and uses
    it as the evaluation split in place of the test split."""
    x, y = data.train_images, data.train_labels
    check_train_limit(data, train_limit)
    if train_limit:
        x, y = x[:train_limit], y[:train_limit]
    tx, ty = data.test_images, data.test_labels
    if val_fraction:
        n_val = held_out_count(len(y), val_fraction)
        perm = np.random.default_rng([seed, 2**31 - 1]).permutation(len(y))  # never an epoch's key
        val, keep = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        x, y, tx, ty = x[keep], y[keep], x[val], y[val]
    if batch_size > len(y):
        raise ValueError(f"--batch-size {batch_size} is larger than the training set ({len(y)} samples)")
    if not len(ty):  # every evaluation would divide by zero (torch) or report an empty metric (Keras)
        raise ValueError(f"{data.label}: the test split holds no samples; nothing to evaluate on")
    data_id = (f"{data.label}: {len(y):,} train / {len(ty):,} evaluation samples, content "
               f"{content_fingerprint(x, y, tx, ty)}")
    return Stream(normalize(x), y.astype(np.int64), normalize(tx), ty.astype(np.int64), batch_size, seed, data_id)


def batch_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over a batch's float32 images and int64 labels: what the data-order parity test compares."""
    h = hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return h.hexdigest()[:16]
