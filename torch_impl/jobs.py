"""Batch jobs for the parity tests, the harness's parity line and the weight converter, in one
torch process, exchanging only .npz/JSON files. Mirrors tf_impl/jobs.py op for op.

    python -m torch_impl.jobs JOBS.json

Native files: `.ckpt` is a Lightning checkpoint of LitClassifier (state_dict keys "backbone.net.*");
`.pt` is the Backbone's plain state_dict. Both are read by `export` and written by `import`.
"""
from __future__ import annotations

import sys

import numpy as np

from data import arch, weights as neutral
from data.cli import run_jobs
from data.contract import RunConfig, write_json_atomic
from data.stream import batch_hash

from .train import configure


def _model(job):
    from .models import build_model
    return build_model(job["model"], tuple(job["input_shape"]), job["num_classes"], job.get("widths"), job.get("dropout", 0.0))


def _layers(job):
    return arch.build_layers(job["model"], tuple(job["input_shape"]), job["num_classes"], job.get("widths"),
                             job.get("dropout", 0.0))


def _loaded(job):
    from .weights import from_neutral
    model = _model(job)
    from_neutral(model, neutral.load(job["weights"], _layers(job)))
    return model


def _nchw(images):
    import torch
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def op_logits(job):
    import torch
    model = _loaded(job).eval()
    with torch.no_grad():
        logits = model(_nchw(np.load(job["inputs"])["images"]))
    np.savez(job["out"], logits=logits.numpy())


def op_saved_logits(job):
    """A .ckpt loaded as a Lightning user would, `LitClassifier.load_from_checkpoint(path)` and nothing
    else: its logits on the inputs, and the hyper-parameters it rebuilt itself from (JSON)."""
    import torch

    from .module import LitClassifier
    model = LitClassifier.load_from_checkpoint(job["src"], map_location="cpu").eval()
    with torch.no_grad():
        logits = model(_nchw(np.load(job["inputs"])["images"]))
    np.savez(job["out"], logits=logits.numpy())
    write_json_atomic(job["hparams"], dict(model.hparams))


def op_fit_plain(job):
    """A .ckpt's module trained on by a Trainer and DataLoader of a user's own (one (images, labels) batch
    per training_step, Lightning's defaults otherwise): the steps it made and how far the weights moved."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from .module import LitClassifier
    from .train import quiet_lightning
    quiet_lightning()
    model = LitClassifier.load_from_checkpoint(job["src"], map_location="cpu")
    before = [p.detach().clone() for p in model.parameters()]
    data = np.load(job["inputs"])
    loader = DataLoader(TensorDataset(_nchw(data["images"]), torch.from_numpy(data["labels"])), batch_size=4)
    trainer = L.Trainer(max_steps=job["steps"], accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader)
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before))
    write_json_atomic(job["out"], {"global_step": trainer.global_step, "moved": moved})


def op_dropout(job):
    """The model's first Dropout layer in training mode on ones (4096, 128): share of zeros, kept values.
    With "world": N > 1, also data parallel's draw (models.ReplicaDropout) on the device torch sees, a GPU's
    fused dropout kernel included: N replicas, each seeded alike (as DDP's ranks are) and given its 4096/N
    rows, against the one-device layer on all rows. Their largest difference is 0 when the replicas drop
    what one device drops."""
    import torch

    from .train import device_name
    model = _model(job).train()
    layer = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout))
    torch.manual_seed(job.get("seed", 0))
    out = layer(torch.ones(4096, 128)).numpy()
    result = {"zero_share": float((out == 0).mean()), "kept": sorted(set(out[out != 0].tolist()))}
    world = job.get("world", 1)
    if world > 1:
        x = torch.rand(4096, 128, device="cuda" if torch.cuda.is_available() else "cpu") + 0.5  # no zeros

        def draw(rank, n, rows):
            layer.rank, layer.world = rank, n
            torch.manual_seed(job.get("seed", 0))  # CPU and CUDA generators alike
            return layer(rows)
        whole = draw(0, 1, x)
        parts = torch.cat([draw(r, world, rows) for r, rows in enumerate(x.chunk(world))])
        result.update(device=device_name(torch), world=world, replica_max_abs_diff=float((parts - whole).abs().max()),
                      replica_zero_share=float((parts == 0).float().mean()))
    write_json_atomic(job["out"], result)


def op_export(job):
    """A Lightning .ckpt, a raw-loop checkpoint step-N.pt or a Backbone .pt state_dict -> neutral weights.
    Weights that do not fit the model asked for are one DataError line (load_state_dict's message is a
    list of every mismatched tensor)."""
    from data.errors import DataError

    from .weights import load_trusted, to_neutral
    state = load_trusted(job["src"])
    sd = state
    if isinstance(state, dict):  # Lightning keeps the weights under state_dict, the raw loop under model
        sd = state.get("state_dict") or (state["model"] if isinstance(state.get("model"), dict) else state)
    prefix = "backbone." if any(k.startswith("backbone.") for k in sd) else ""
    model = _model(job)
    try:
        model.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and
                               k[len(prefix):].startswith("net.")})
    except RuntimeError as e:
        what = " ".join(ln.strip() for ln in str(e).splitlines()[1:3])  # the first mismatch or missing keys
        raise DataError(f"{job['src']} does not hold a {job['model']} of input {tuple(job['input_shape'])} and "
                        f"{job['num_classes']} classes ({what}); check --model, --dataset and --widths") from None
    neutral.save(job["out"], to_neutral(model))


def op_import(job):
    """Neutral weights -> a Lightning checkpoint (.ckpt) or a plain state_dict (.pt)."""
    import lightning
    import torch
    model = _loaded(job)
    if str(job["out"]).lower().endswith(".ckpt"):  # convert reads extensions case-blind
        from .module import LitClassifier
        module = LitClassifier(**model.description, backbone=model)  # its state_dict and hparams, as training saves them
        state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                 "pytorch-lightning_version": lightning.__version__, "global_step": 0, "epoch": 0}
    else:
        state = model.state_dict()
    torch.save(state, job["out"])


def op_native_init(job):
    import torch

    from .weights import to_neutral
    torch.manual_seed(job.get("seed", 0))
    neutral.save(job["out"], to_neutral(_model(job)))


def op_roundtrip(job):
    from .weights import to_neutral
    neutral.save(job["out"], to_neutral(_loaded(job)))


def op_loss(job):
    import torch
    import torch.nn.functional as F
    f = np.load(job["inputs"])
    loss = F.cross_entropy(torch.from_numpy(f["logits"]), torch.from_numpy(f["labels"]).long())
    np.savez(job["out"], loss=loss.numpy())


def op_steps(job):
    """k optimizer steps with the training code's optimizer, schedule and loss; losses + final weights."""
    import torch
    import torch.nn.functional as F

    from .optim import make_optimizer
    from .weights import to_neutral
    cfg = RunConfig(**job["config"])
    dtype = job.get("dtype", "float32")  # float64 separates the algorithm from float32 rounding chaos
    model = _loaded(job).to(getattr(torch, dtype))
    f = np.load(job["batches"])
    images, labels = f["images"].astype(dtype), f["labels"]
    opt, sched = make_optimizer(cfg, model.parameters(), job.get("total_steps", len(labels)))
    losses = []
    for i in range(len(labels)):
        loss = F.cross_entropy(model(_nchw(images[i])), torch.from_numpy(labels[i]).long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
    out = {f"w:{k}": v for k, v in to_neutral(model).items()}
    if job.get("eval"):  # accuracy of the final model on a held-out set, in the same dtype
        e = np.load(job["eval"])
        model.eval()
        with torch.no_grad():
            preds = np.concatenate([model(_nchw(e["images"][i: i + 500].astype(dtype))).argmax(1).numpy()
                                    for i in range(0, len(e["labels"]), 500)])
        out["accuracy"] = np.array(np.mean(preds == e["labels"]))
    np.savez(job["out"], losses=np.array(losses), **out)


def op_batches(job):
    """Hashes of the first n batches as the Lightning datamodule's train loader yields them."""
    from data.loop import steps_per_block
    from data.sources import load
    from data.stream import make_stream

    from .datamodule import StreamDataModule
    cfg = RunConfig(**job["config"])
    data = load(cfg.dataset, cfg.data_dir, verify=cfg.verify)
    stream = make_stream(data, cfg.batch_size, cfg.seed, cfg.train_limit)
    start, n = job.get("start", 0), job["n"]
    dm = StreamDataModule(stream, start + n, steps_per_block=steps_per_block(cfg))  # blocks as a run cuts them
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.start = lambda: start
    hashes = []
    for block in loader:
        for images, labels in block:
            hashes.append(batch_hash(images.permute(0, 2, 3, 1).numpy(), labels.numpy()))  # back to NHWC to hash
    write_json_atomic(job["out"], {"hashes": hashes})


def op_lrs(job):
    """The learning rate the optimizer applies at each requested step (0-based update index)."""
    import warnings

    from .optim import make_optimizer
    cfg = RunConfig(**job["config"])
    opt, sched = make_optimizer(cfg, _model(job).parameters(), job["total_steps"])
    want, lrs = set(job["steps"]), {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the schedule without optimizer steps, on purpose
        for step in range(max(want) + 1):
            if step in want:
                lrs[step] = opt.param_groups[0]["lr"]
            sched.step()
    write_json_atomic(job["out"], {"lrs": [lrs[s] for s in job["steps"]]})


def op_peak(job):
    """fp32 (or bf16) matmul peak on the device torch sees (what utilisation is measured against)."""
    import torch

    from data.loop import time_peak

    from .train import device_name
    device = device_name(torch)
    n = job.get("n_gpu", 8192) if device != "cpu" else job.get("n_cpu", 1024)
    dtype = torch.bfloat16 if job.get("precision") == "bf16" else torch.float32
    where = "cuda" if device != "cpu" else "cpu"
    a = (torch.rand(n, n, device=where) * (2 / n)).to(dtype)  # rows sum to ~1: chained products stay ~0.5
    b = torch.rand(n, n, device=where, dtype=dtype)
    scratch = [torch.empty_like(b), torch.empty_like(b)]
    # tf_impl's probe, step for step: a chain of products x <- a @ x from b (~1 ms each on a GPU: 10 queued
    # per host sync, so launch and sync cost ~nothing), then one element read on the host (the sync)
    matmuls = job.get("matmuls", 10 if where == "cuda" else 1)

    def run():
        x = b
        for i in range(matmuls):
            x = torch.mm(a, x, out=scratch[i % 2])
        float(x[0, 0])
    result = time_peak(run, n, device, job.get("precision", "32"), job.get("budget_s", 1.5), matmuls)
    write_json_atomic(job["out"], {"backend": "torch", **result, "matmuls_per_sync": matmuls})


def op_params(job):
    from .models import count_params
    write_json_atomic(job["out"], {"params": count_params(_model(job))})


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def main(argv) -> int:
    return run_jobs(argv, OPS, configure)


if __name__ == "__main__":
    from data.cli import run_cli
    sys.exit(run_cli(main, prog="python -m torch_impl.jobs"))
