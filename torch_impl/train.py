"""Training for the Lightning port: Trainer setup, the callback that measures exactly what
tf_impl measures (data.loop.Recorder), checkpoints, and the raw PyTorch loop as reference.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from data import arch, weights as neutral
from data.contract import ConfigError, RunConfig, check_budget, new_result, versions
from data.loop import Recorder, boundaries, execute, install_signal_handlers, progress, run_chunks
from data.sources import load
from data.stream import make_stream

BACKEND = "torch"


def configure(cfg: RunConfig):
    """Threads and determinism, before torch does any parallel work."""
    import torch
    n = cfg.resolved_threads()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(min(2, n))
    except RuntimeError:  # already set in this process (tests); harmless
        pass
    if cfg.deterministic:
        torch.manual_seed(cfg.seed)
        torch.use_deterministic_algorithms(True)
    return torch


def device_name(torch) -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


class Run:
    """Model, optimizer, tensors; the raw loop's steps and the shared evaluation."""

    def __init__(self, cfg: RunConfig, stream, total_steps: int, layers: list):
        torch = self.torch = configure(cfg)
        from .datamodule import to_tensors
        from .models import build_model
        from .optim import make_optimizer
        from .weights import from_neutral
        self.cfg, self.stream, self.total = cfg, stream, total_steps
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build_model(cfg.model, stream.train_images.shape[1:], layers[-1].units, cfg.widths)
        if cfg.init == "shared":
            init = neutral.load(cfg.init_file, layers) if cfg.init_file else neutral.initial_weights(layers, cfg.seed)
            from_neutral(self.model, init)
        self.model.to(self.device)
        self.optimizer, self.scheduler = make_optimizer(cfg, self.model.parameters(), total_steps)
        self.x_train, self.y_train, self.x_test, self.y_test = to_tensors(stream, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def train_chunk(self, indices: np.ndarray) -> np.ndarray:
        """The raw loop: k optimizer steps, losses kept on the device and read once at the end."""
        torch, F = self.torch, self.torch.nn.functional
        model, opt, sched = self.model, self.optimizer, self.scheduler
        model.train()
        losses = []
        for idx in torch.from_numpy(indices).to(self.device):
            images, labels = self.x_train[idx], self.y_train[idx]  # (B, C, H, W), (B,)
            with self.autocast:
                logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
        return torch.stack(losses).float().cpu().numpy()  # the host sync that ends the timed interval

    def evaluate(self):
        torch, F = self.torch, self.torch.nn.functional
        self.model.eval()
        n, b = len(self.y_test), self.cfg.eval_batch_size
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
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

    # --- raw-loop checkpoints -----------------------------------------------------------------
    def save_checkpoint(self, step: int, rec: Recorder) -> None:
        torch = self.torch
        d = Path(self.cfg.checkpoint_dir)
        d.mkdir(parents=True, exist_ok=True)
        state = {"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "klc_result": result_state(rec)}
        tmp = d / f".step-{step:07d}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, d / f"step-{step:07d}.pt")
        for old in sorted(d.glob("step-*.pt"))[:-2]:
            old.unlink(missing_ok=True)

    def restore_checkpoint(self):
        found = sorted(Path(self.cfg.checkpoint_dir).glob("step-*.pt")) if Path(self.cfg.checkpoint_dir).is_dir() else []
        if not found:
            return None
        state = self.torch.load(found[-1], weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state["step"], state["klc_result"]


def result_state(rec: Recorder) -> dict:
    return {"train_losses": list(rec.result["train_losses"]), "curve": list(rec.result["curve"]),
            "train_seconds": rec.train_seconds}


def lightning_fit(r: Run, rec: Recorder) -> None:
    """Train with the Lightning Trainer; RecorderCallback measures what run_chunks measures."""
    import lightning as L

    from .datamodule import StreamDataModule
    from .module import LitClassifier
    cfg, torch = r.cfg, r.torch
    module = LitClassifier(r.model, cfg, r.total, r.model.spec[-1].units)
    module.result_state = lambda: result_state(rec)
    dm = StreamDataModule(r.stream, r.total, cfg.eval_batch_size)
    marks = set(boundaries(rec.step, rec.total, cfg, rec.warmup))

    class RecorderCallback(L.Callback):
        t0 = None
        losses: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.t0 is None:
                self.t0, self.losses = time.perf_counter(), []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(outputs["loss"].detach())
            if trainer.global_step in marks:
                losses = torch.stack(self.losses).float().cpu().numpy()  # host sync ends the interval
                rec.add_steps(losses, time.perf_counter() - self.t0)
                self.t0 = None
                if bar is not None:
                    bar.update(bar.task_ids[0], completed=rec.step)

        def on_validation_epoch_start(self, trainer, pl_module):
            self.tv = time.perf_counter()

        def on_validation_epoch_end(self, trainer, pl_module):
            loss, acc = float(pl_module.test_loss.compute()), float(pl_module.test_acc.compute())
            rec.add_eval(loss, acc, time.perf_counter() - self.tv, len(r.stream.test_labels))

    class StepCheckpoint(L.Callback):
        """Lightning checkpoint every K steps, written after that step's evaluation when there is one
        (as ModelCheckpoint does on validation end), so the saved curve includes it."""

        def _save(self, trainer):
            Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(Path(cfg.checkpoint_dir) / f"step-{trainer.global_step:07d}.ckpt")
            for old in sorted(Path(cfg.checkpoint_dir).glob("step-*.ckpt"))[:-2]:
                old.unlink(missing_ok=True)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step % cfg.checkpoint_every == 0 and not (cfg.eval_every and step % cfg.eval_every == 0):
                self._save(trainer)

        def on_validation_end(self, trainer, pl_module):
            if trainer.state.fn == "fit" and trainer.global_step % cfg.checkpoint_every == 0:
                self._save(trainer)

    callbacks = [RecorderCallback()]
    if cfg.checkpoint_dir and cfg.checkpoint_every:
        callbacks.append(StepCheckpoint())
    bar = progress(cfg.progress, rec.total, rec.step)
    trainer = L.Trainer(
        accelerator="auto", devices=cfg.devices, precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        max_steps=rec.total, max_epochs=-1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
        val_check_interval=cfg.eval_every or None, check_val_every_n_epoch=None,
        limit_val_batches=1.0 if cfg.eval_every else 0, deterministic=cfg.deterministic or None,
        callbacks=callbacks, default_root_dir=cfg.checkpoint_dir or None)
    ckpt_path = None
    if cfg.resume:
        found = sorted(Path(cfg.checkpoint_dir).glob("step-*.ckpt")) if Path(cfg.checkpoint_dir).is_dir() else []
        if found:
            ckpt_path = str(found[-1])
            state = torch.load(ckpt_path, weights_only=False, map_location="cpu")
            restore_result(rec, state.get("klc_result"), state["global_step"])
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its own shutdown
        raise KeyboardInterrupt from None
    finally:
        if bar is not None:
            bar.stop()
    if trainer.interrupted:
        raise KeyboardInterrupt
    if not rec.result["curve"] or rec.result["curve"][-1]["step"] != rec.step:
        trainer.limit_val_batches = 1.0
        trainer.validate(module, datamodule=dm, verbose=False)


def restore_result(rec: Recorder, state: dict | None, step: int) -> None:
    if state:
        rec.result["train_losses"], rec.result["curve"] = state["train_losses"], state["curve"]
        rec.train_seconds = state["train_seconds"]
    rec.start = rec.step = step
    print(f"torch | resumed from step {step}", flush=True)


def run(cfg: RunConfig) -> int:
    data = load(cfg.dataset, cfg.data_dir, verify=cfg.verify)
    try:
        stream = make_stream(data, cfg.batch_size, cfg.seed, cfg.train_limit, cfg.val_fraction)
    except ValueError as e:  # batch larger than the (limited) training set, bad split
        raise ConfigError(str(e)) from None
    total = check_budget(cfg, len(stream.train_labels), stream.steps_per_epoch)
    layers = arch.build_layers(cfg.model, data.spec.shape, data.spec.num_classes, cfg.widths)
    install_signal_handlers()
    print(f"torch | {data.label} from {data.source} | {cfg.model} | {total} steps of {cfg.batch_size} | "
          f"{cfg.optimizer} lr {cfg.lr:g} | init {cfg.init} | loop {cfg.loop}", flush=True)
    r = Run(cfg, stream, total, layers)
    result = new_result(cfg, BACKEND)
    result.update(data_source=data.label if data.is_subset else data.source, dataset=data.label,
                  versions=versions("torch", "lightning", "torchmetrics"), device=device_name(r.torch),
                  params=arch.count_params(layers), flops_per_sample=arch.train_flops(layers),
                  forward_flops_per_sample=arch.forward_flops(layers))
    rec = Recorder(cfg, result, total, 0, log=lambda s: print(f"torch | {s}", flush=True))
    ckpt = None
    if cfg.loop == "raw":
        if cfg.resume and (restored := r.restore_checkpoint()) is not None:
            restore_result(rec, restored[1], restored[0])
            rec.warmup = min(rec.warmup, total - rec.step)
        if cfg.checkpoint_dir and cfg.checkpoint_every:
            ckpt = lambda step: r.save_checkpoint(step, rec)  # noqa: E731
    bar = progress(cfg.progress, total, rec.step) if cfg.loop == "raw" else None

    def body():
        if cfg.loop == "raw":
            run_chunks(cfg, rec, stream, r.train_chunk, r.evaluate, ckpt, bar)
        else:
            lightning_fit(r, rec)

    try:
        code = execute(cfg, rec, body)
    finally:
        if bar is not None:
            bar.stop()
    if cfg.save_weights:
        neutral.save(cfg.save_weights, r.export_weights())
    f = rec.result["final"]
    if f["test_accuracy"] is not None:
        print(f"torch | done: {f['steps']} steps, test_acc {f['test_accuracy']:.4f}, "
              f"{rec.result['throughput']['train_samples_per_s'] or 0:,.0f} train samples/s, "
              f"{rec.result['throughput']['infer_samples_per_s'] or 0:,.0f} infer samples/s", flush=True)
    return code
