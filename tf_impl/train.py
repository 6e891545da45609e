"""Training for the tf.keras backend: a compiled GradientTape step over the shared data stream,
batched evaluation with keras.metrics, checkpoints, and `model.fit` as the reference loop.

The whole training set lives in one tensor; each compiled call gathers its batches by the
indices `data.stream` hands out (same order as torch), so no tf.data pipeline sits in the step.

--devices N (N > 1): tf.distribute.MirroredStrategy over N GPUs, or N logical CPU devices. Each step's
global batch of stream indices is cut in N equal slices, replica r takes slice r; the loss is scaled
by the global batch (tf.nn.compute_average_loss) and Keras's optimizer sums the replicas' gradients,
so a step computes what the one-device step computes. Each replica holds its own copy of the
training set (on its device, as the one-device path does). Evaluation runs on the first replica.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from data import arch, weights as neutral
from data.contract import ConfigError, RunConfig, check_memory, host_memory, lr_table, new_result, versions
from data.loop import (STOP, Recorder, checkpoint_paths, commit_checkpoint, done_line, execute, finished_runs_exit_cleanly,
                       prepare, progress, resume_from, run_chunks)
from data.tensorboard import EventWriter, run_dir

BACKEND = "tf"


def configure(cfg: RunConfig):
    """Threads, determinism, precision and logical devices: must run before TensorFlow executes anything."""
    from .quiet import import_tensorflow
    tf, keras = import_tensorflow()
    n = cfg.resolved_threads()
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
    if not tf.config.list_physical_devices("GPU"):  # the memory floor against the host it trains on (the parser
        check_memory(cfg, host_memory())  # checked only the weights where a GPU is visible); TF segfaults on a CPU OOM
    keras.utils.set_random_seed(cfg.seed)  # --seed seeds everything (native init, dropout masks) in every run
    if cfg.precision == "32":  # fp32 means IEEE fp32 on GPUs too (TensorFlow defaults to TF32 there), as in torch_impl
        tf.config.experimental.enable_tensor_float_32_execution(False)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg.precision == "bf16" else "float32")
    if cfg.devices > 1 and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]  # one host, N logical devices sharing its threads
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cfg.devices)
    return tf, keras


def make_strategy(tf, devices: int):
    """MirroredStrategy over `devices` GPUs (NCCL all-reduce) or logical CPUs; None for one device."""
    if devices == 1:
        return None
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        if len(gpus) < devices:
            raise ConfigError(f"--devices {devices}: only {len(gpus)} GPU(s) visible to TensorFlow")
        return tf.distribute.MirroredStrategy([d.name for d in gpus[:devices]])
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in cpus[:devices]],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


def make_optimizer(cfg: RunConfig, total_steps: int, dtype: str = "float32"):
    """Adam or SGD with the step-indexed schedule of data.contract.lr_at (same table torch uses)."""
    import keras
    import tensorflow as tf

    class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, table):
            self.table = [float(v) for v in table]
            self._t = tf.constant(self.table, dtype)  # float64 in the parity jobs: an exact lr there

        def __call__(self, step):  # step = optimizer.iterations, 0 for the first update
            return tf.gather(self._t, tf.minimum(tf.cast(step, tf.int32), len(self.table) - 1))

        def get_config(self):
            return {"table": self.table}

    lr = TableSchedule(lr_table(cfg, total_steps))
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon)
    return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def device_name(tf) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return details.get("device_name", "gpu")
    return "cpu"


def onednn_on() -> bool | None:
    """Whether TensorFlow's oneDNN CPU ops are on (convolutions, matmuls). TensorFlow turns them on by default
    only on x86 CPUs with AVX-512 VNNI, BF16 or AMX; TF_ENABLE_ONEDNN_OPTS=1 or 0, set before TensorFlow is
    imported, decides otherwise. Without them the CNN's convolutions run on Eigen: on a 2-core AMD EPYC (AVX2)
    its training was 1.47x (custom loop) and 1.28x (model.fit) slower (benchmarks.onednn; README,
    Performance). None where TensorFlow does not say. TensorFlow reads the setting once, at its import; this
    only reports it."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # what TensorFlow's own tests ask (IsMklEnabled)
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


class Run:
    """One training run: model, optimizer, compiled steps, evaluation and checkpoints."""

    def __init__(self, cfg: RunConfig, stream, total_steps: int, layers: list):
        self.tf, self.keras = configure(cfg)
        tf, keras = self.tf, self.keras
        from .models import build_model
        from .weights import from_neutral
        self.cfg, self.stream, self.total = cfg, stream, total_steps
        self.strategy = make_strategy(tf, cfg.devices)
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():  # variables mirrored per replica
            self.model = build_model(cfg.model, stream.train_images.shape[1:], layers[-1].units, cfg.widths,
                                     cfg.precision, cfg.dropout, replica_dropout=self.strategy is not None)
            if cfg.init == "shared":
                init = neutral.load(cfg.init_file, layers) if cfg.init_file else neutral.initial_weights(layers, cfg.seed)
                from_neutral(self.model, init)
            self.optimizer = make_optimizer(cfg, total_steps)
            self.optimizer.build(self.model.trainable_variables)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.x_train = tf.constant(stream.train_images)  # (N, H, W, C) float32, gathered per step
        self.y_train = tf.constant(stream.train_labels)  # (N,) int64
        self.x_test = tf.constant(stream.test_images)
        self.y_test = tf.constant(stream.test_labels)
        self.acc_metric = keras.metrics.SparseCategoricalAccuracy()
        self.loss_metric = keras.metrics.Mean()
        batch = cfg.batch_size
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn

        @tf.function(input_signature=[tf.TensorSpec([None, batch], tf.int64)])
        def train_steps(indices):  # (k, B): k optimizer steps in one call, no Python between them
            losses = tf.TensorArray(tf.float32, size=tf.shape(indices)[0])
            for i in tf.range(tf.shape(indices)[0]):
                images = tf.gather(self.x_train, indices[i])  # (B, H, W, C)
                labels = tf.gather(self.y_train, indices[i])  # (B,)
                with tf.GradientTape() as tape:
                    logits = model(images, training=True)
                    loss = loss_fn(labels, logits)
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                losses = losses.write(i, tf.cast(loss, tf.float32))
            return losses.stack()

        per_sample = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        if self.strategy is not None:
            train_steps = self._distributed_train_steps(per_sample)

        @tf.function(input_signature=[tf.TensorSpec([None, *stream.test_images.shape[1:]], tf.float32),
                                      tf.TensorSpec([None], tf.int64)])
        def test_step(images, labels):
            logits = model(images, training=False)
            self.loss_metric.update_state(per_sample(labels, logits))
            self.acc_metric.update_state(labels, logits)

        self.train_steps, self.test_step = train_steps, test_step

    def _distributed_train_steps(self, per_sample):
        """train_steps under MirroredStrategy: same signature and losses (the global batch mean)."""
        tf, strategy, model, optimizer = self.tf, self.strategy, self.model, self.optimizer
        batch, n = self.cfg.batch_size, self.cfg.devices
        share = batch // n  # samples per replica and step
        x_train, y_train = self.x_train, self.y_train
        # each replica's own copy of the training set, placed on its device
        x_dist = strategy.experimental_distribute_values_from_function(lambda ctx: tf.identity(x_train))
        y_dist = strategy.experimental_distribute_values_from_function(lambda ctx: tf.identity(y_train))

        def replica_step(x, y, step_indices):  # step_indices: (B,), the whole global batch
            r = tf.distribute.get_replica_context().replica_id_in_sync_group
            mine = step_indices[r * share: (r + 1) * share]  # (B/N,): this replica's slice, in stream order
            images, labels = tf.gather(x, mine), tf.gather(y, mine)  # (B/N, H, W, C), (B/N,)
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = tf.nn.compute_average_loss(per_sample(labels, logits), global_batch_size=batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))  # Keras all-reduces (sums) grads
            return tf.cast(loss, tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, batch], tf.int64)])
        def train_steps(indices):  # (k, B): k optimizer steps in one call
            losses = tf.TensorArray(tf.float32, size=tf.shape(indices)[0])
            for i in tf.range(tf.shape(indices)[0]):
                per_replica = strategy.run(replica_step, args=(x_dist, y_dist, indices[i]))
                losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
            return losses.stack()  # (k,) global-batch mean losses

        return train_steps

    def dtypes(self) -> dict:
        """What the precision setting does, read off real tensors: layer compute dtype, logits, loss."""
        images = self.x_train[:2]
        logits = self.model(images, training=False)
        loss = self.loss_fn(self.y_train[:2], logits)
        first = next(l for l in self.model.layers if l.trainable_weights)
        return {"variables": str(first.variable_dtype), "compute": str(first.compute_dtype),
                "logits": logits.dtype.name, "loss": loss.dtype.name}

    def train_chunk(self, indices: np.ndarray) -> np.ndarray:
        """Steps in calls of at most --steps-per-call each (the losses' read is the host sync); a stop
        request (STOP) ends the chunk after the current call, where weights and losses agree."""
        k, losses = self.cfg.steps_per_call, []
        for i in range(0, len(indices), k):
            if STOP.requested:
                break
            losses.append(self.train_steps(self.tf.constant(indices[i: i + k], self.tf.int64)))
        return np.concatenate([part.numpy() for part in losses]) if losses else np.zeros(0)

    def evaluate(self):
        """(mean test loss, test accuracy, n, seconds) over the whole evaluation split."""
        n, b = len(self.stream.test_labels), self.cfg.eval_batch_size
        if not getattr(self, "_eval_traced", False):  # trace outside the timed pass: inference samples/s
            self.test_step(self.x_test[:b], self.y_test[:b])  # must not count the one-off compilation
            self._eval_traced = True
        self.acc_metric.reset_state()
        self.loss_metric.reset_state()
        t0 = time.perf_counter()
        for i in range(0, n, b):
            self.test_step(self.x_test[i: i + b], self.y_test[i: i + b])
        loss, acc = float(self.loss_metric.result()), float(self.acc_metric.result())
        return loss, acc, time.perf_counter() - t0, n

    # --- checkpoints: neutral weights + optimizer slots + step + the result so far -----------------
    def save_checkpoint(self, step: int, rec: Recorder) -> None:
        from .weights import to_neutral
        arrays = {f"w:{k}": v for k, v in to_neutral(self.model).items()}
        arrays.update({f"opt:{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(self.optimizer.variables)})
        # the dropout layers' seed-generator states: a resumed run draws the masks the uninterrupted one would
        arrays.update({f"rng:{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(self.model.non_trainable_variables)})
        save_checkpoint_files(Path(self.cfg.checkpoint_dir), step, arrays, rec)

    def restore_checkpoint(self, say=print) -> tuple[int, dict] | None:
        from .weights import from_neutral
        found = resume_from(self.cfg, ".npz", read_checkpoint, self.total, say, self.stream.data_id)
        if found is None:
            return None
        _, step, (arrays, meta) = found
        from_neutral(self.model, {k[2:]: v for k, v in arrays.items() if k.startswith("w:")})
        slots = [arrays[k] for k in sorted(k for k in arrays if k.startswith("opt:"))]
        if len(slots) != len(self.optimizer.variables):
            raise ValueError(f"checkpoint has {len(slots)} optimizer variables, optimizer has {len(self.optimizer.variables)}")
        for var, value in zip(self.optimizer.variables, slots):
            var.assign(value)
        rng = [arrays[k] for k in sorted(k for k in arrays if k.startswith("rng:"))]
        if rng and len(rng) != len(self.model.non_trainable_variables):  # none in checkpoints from before
            raise ValueError(f"checkpoint has {len(rng)} generator states, the model has "
                             f"{len(self.model.non_trainable_variables)}")
        for var, value in zip(self.model.non_trainable_variables, rng):
            var.assign(value)
        return step, meta

    def export_weights(self) -> dict:
        from .weights import to_neutral
        return to_neutral(self.model)

    def fit_chunk(self, indices: np.ndarray) -> np.ndarray:
        """k steps through a plain `model.fit` (the reference the custom loop is measured against):
        the same model, optimizer and batches, Keras's defaults (steps_per_execution=1), and no
        callback at a batch's end, since one turns off Keras's asynchronous dispatch (measured here: a fit
        reading each batch's loss ran the MLP at half speed). fit reports the mean loss of the call,
        so every step of the chunk gets that mean: fit runs' train_losses are chunk means.
        The batches come from a tf.data pipeline with tf.data's autotuning off (fit_data_options).
        A stop request (STOP) ends the call after the current step (model.stop_training, set at the
        start of a batch, which keeps the dispatch asynchronous); the optimizer's step count says how many
        steps it made."""
        tf, keras = self.tf, self.keras
        if not getattr(self, "_fit_compiled", False):
            self.model.compile(optimizer=self.optimizer, loss=self.loss_fn, jit_compile=False)
            self._fit_compiled = True

            class StopWhenAsked(keras.callbacks.Callback):
                def on_train_batch_begin(self, batch, logs=None):
                    if STOP.requested:
                        self.model.stop_training = True
            self._fit_callbacks = [StopWhenAsked()]
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(indices, tf.int64)).map(
            lambda i: (tf.gather(self.x_train, i), tf.gather(self.y_train, i))).prefetch(2)
        ds = ds.with_options(fit_data_options(tf))
        before = int(self.optimizer.iterations.numpy())
        history = self.model.fit(ds, epochs=1, steps_per_epoch=len(indices), verbose=0, shuffle=False,  # the stream's order
                                 callbacks=self._fit_callbacks)
        done = int(self.optimizer.iterations.numpy()) - before
        return np.full(done, history.history["loss"][-1], np.float64)


def fit_data_options(tf):
    """tf.data options for fit's pipeline: autotuning off. With it on (tf.data's default, whatever the prefetch
    size), the end of every fit call waited for tf.data's autotune thread: deleting the iterator blocked until that
    thread left its wait between optimisation rounds (TensorFlow 2.21; gdb: the main thread in
    RootDataset::Iterator's destructor, the autotune thread in Model::OptimizeLoop's wait). On 2 AMD EPYC cores the
    wait after a 470-step CNN call was 0.2 s in some runs and 12-37 s in others (3.7 s after 110 steps), all of it
    inside the timed chunk: one-epoch fit runs measured 1,357 samples/s (README, Performance). The pipeline is one
    gather per batch, with nothing to tune; prefetch(2) keeps the next batch ready."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def save_checkpoint_files(folder: Path, step: int, arrays: dict, rec: Recorder, keep: int = 2) -> None:
    """step-NNNNNNN.npz (arrays) + .json (result so far), written atomically; keeps the newest `keep`."""
    from data.contract import write_json_atomic
    tmp, final = checkpoint_paths(folder, step, ".npz")
    np.savez(tmp, **arrays)
    meta = {"step": step, **rec.state()}
    write_json_atomic(final.with_suffix(".json"), meta)
    commit_checkpoint(tmp, final, keep, companions=(".json",))  # the .npz appears last: it marks a complete checkpoint


def read_checkpoint(path: Path) -> tuple[int, dict | None, tuple]:
    """(step, signature, (arrays, meta)) of the checkpoint at `path` (the .npz and the .json beside it)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(path.with_suffix(".json").read_text())
    return meta["step"], meta.get("signature"), (arrays, meta)


@finished_runs_exit_cleanly
def run(cfg: RunConfig) -> int:
    """Train one model as configured; write the RunResult; return the exit code."""
    if cfg.devices > 1 and cfg.loop == "fit":
        raise ConfigError(f"--devices {cfg.devices} runs the custom loop under MirroredStrategy; drop --loop fit")
    data, stream, total, layers = prepare(cfg, BACKEND, say=lambda line: print(line, flush=True))
    r = Run(cfg, stream, total, layers)
    result = new_result(cfg, BACKEND)
    result.update(data_source=data.label if data.is_subset else data.source, dataset=data.label,
                  versions={**versions("keras"), "tensorflow": r.tf.__version__}, device=device_name(r.tf),
                  onednn=onednn_on(), params=arch.count_params(layers), flops_per_sample=arch.train_flops(layers),
                  forward_flops_per_sample=arch.forward_flops(layers), devices=r.strategy.num_replicas_in_sync if r.strategy else 1,
                  per_device_batch=cfg.batch_size // cfg.devices, dtypes=r.dtypes())
    writer = EventWriter(run_dir(cfg.tensorboard, cfg, BACKEND)) if cfg.tensorboard else None
    say = lambda s: print(f"tf | {s}", flush=True)  # noqa: E731
    rec = Recorder(cfg, result, total, log=say, writer=writer, data_id=stream.data_id)
    start = 0
    if cfg.resume and (restored := r.restore_checkpoint(say=say)) is not None:
        start, meta = restored
        rec.resume(start, meta)
    ckpt = (lambda step: r.save_checkpoint(step, rec)) if cfg.checkpoints else None
    bar = progress(cfg.progress, total, start)

    def body():
        run_chunks(cfg, rec, stream, r.fit_chunk if cfg.loop == "fit" else r.train_chunk, r.evaluate, ckpt, bar)

    try:
        code = execute(cfg, rec, body, out_of_memory=lambda e: isinstance(e, r.tf.errors.ResourceExhaustedError))
    finally:
        if bar is not None:
            bar.stop()
    if cfg.save_weights:
        neutral.save(cfg.save_weights, r.export_weights())
    if rec.result["final"]["test_accuracy"] is not None:
        print(done_line(rec.result), flush=True)
    return code
