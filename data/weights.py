"""The neutral weights file and the shared initial draw.

Format: an .npz whose keys are "<layer>/kernel" and "<layer>/bias" (names from `data.arch`), arrays
float32 in Keras layout (conv kernels HWIO, dense kernels (in, out), the first dense kernel's rows
in NHWC flatten order). tf_impl reads and writes it as is; torch_impl transposes at its boundary.

The shared draw follows Keras's default rules: glorot-uniform kernels (limit sqrt(6 / (fan_in +
fan_out)), conv fans multiplied by the kernel area) and zero biases, from numpy's seeded
Generator, so both backends start from bit-identical weights.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from .arch import param_shapes
from .contract import atomic_path
from .errors import DataError


def glorot_limit(shape: tuple) -> float:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return float(np.sqrt(6.0 / (fan_in + fan_out)))


def initial_weights(layers: list, seed: int) -> dict:
    """{name: float32 array} drawn with Keras's default initialisers from `seed`."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in param_shapes(layers).items():
        if name.endswith("/kernel"):
            limit = glorot_limit(shape)
            out[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        else:
            out[name] = np.zeros(shape, np.float32)
    return out


def save(path: str | os.PathLike, weights: dict) -> None:
    """Write weights atomically (temp file + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" to it
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in weights.items()})


def load(path: str | os.PathLike, layers: list | None = None) -> dict:
    """Read a neutral weights file; with `layers`, check names and shapes against the architecture."""
    try:
        with np.load(path, allow_pickle=False) as f:
            weights = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated or damaged: BadZipFile
        raise DataError(f"{path}: not a readable weights .npz ({e})") from None
    for k, v in weights.items():  # both backends cast to float32; NaN or inf would train apart (tf's fused
        # Dense+ReLU turns a NaN into 0, torch keeps it), so such a file is refused, not loaded
        if v.dtype.kind != "f":
            raise DataError(f"{path}: {k} holds {v.dtype} values; weights must be floating point")
        if not np.isfinite(v).all():
            raise DataError(f"{path}: {k} holds {int((~np.isfinite(v)).sum())} NaN or infinite values")
    if layers is not None:
        expected = param_shapes(layers)
        if set(weights) != set(expected):
            raise DataError(f"{path}: weights {sorted(weights)} do not match the model's {sorted(expected)}")
        for k, shape in expected.items():
            if tuple(weights[k].shape) != tuple(shape):
                raise DataError(f"{path}: {k} has shape {weights[k].shape}, the model needs {shape}")
    return weights
