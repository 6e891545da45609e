"""Training for the Lightning port: Trainer setup, the callback that measures exactly what
tf_impl measures (data.loop.Recorder), checkpoints, and the raw PyTorch loop as reference.

Blocks: each Lightning training_step makes k optimizer steps (data.loop.steps_per_block: at most
--steps-per-call and a quarter of the run, a divisor of the evaluation and checkpoint intervals),
so Trainer's per-batch work is paid once per k steps; val_check_interval is counted in blocks,
trainer.global_step in optimizer steps, and the warm-up excluded from the throughput is whole
blocks (Recorder's block; the tf and raw loops use the same warm-up, so the runs compare like for like).

--devices N (N > 1): Lightning DDP (gloo on CPU, NCCL on GPUs). Lightning re-launches this command
once per extra rank; every rank cuts each step's global batch of stream indices into N equal
slices and trains on slice `rank` (the mean over B/N samples; DDP averages the gradients, so a step
computes what the one-device step computes). Per-step losses are averaged across ranks before they
are recorded; evaluation batches are dealt round-robin to the ranks and the metrics synced. Only
rank 0 prints, writes the JSON, the TensorBoard events, the weights and deletes old checkpoints.

--precision bf16: autocast (Lightning "bf16-mixed") with the last Linear layer kept in float32, as
Keras's mixed policy keeps it; logits and loss are float32.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from data import arch, weights as neutral
from data.contract import ConfigError, RunConfig, check_memory, host_memory, new_result, versions
from data.loop import (STOP, Recorder, boundaries, checkpoint_paths, commit_checkpoint, done_line, execute,
                       Stopped, finished_runs_exit_cleanly, on_eval_grid, prepare, process_rank, progress, resume_from,
                       run_chunks, stop_here)
from data.tensorboard import EventWriter, run_dir

BACKEND = "torch"


def configure(cfg: RunConfig):
    """Threads and determinism, before torch does any parallel work."""
    import torch
    if torch.cuda.is_available() and cfg.devices > torch.cuda.device_count():  # Lightning refused it in a traceback
        raise ConfigError(f"--devices {cfg.devices}: only {torch.cuda.device_count()} GPU(s) visible to torch")
    if torch.cuda.is_available():  # the memory floor against the device it trains on (the parser checked only
        gpu = torch.cuda.get_device_properties(0)  # the weights where a GPU is visible, even to a CPU build)
        check_memory(cfg, gpu.total_memory, f"GPU 0 ({gpu.name})", devices=cfg.devices)
    else:
        check_memory(cfg, host_memory())
    n = cfg.resolved_threads()
    if cfg.devices > 1 and not torch.cuda.is_available():
        n = max(1, n // cfg.devices)  # DDP on CPU: the ranks share the cores
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(min(2, n))
    except RuntimeError:  # already set in this process (tests); harmless
        pass
    torch.manual_seed(cfg.seed)  # --seed seeds everything (native init, dropout masks) in every run
    if cfg.precision == "32":  # fp32 means IEEE fp32 on GPUs too (cuDNN convolutions default to TF32), as in tf_impl
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if cfg.deterministic:
        # cuBLAS reads this at its first call, before Lightning would set it (the raw loop never does): without
        # it, deterministic algorithms refuse every CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return torch


def quiet_lightning() -> None:
    """Lightning's info lines ("GPU available: ...", the litlogger tip, "`Trainer.fit` stopped") say
    nothing the run's own header and done line do not (the device is in the done line), and torch
    2.13 warns about a class Lightning 2.6 uses internally (not the user's to fix). Warnings stay."""
    import logging
    import warnings
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def device_name(torch) -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def onednn_on(torch, device) -> bool | None:
    """Whether torch's CPU convolutions run on oneDNN (torch.backends.mkldnn, on wherever it is built in);
    None on a GPU."""
    if device.type != "cpu":
        return None
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def keep_head_float32(model, torch) -> None:
    """Run the last Linear layer in float32 outside autocast (Keras's mixed policy does the same for
    the last layer). Done per instance, so the state_dict and its names do not change."""
    head = [m for m in model.net.children() if isinstance(m, torch.nn.Linear)][-1]
    forward = head.forward

    def float32_forward(x):
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float())  # (B, F) bf16 -> float32 -> (B, classes) float32 logits

    head.forward = float32_forward


class Run:
    """Model, optimizer, tensors; the raw loop's steps and the shared evaluation."""

    def __init__(self, cfg: RunConfig, stream, total_steps: int, layers: list):
        torch = self.torch = configure(cfg)
        from .datamodule import to_tensors
        from .models import build_model
        from .optim import make_optimizer
        from .weights import from_neutral
        self.cfg, self.stream, self.total = cfg, stream, total_steps
        local_rank = int(os.environ.get("LOCAL_RANK") or 0) if cfg.devices > 1 else 0
        self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        self.model = build_model(cfg.model, stream.train_images.shape[1:], layers[-1].units, cfg.widths, cfg.dropout)
        if cfg.precision == "bf16":
            keep_head_float32(self.model, torch)
        if cfg.init == "shared":
            init = neutral.load(cfg.init_file, layers) if cfg.init_file else neutral.initial_weights(layers, cfg.seed)
            from_neutral(self.model, init)
        self.model.to(self.device)
        self.optimizer, self.scheduler = make_optimizer(cfg, self.model.parameters(), total_steps)
        # channels_last: oneDNN's preferred layout, and the stream's NHWC arrays already are channels_last
        # NCHW views (no copy). Measured here: CNN training 4,274 -> 6,760 samples/s, inference 8k -> 20k.
        self.model.to(memory_format=torch.channels_last)
        self.x_train, self.y_train, self.x_test, self.y_test = to_tensors(stream, self.device, channels_last=True)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def train_chunk(self, indices: np.ndarray) -> np.ndarray:
        """The raw loop: k optimizer steps, losses kept on the device and read once at the end; a stop
        request (STOP) ends the chunk after the current step."""
        torch, F = self.torch, self.torch.nn.functional
        model, opt, sched = self.model, self.optimizer, self.scheduler
        model.train()
        losses = []
        for idx in torch.from_numpy(indices).to(self.device):
            if STOP.requested:
                break
            images, labels = self.x_train[idx], self.y_train[idx]  # (B, C, H, W), (B,)
            with self.autocast:
                logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
        if not losses:
            return np.zeros(0)
        return torch.stack(losses).float().cpu().numpy()  # the host sync that ends the timed interval

    def evaluate(self):
        torch, F = self.torch, self.torch.nn.functional
        self.model.eval()
        n, b = len(self.y_test), self.cfg.eval_batch_size
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        if not getattr(self, "_eval_warm", False):  # oneDNN primitive set-up outside the timed pass
            with torch.no_grad(), self.autocast:
                self.model(self.x_test[:b])
            self._eval_warm = True
        t0 = time.perf_counter()
        with torch.no_grad(), self.autocast:
            for i in range(0, n, b):
                logits = self.model(self.x_test[i: i + b]).float()
                loss_sum += F.cross_entropy(logits, self.y_test[i: i + b], reduction="sum").double()
                correct += (logits.argmax(1) == self.y_test[i: i + b]).sum()
        loss, acc = float(loss_sum) / n, int(correct) / n
        return loss, acc, time.perf_counter() - t0, n

    def export_weights(self) -> dict:
        from .weights import to_neutral
        return to_neutral(self.model)

    def dtypes(self) -> dict:
        """What the precision setting does, read off real tensors: first layer's output, logits, loss."""
        torch, F = self.torch, self.torch.nn.functional
        first = next(m for m in self.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
        seen = {}

        def note(module, inputs, output):  # a forward hook; returns None so the output is unchanged
            seen["compute"] = output.dtype

        hook = first.register_forward_hook(note)
        try:
            with torch.no_grad(), self.autocast:
                logits = self.model(self.x_train[:2])
                loss = F.cross_entropy(logits.float(), self.y_train[:2])
        finally:
            hook.remove()
        name = lambda dt: str(dt).replace("torch.", "")  # noqa: E731
        return {"variables": name(first.weight.dtype), "compute": name(seen["compute"]), "logits": name(logits.dtype),
                "loss": name(loss.dtype)}

    # --- raw-loop checkpoints -----------------------------------------------------------------
    def save_checkpoint(self, step: int, rec: Recorder) -> None:
        from .models import rng_state
        torch = self.torch
        state = {"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "klc_result": rec.state(), "klc_rng": rng_state()}
        tmp, final = checkpoint_paths(self.cfg.checkpoint_dir, step, ".pt")
        torch.save(state, tmp)
        commit_checkpoint(tmp, final)

    def restore_checkpoint(self, say=print):
        from .models import set_rng_state
        # read to the CPU: a GPU's checkpoint resumes on a machine without one (load_state_dict moves each tensor
        # to its parameter's device)
        found = newest_checkpoint(self.cfg, ".pt", self.total, say=say, data_id=self.stream.data_id)
        if found is None:
            return None
        state = found[1]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state.get("klc_rng"))
        return state["step"], state["klc_result"]


def newest_checkpoint(cfg: RunConfig, suffix: str, total: int, map_location="cpu", say=print,
                      data_id: str | None = None) -> tuple | None:
    """(path, state) of the checkpoint --resume continues (data.loop.resume_from: the newest readable
    step-*<suffix> in --checkpoint-dir that belongs to this run; .pt: the raw loop, .ckpt: Lightning), read
    weights-only; None when there is none yet."""
    from .weights import load_trusted

    def read(path):
        state = load_trusted(path, map_location=map_location)
        step = state["step"] if suffix == ".pt" else state["global_step"]
        return step, (state.get("klc_result") or {}).get("signature"), state
    found = resume_from(cfg, suffix, read, total, say, data_id)
    return None if found is None else (found[0], found[2])


def lightning_fit(r: Run, rec: Recorder) -> None:
    """Train with the Lightning Trainer; RecorderCallback measures what run_chunks measures."""
    import lightning as L

    quiet_lightning()
    from .datamodule import StreamDataModule
    from .module import LitClassifier
    cfg, torch = r.cfg, r.torch
    module = LitClassifier(**r.model.description, config=cfg.to_dict(), total_steps=r.total, backbone=r.model)
    module.result_state = rec.state
    k = rec.block  # steps_per_block(cfg, total), decided by the Recorder: its warm-up is whole blocks
    dm = (StreamDataModule if cfg.devices == 1 else sharded_datamodule())(r.stream, r.total, cfg.eval_batch_size,
                                                                          steps_per_block=k)
    dm.tensors = (r.x_train, r.y_train, r.x_test, r.y_test)  # Run's tensors, already on this rank's device
    ckpt_path = None
    found = newest_checkpoint(cfg, ".ckpt", r.total, say=rec.log, data_id=r.stream.data_id) if cfg.resume else None
    if found is not None:
        ckpt_path, state = str(found[0]), found[1]
        rec.resume(state["global_step"], state.get("klc_result"))
    marks = set(boundaries(rec.step, rec.total, cfg, rec.warmup))  # where the callback hands steps to the Recorder

    class RecorderCallback(L.Callback):
        t0 = None
        losses: list = []
        warm = False  # one untimed evaluation forward done
        stopping = False  # a stop request (STOP) seen at a block end: the run ends after this block

        def on_train_start(self, trainer, pl_module):
            STOP.reclaim_sigterm()  # Trainer.fit installed its own; Lightning restores ours when fit ends

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rec.result["per_device_batch"] = batch.batch_size  # what this rank trains on: batch_size / devices
            if self.t0 is None:
                self.t0, self.losses = time.perf_counter(), []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(outputs["loss"])  # (k,) this block's losses, detached
            # read once per block: StepCheckpoint, which runs next, must see the decision that recorded the steps
            self.stopping = trainer.global_step < rec.total and self._stop_requested(trainer)
            if self.stopping:
                trainer.should_stop = True
                if not on_eval_grid(cfg, trainer.global_step):  # Lightning validates when asked to stop; the others do not
                    trainer.limit_val_batches = 0
            if trainer.global_step in marks or self.stopping:
                losses = torch.cat(self.losses).float()
                if trainer.world_size > 1:  # each rank's loss is its share's mean: the global mean is their mean
                    losses = trainer.strategy.reduce(losses, reduce_op="mean")
                losses = losses.cpu().numpy()  # host sync ends the interval
                rec.add_steps(losses, time.perf_counter() - self.t0)
                self.t0 = None
                if bar is not None:
                    bar.update(bar.task_ids[0], completed=rec.step)

        @staticmethod
        def _stop_requested(trainer) -> bool:
            """STOP.requested, agreed by every rank in DDP: a Ctrl-C reaches the ranks at different steps, and a
            SIGTERM may reach rank 0 alone; all must stop after the same step. DDP's blocks are one step, and
            an all-reduce per step cost a fifth of an MLP's samples/s on 2 CPU cores, so the ranks agree
            every --steps-per-call steps."""
            if trainer.world_size == 1:
                return STOP.requested
            if trainer.global_step % cfg.steps_per_call:
                return False
            return trainer.strategy.reduce_boolean_decision(STOP.requested, all=False)

        def on_validation_start(self, trainer, pl_module):
            STOP.reclaim_sigterm()  # and so does Trainer.validate, the evaluation of a last step off the grid

        def on_validation_epoch_start(self, trainer, pl_module):
            if not self.warm:  # as Run.evaluate: kernel set-up outside the timed pass
                with trainer.precision_plugin.val_step_context():
                    pl_module(r.x_test[:cfg.eval_batch_size])
                self.warm = True
            self.tv = time.perf_counter()

        def on_validation_epoch_end(self, trainer, pl_module):
            loss, acc = float(pl_module.test_loss.compute()), float(pl_module.test_acc.compute())
            rec.add_eval(loss, acc, time.perf_counter() - self.tv, len(r.stream.test_labels))

    class StepCheckpoint(L.Callback):
        """Lightning checkpoint every K steps, written after that step's evaluation when there is one
        (as ModelCheckpoint does on validation end), so the saved curve includes it; and where a stop
        request ends the run (the Recorder's block end)."""

        saved_at = None

        def _save(self, trainer):
            tmp, final = checkpoint_paths(cfg.checkpoint_dir, trainer.global_step, ".ckpt")
            trainer.save_checkpoint(tmp)  # every rank calls it, rank 0 writes (Lightning's writes are not atomic)
            if trainer.is_global_zero:
                commit_checkpoint(tmp, final)
            self.saved_at = trainer.global_step

        def _due(self, step) -> bool:
            return step % cfg.checkpoint_every == 0 or (recorder.stopping and step != rec.start)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if self._due(step) and not on_eval_grid(cfg, step):  # else saved after that validation
                self._save(trainer)

        def on_validation_end(self, trainer, pl_module):
            if trainer.state.fn == "fit" and self._due(trainer.global_step):
                self._save(trainer)

    recorder, checkpointer = RecorderCallback(), StepCheckpoint()
    callbacks = [recorder] + ([checkpointer] if cfg.checkpoints else [])
    bar = progress(cfg.progress, rec.total, rec.step)
    strategy = "auto"
    if cfg.devices > 1:
        from lightning.pytorch.strategies import DDPStrategy
        strategy = DDPStrategy(process_group_backend="nccl" if torch.cuda.is_available() else "gloo")
    trainer = L.Trainer(
        accelerator="auto", devices=cfg.devices, strategy=strategy, precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        max_steps=rec.total, max_epochs=-1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
        val_check_interval=cfg.eval_every // k or None, check_val_every_n_epoch=None,  # counted in training_steps (blocks of k steps) over the whole run
        limit_val_batches=1.0 if cfg.eval_every else 0, deterministic=cfg.deterministic or None,
        callbacks=callbacks, default_root_dir=cfg.checkpoint_dir or None)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its own shutdown
        raise KeyboardInterrupt from None
    finally:
        if bar is not None:
            bar.stop()
    if trainer.interrupted:
        raise KeyboardInterrupt
    if rec.step < rec.total:
        if not recorder.stopping:  # not STOP.requested: a DDP rank stops when another one was asked to
            raise RuntimeError(f"Lightning's Trainer ended at step {rec.step} of {rec.total} without being asked to")
        raise stop_here(rec, saved=rec.step)  # stopped on request: StepCheckpoint wrote the checkpoint, if any
    if not rec.result["curve"] or rec.result["curve"][-1]["step"] != rec.step:
        trainer.limit_val_batches = 1.0
        try:
            trainer.validate(module, datamodule=dm, verbose=False)
        except SystemExit:  # a signal before on_validation_start took SIGTERM back: Lightning's SIGTERMException
            raise KeyboardInterrupt from None
        if checkpointer.saved_at == rec.step and trainer.is_global_zero:
            # that step's checkpoint was written before this evaluation: a --resume with a larger --steps lost it
            # from the curve (the other loops evaluate first, then checkpoint)
            add_result_to_checkpoint(cfg, rec)


def add_result_to_checkpoint(cfg: RunConfig, rec: Recorder) -> None:
    """Rewrite the Lightning checkpoint at the Recorder's step with the result as it now stands."""
    import torch
    from .weights import load_trusted
    tmp, final = checkpoint_paths(cfg.checkpoint_dir, rec.step, ".ckpt")
    state = load_trusted(final, map_location="cpu")
    state["klc_result"] = rec.state()
    torch.save(state, tmp)
    commit_checkpoint(tmp, final)


def sharded_datamodule():
    """StreamDataModule for DDP: rank r trains on slice r of each global batch and evaluates every
    N-th test batch (the metrics are synced across ranks when computed)."""
    from .datamodule import StepBatches, StreamDataModule, TestBatches

    class RankShare:
        """The stream as one rank sees it: step_indices cut to the rank's share of each batch."""

        def __init__(self, stream, rank: int, world: int):
            share = stream.batch_size // world
            self.stream, self.lo, self.hi = stream, rank * share, (rank + 1) * share

        def step_indices(self, start: int, stop: int):
            return self.stream.step_indices(start, stop)[:, self.lo: self.hi]  # (k, B) -> (k, B/N)

    class RankTestBatches(TestBatches):
        def __init__(self, x, y, batch_size: int, rank: int, world: int):
            super().__init__(x, y, batch_size)
            self.rank, self.world = rank, world

        def __len__(self):
            return len(range(self.rank, super().__len__(), self.world))

        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if i % self.world == self.rank:
                    yield batch

    class ShardedDataModule(StreamDataModule):
        def train_dataloader(self):
            x, y, _, _ = self.tensors
            trainer = self.trainer
            share = RankShare(self.stream, trainer.global_rank, trainer.world_size)
            return StepBatches(share, x, y, self.total, start=lambda: trainer.global_step, k=1)

        def val_dataloader(self):
            _, _, x, y = self.tensors
            return RankTestBatches(x, y, self.eval_batch_size, self.trainer.global_rank, self.trainer.world_size)

    return ShardedDataModule


def out_of_memory(torch, e: BaseException) -> bool:
    """torch's allocation failures: CUDA's OutOfMemoryError, and the CPU allocator's RuntimeError."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def say_flushed(text: str) -> None:
    print(text, flush=True)


@finished_runs_exit_cleanly
def run(cfg: RunConfig) -> int:
    if cfg.devices > 1 and cfg.loop == "raw":
        raise ConfigError(f"--devices {cfg.devices} runs Lightning DDP; the raw loop is the one-device reference, "
                          f"drop --loop raw")
    rank = process_rank() if cfg.devices > 1 else 0
    if rank:  # a DDP rank Lightning launched: trains in step, writes and prints nothing
        cfg = replace(cfg, json=None, save_weights=None, tensorboard=None, progress=False)
    say = say_flushed if rank == 0 else (lambda s: None)
    data, stream, total, layers = prepare(cfg, BACKEND, say=say)
    r = Run(cfg, stream, total, layers)
    result = new_result(cfg, BACKEND)
    result.update(data_source=data.label if data.is_subset else data.source, dataset=data.label,
                  versions=versions("torch", "lightning", "torchmetrics"), device=device_name(r.torch),
                  onednn=onednn_on(r.torch, r.device),
                  params=arch.count_params(layers), flops_per_sample=arch.train_flops(layers),
                  forward_flops_per_sample=arch.forward_flops(layers), devices=cfg.devices, per_device_batch=cfg.batch_size // cfg.devices, dtypes=r.dtypes(),
                  threads=r.torch.get_num_threads())  # each process's: DDP ranks on a CPU share the cores
    writer = EventWriter(run_dir(cfg.tensorboard, cfg, BACKEND)) if cfg.tensorboard else None
    tagged = lambda s: say(f"torch | {s}")  # noqa: E731
    rec = Recorder(cfg, result, total, log=tagged, writer=writer, data_id=stream.data_id)
    ckpt = None
    if cfg.loop == "raw":
        if cfg.resume and (restored := r.restore_checkpoint(say=tagged)) is not None:
            rec.resume(restored[0], restored[1])
        if cfg.checkpoints:
            ckpt = lambda step: r.save_checkpoint(step, rec)  # noqa: E731
    bar = progress(cfg.progress, total, rec.step) if cfg.loop == "raw" else None
    stopped = []  # the run stopped where a Ctrl-C or SIGTERM asked (in DDP: where all ranks agreed to)

    def body():
        try:
            if cfg.loop == "raw":
                run_chunks(cfg, rec, stream, r.train_chunk, r.evaluate, ckpt, bar)
            else:
                lightning_fit(r, rec)
        except Stopped:
            stopped.append(True)
            raise

    try:
        code = execute(cfg, rec, body, quiet=rank != 0, out_of_memory=lambda e: out_of_memory(r.torch, e))
    finally:
        if bar is not None:
            bar.stop()
    if cfg.save_weights:
        neutral.save(cfg.save_weights, r.export_weights())
    if rec.result["final"]["test_accuracy"] is not None and rank == 0:
        print(done_line(rec.result), flush=True)
    # A rank > 0 that stopped or diverged did so where every rank did (stops are agreed, losses reduced): it exits
    # 0, since any rank's non-zero exit makes Lightning's process observer SIGKILL rank 0, perhaps before rank 0
    # has written the result and the checkpoint. A rank that failed alone still exits non-zero (no hang).
    if rank and (stopped or rec.result["status"] == "diverged"):
        return 0
    return code
