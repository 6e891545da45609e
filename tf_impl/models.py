"""Keras models built from the shared layer list in `data.arch` (one definition for both backends).

    build_model("cnn", (28, 28, 1), 10) -> keras.Model, layers named as the neutral weights file.
"""
from __future__ import annotations

import keras

from data.arch import KERNEL, POOL, build_layers


def build_model(name: str, input_shape: tuple, num_classes: int, widths=None, precision: str = "32",
                dropout: float = 0.0) -> keras.Model:
    """A functional Keras model; logits out (no softmax). With bf16 the last layer stays float32."""
    layers = build_layers(name, input_shape, num_classes, widths, dropout)
    inputs = keras.Input(shape=input_shape, name="images")  # (B, H, W, C)
    x = inputs
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        if layer.kind == "conv":
            x = keras.layers.Conv2D(layer.units, KERNEL, padding="same", activation="relu", name=layer.name)(x)
        elif layer.kind == "pool":
            x = keras.layers.MaxPooling2D(POOL, name=layer.name)(x)  # (B, H, W, C) -> (B, H//2, W//2, C)
        elif layer.kind == "flatten":
            x = keras.layers.Flatten(name=layer.name)(x)  # NHWC order: row, column, channel
        elif layer.kind == "dropout":
            x = keras.layers.Dropout(layer.rate, name=layer.name)(x)  # active only with training=True
        else:
            x = keras.layers.Dense(layer.units, activation="relu" if layer.relu else None, name=layer.name,
                                   dtype="float32" if (last and precision == "bf16") else None)(x)
    return keras.Model(inputs, x, name=name)


def count_params(model: keras.Model) -> int:
    return int(sum(int(w.numpy().size) for w in model.trainable_weights))
