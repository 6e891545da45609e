"""LightningDataModule over `data.stream`: the same batches, in the same order, as tf_impl.

The arrays become tensors once, NHWC -> NCHW here and nowhere else (as channels_last views of the
NHWC arrays: no copy, and the layout oneDNN convolutions prefer); each step gathers its batch by
the stream's indices (no per-sample Dataset/collate work, which dominated the MLP's step time).
"""
from __future__ import annotations

import lightning as L
import torch

from data.stream import Stream


def to_tensors(stream: Stream, device="cpu", channels_last: bool = True):
    """(x_train, y_train, x_test, y_test): images NCHW float32, labels int64."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def images(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2).to(device, memory_format=fmt)  # (N, H, W, C) -> (N, C, H, W)

    return (images(stream.train_images), torch.from_numpy(stream.train_labels).to(device),
            images(stream.test_images), torch.from_numpy(stream.test_labels).to(device))


class Block:
    """k consecutive training batches for one training_step, gathered one at a time as they are
    iterated (the batch in use stays in cache). Yields (images (B, C, H, W), labels (B,))."""

    def __init__(self, x, y, indices):  # indices: (k, B) int64 on x's device
        self.x, self.y, self.indices = x, y, indices
        self.batch_size = indices.shape[1]

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        for idx in self.indices:
            yield self.x[idx], self.y[idx]


def block_ends(start: int, total: int, k: int) -> list:
    """Where the blocks covering global steps [start, total) end: every multiple of k, and total."""
    return list(range((start // k + 1) * k, total, k)) + [total] if start < total else []


class StepBatches:
    """Iterable of training blocks (see Block) for global steps [start(), total): restartable at any
    step, so a resumed run sees exactly the batches the uninterrupted run would. Block ends fall on
    multiples of k, so evaluation and checkpoint steps (multiples of k) end a block."""

    def __init__(self, stream: Stream, x, y, total: int, start=lambda: 0, k: int = 1):
        self.stream, self.x, self.y, self.total, self.start, self.k = stream, x, y, total, start, k

    def __len__(self):
        return len(block_ends(self.start(), self.total, self.k))

    def state_dict(self) -> dict:
        """Lightning's resumable-loader interface. The position is the global step, restored with the
        checkpoint, so this only records it; without the interface Lightning warned on every mid-epoch
        resume that the results may be unreliable, though they match an uninterrupted run's."""
        return {"global_step": self.start()}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: __iter__ starts at the restored global step."""

    def __iter__(self):
        a = start = self.start()
        indices = torch.from_numpy(self.stream.step_indices(start, self.total)).to(self.x.device)  # (steps, B)
        for b in block_ends(start, self.total, self.k):
            yield Block(self.x, self.y, indices[a - start: b - start])
            a = b


class TestBatches:
    def __init__(self, x, y, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i: i + self.batch_size], self.y[i: i + self.batch_size]


class StreamDataModule(L.LightningDataModule):
    def __init__(self, stream: Stream, total_steps: int, eval_batch_size: int = 256, channels_last: bool = True,
                 steps_per_block: int = 1):
        super().__init__()
        self.stream, self.total, self.eval_batch_size, self.channels_last = stream, total_steps, eval_batch_size, channels_last
        self.k = steps_per_block
        self.tensors = None

    def setup(self, stage=None):
        if self.tensors is None:  # the whole split on the training device, once (batches are gathered there)
            device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
            self.tensors = to_tensors(self.stream, device, channels_last=self.channels_last)

    def train_dataloader(self):
        x, y, _, _ = self.tensors
        trainer = self.trainer
        return StepBatches(self.stream, x, y, self.total, start=lambda: trainer.global_step if trainer else 0, k=self.k)

    def val_dataloader(self):
        _, _, x, y = self.tensors
        return TestBatches(x, y, self.eval_batch_size)
