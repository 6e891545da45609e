"""Batch jobs for the parity tests, the harness's parity line and the weight converter: run many
small framework tasks in one TensorFlow process, exchanging only .npz/JSON files (never tensors
with the torch process). torch_impl/jobs.py answers the same jobs the same way.

    python -m tf_impl.jobs JOBS.json      JOBS.json: {"jobs": [{"op": ..., ...}, ...]}

ops: logits, export (native file -> neutral .npz), import (neutral .npz -> native file),
native_init, roundtrip, loss, steps (k optimizer steps on given batches), batches (hashes of the
first n batches the training code gathers), params.
"""
from __future__ import annotations

import sys

import numpy as np

from data import arch, weights as neutral
from data.cli import run_jobs
from data.contract import RunConfig, write_json_atomic
from data.stream import batch_hash

from .train import configure


def _model(job, keras_precision="32"):
    from .models import build_model
    return build_model(job["model"], tuple(job["input_shape"]), job["num_classes"], job.get("widths"), keras_precision,
                       job.get("dropout", 0.0))


def _layers(job):
    return arch.build_layers(job["model"], tuple(job["input_shape"]), job["num_classes"], job.get("widths"),
                             job.get("dropout", 0.0))


def op_logits(job):
    from .weights import from_neutral
    model = _model(job)
    from_neutral(model, neutral.load(job["weights"], _layers(job)))
    images = np.load(job["inputs"])["images"]
    np.savez(job["out"], logits=np.asarray(model(images, training=False)))


def op_saved_logits(job):
    """A .keras file loaded as a Keras user would, `keras.models.load_model(path)` and nothing else: its
    logits on the inputs."""
    import keras
    model = keras.models.load_model(job["src"])
    np.savez(job["out"], logits=np.asarray(model(np.load(job["inputs"])["images"], training=False)))


def op_dropout(job):
    """The model's first Dropout layer in training mode on ones (4096, 128): share of zeros, kept values."""
    import keras
    model = _model(job)
    layer = next(l for l in model.layers if isinstance(l, keras.layers.Dropout))
    keras.utils.set_random_seed(job.get("seed", 0))
    out = np.asarray(layer(np.ones((4096, 128), np.float32), training=True))
    write_json_atomic(job["out"], {"zero_share": float((out == 0).mean()), "kept": sorted(set(out[out != 0].tolist()))})


def op_export(job):
    """A saved Keras model (.keras) -> neutral weights."""
    import keras

    from .weights import to_neutral
    model = keras.models.load_model(job["src"], compile=False)
    neutral.save(job["out"], to_neutral(model))


def op_import(job):
    """Neutral weights -> a saved Keras model (.keras)."""
    from .weights import from_neutral
    model = _model(job)
    from_neutral(model, neutral.load(job["weights"], _layers(job)))
    model.save(job["out"])


def op_native_init(job):
    import keras

    from .weights import to_neutral
    keras.utils.set_random_seed(job.get("seed", 0))
    neutral.save(job["out"], to_neutral(_model(job)))


def op_roundtrip(job):
    """Load neutral weights into a fresh model and export them again (bit-identity check)."""
    from .weights import from_neutral, to_neutral
    model = _model(job)
    from_neutral(model, neutral.load(job["weights"], _layers(job)))
    neutral.save(job["out"], to_neutral(model))


def op_loss(job):
    import keras
    f = np.load(job["inputs"])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(f["labels"], f["logits"])
    np.savez(job["out"], loss=np.asarray(loss))


def op_steps(job):
    """From given weights, k optimizer steps on given batches with the training code's optimizer
    and loss; per-step losses and the final weights."""
    import tensorflow as tf

    from .train import make_optimizer
    from .weights import from_neutral, to_neutral
    import keras
    cfg = RunConfig(**job["config"])
    dtype = job.get("dtype", "float32")  # float64 separates the algorithm from float32 rounding chaos
    keras.config.set_dtype_policy(dtype)
    keras.config.set_floatx(dtype)  # the loss computes in floatx
    try:
        model = _model(job)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
    finally:
        keras.config.set_dtype_policy("float32")
        keras.config.set_floatx("float32")
    from_neutral(model, neutral.load(job["weights"], _layers(job)))
    f = np.load(job["batches"])
    images, labels = f["images"].astype(dtype), f["labels"]  # (k, B, H, W, C), (k, B)
    optimizer = make_optimizer(cfg, job.get("total_steps", len(labels)), dtype)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(train_step(images[i], labels[i])) for i in range(len(labels))]
    out = {f"w:{k}": v for k, v in to_neutral(model).items()}
    if job.get("eval"):  # accuracy of the final model on a held-out set, in the same dtype
        e = np.load(job["eval"])
        preds = np.concatenate([np.argmax(np.asarray(model(e["images"][i: i + 500].astype(dtype), training=False)), 1)
                                for i in range(0, len(e["labels"]), 500)])
        out["accuracy"] = np.array(np.mean(preds == e["labels"]))
    np.savez(job["out"], losses=np.array(losses), **out)


def op_batches(job):
    """Hashes of the first n training batches exactly as the custom loop's compiled step gathers them."""
    from data.sources import load
    from data.stream import make_stream
    cfg = RunConfig(**job["config"])
    data = load(cfg.dataset, cfg.data_dir, verify=cfg.verify)
    stream = make_stream(data, cfg.batch_size, cfg.seed, cfg.train_limit)
    import tensorflow as tf
    x, y = tf.constant(stream.train_images), tf.constant(stream.train_labels)
    hashes = []
    for idx in stream.step_indices(job.get("start", 0), job.get("start", 0) + job["n"]):
        images, labels = tf.gather(x, idx), tf.gather(y, idx)  # the gather train_steps does in-graph
        hashes.append(batch_hash(images.numpy(), labels.numpy()))
    write_json_atomic(job["out"], {"hashes": hashes})


def op_lrs(job):
    """The learning rate the optimizer applies at each requested step (0-based update index)."""
    from .train import make_optimizer
    cfg = RunConfig(**job["config"])
    model = _model(job)
    optimizer = make_optimizer(cfg, job["total_steps"])
    optimizer.build(model.trainable_variables)
    lrs = []
    for step in job["steps"]:
        optimizer.iterations.assign(step)
        lrs.append(float(np.asarray(optimizer.learning_rate)))
    write_json_atomic(job["out"], {"lrs": lrs})


def op_peak(job):
    """fp32 (or bf16) matmul peak on the device TensorFlow sees (what utilisation is measured against)."""
    import tensorflow as tf

    from data.loop import time_peak

    from .train import device_name
    device = device_name(tf)
    n = job.get("n_gpu", 8192) if device != "cpu" else job.get("n_cpu", 1024)
    dtype = tf.bfloat16 if job.get("precision") == "bf16" else tf.float32
    with tf.device("/GPU:0" if device != "cpu" else "/CPU:0"):  # rows of a sum to ~1: products stay ~0.5
        a, b = tf.cast(tf.random.uniform((n, n)) * (2 / n), dtype), tf.cast(tf.random.uniform((n, n)), dtype)
    # torch_impl's probe, step for step: a chain of products x <- a @ x from b (10 per host sync on a GPU, so
    # launch and sync cost ~nothing; a chain, so graph optimisation cannot merge them), then one element read
    matmuls = job.get("matmuls", 10 if device != "cpu" else 1)
    step = tf.function(lambda: tf.while_loop(lambda i, x: i < matmuls, lambda i, x: (i + 1, tf.matmul(a, x)),
                                             (tf.constant(0), b))[1][0, 0])
    result = time_peak(lambda: float(step()), n, device, job.get("precision", "32"), job.get("budget_s", 1.5), matmuls)
    write_json_atomic(job["out"], {"backend": "tf", **result, "matmuls_per_sync": matmuls})


def op_keras_dataset(job):
    """sha256 of the arrays keras.datasets.<name>.load_data() parses (files found under $KERAS_HOME),
    for the loader-parity test: data/ must read the same files to the same arrays."""
    import hashlib

    import keras
    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, job["name"]).load_data()
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()  # noqa: E731
    write_json_atomic(job["out"], {"shapes": [list(a.shape) for a in (x_train, y_train, x_test, y_test)],
                                   "sha256": [digest(a) for a in (x_train, y_train, x_test, y_test)]})


def op_params(job):
    from .models import count_params
    write_json_atomic(job["out"], {"params": count_params(_model(job))})


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def main(argv) -> int:
    return run_jobs(argv, OPS, configure)


if __name__ == "__main__":
    from data.cli import run_cli
    sys.exit(run_cli(main, prog="python -m tf_impl.jobs"))
