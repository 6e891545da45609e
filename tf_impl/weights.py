"""Keras model <-> neutral weights dict (data.weights layout is Keras's own: no transposes here)."""
from __future__ import annotations

import numpy as np

from data.arch import build_layers, param_shapes


def to_neutral(model) -> dict:
    out = {}
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            out[f"{layer.name}/kernel"] = np.asarray(layer.kernel.numpy(), np.float32)
            out[f"{layer.name}/bias"] = np.asarray(layer.bias.numpy(), np.float32)
    return out


def from_neutral(model, weights: dict) -> None:
    """Assign every kernel and bias; shapes must match exactly."""
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            for part in ("kernel", "bias"):
                value = weights[f"{layer.name}/{part}"]
                var = getattr(layer, part)
                if tuple(var.shape) != tuple(value.shape):
                    raise ValueError(f"{layer.name}/{part}: model has {tuple(var.shape)}, weights have {value.shape}")
                var.assign(value)


def expected_shapes(name, input_shape, num_classes, widths=None) -> dict:
    return param_shapes(build_layers(name, input_shape, num_classes, widths))
