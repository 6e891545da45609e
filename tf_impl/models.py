"""Keras models built from the shared layer list in `data.arch` (one definition for both backends).

    build_model("cnn", (28, 28, 1), 10) -> keras.Model, layers named as the neutral weights file.

Plain Keras layers throughout, so a saved .keras file loads with keras.models.load_model alone; only a
data-parallel run (replica_dropout=True, never saved as .keras) swaps Dropout for ReplicaDropout.
"""
from __future__ import annotations

import keras

from data.arch import KERNEL, POOL, build_layers


class ReplicaDropout(keras.layers.Dropout):
    """keras.layers.Dropout that, under a tf.distribute strategy, drops what one device would. Replica r
    of N, holding rows r*B..(r+1)*B of each global batch of N*B samples (train.py's split), draws the
    mask for all N*B rows with the layer's seed generator, whose state the replicas share (mirrored),
    as the one-device run draws it, and keeps its own rows. Plain Dropout would draw each replica the
    same (B, ...) mask, and the one-device run another. With one replica it is Dropout itself. Costs N
    times the random draws of a Dropout layer."""

    def call(self, inputs, training=False):
        import tensorflow as tf  # already loaded by Keras; traced once per tf.function
        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync if ctx is not None else 1
        if not training or self.rate == 0 or n == 1 or self.noise_shape is not None:
            return super().call(inputs, training)
        b, r = tf.shape(inputs)[0], ctx.replica_id_in_sync_group
        ones = tf.ones(tf.concat([[n * b], tf.shape(inputs)[1:]], 0), inputs.dtype)  # (N*B, ...)
        keep = keras.random.dropout(ones, self.rate, seed=self.seed_generator)  # 0 or 1 / (1 - rate), Dropout's draw
        return inputs * keep[r * b: (r + 1) * b]  # (B, ...): this replica's rows


def build_model(name: str, input_shape: tuple, num_classes: int, widths=None, precision: str = "32",
                dropout: float = 0.0, replica_dropout: bool = False) -> keras.Model:
    """A functional Keras model; logits out (no softmax). With bf16 the last layer stays float32.
    replica_dropout: ReplicaDropout layers for a data-parallel run (see above)."""
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
            drop = ReplicaDropout if replica_dropout else keras.layers.Dropout
            x = drop(layer.rate, name=layer.name)(x)  # active only with training=True
        else:
            x = keras.layers.Dense(layer.units, activation="relu" if layer.relu else None, name=layer.name,
                                   dtype="float32" if (last and precision == "bf16") else None)(x)
    return keras.Model(inputs, x, name=name)


def count_params(model: keras.Model) -> int:
    return int(sum(int(w.numpy().size) for w in model.trainable_weights))
