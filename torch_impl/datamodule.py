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


class StepBatches:
    """Iterable of training batches for global steps [start(), total): restartable at any step,
    so a resumed run sees exactly the batches the uninterrupted run would."""

    def __init__(self, stream: Stream, x, y, total: int, start=lambda: 0):
        self.stream, self.x, self.y, self.total, self.start = stream, x, y, total, start

    def __len__(self):
        return self.total - self.start()

    def __iter__(self):
        for idx in self.stream.step_indices(self.start(), self.total):
            idx = torch.from_numpy(idx)
            yield self.x[idx], self.y[idx]  # (B, C, H, W), (B,)


class TestBatches:
    def __init__(self, x, y, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i: i + self.batch_size], self.y[i: i + self.batch_size]


class StreamDataModule(L.LightningDataModule):
    def __init__(self, stream: Stream, total_steps: int, eval_batch_size: int = 256, channels_last: bool = True):
        super().__init__()
        self.stream, self.total, self.eval_batch_size, self.channels_last = stream, total_steps, eval_batch_size, channels_last
        self.tensors = None

    def setup(self, stage=None):
        if self.tensors is None:
            self.tensors = to_tensors(self.stream, channels_last=self.channels_last)

    def train_dataloader(self):
        x, y, _, _ = self.tensors
        trainer = self.trainer
        return StepBatches(self.stream, x, y, self.total, start=lambda: trainer.global_step if trainer else 0)

    def val_dataloader(self):
        _, _, x, y = self.tensors
        return TestBatches(x, y, self.eval_batch_size)
