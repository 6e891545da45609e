"""Lightning's own cost per optimizer step, measured inside one training_step: blocks of steps through
`manual_backward` and Lightning's optimizer wrapper (what torch_impl's training_step does) alternate,
round by round, with blocks through `loss.backward()` and the bare optimizer (what the raw loop does), on
the same module, optimizer (KerasAdam) and random data of MNIST's shape, batches gathered by index.

  tiny       a 4-element parameter and no data: the step does almost no arithmetic, so the difference
             is Lightning's Python work alone (its hooks and wrappers)
  mlp, cnn   the project's backbones at --batch-size: that work against a real step

Prints microseconds per step (medians over the rounds), their difference, and raw / Lightning: the
Lightning / raw samples/s ratio of benchmarks.overhead without the runs' start-up and per-block work.
The Trainer holds --callbacks callbacks (torch_impl's holds one or two) whose per-step hooks only count
their calls: each hook Lightning calls per step visits every callback, and the JSON records how many
visits a step of each form made.

    python -m benchmarks.lightning_step [--models tiny,mlp] [--rounds 9] [--steps 64] [--threads 2]
                                        [--batch-size 128] [--callbacks 1] [--json FILE]
"""
from __future__ import annotations

import time

from .common import MODEL_NAMES, add_json_flag, comma_list, median, nonnegative_int, own_threads, parser, positive_int

FORMS = ("lightning", "raw")
SAMPLES = 4096  # random images drawn once; batches are gathered from them


def build_parser():
    p = parser("lightning_step", __doc__)
    p.add_argument("--models", type=comma_list("model", ("tiny", *MODEL_NAMES)), default="tiny,mlp",
                   help=f"comma-separated, from tiny, {', '.join(MODEL_NAMES)}")
    p.add_argument("--rounds", type=positive_int, default=9, help="rounds; each times a block of each form, in turn")
    p.add_argument("--steps", type=positive_int, default=64, help="optimizer steps per block")
    p.add_argument("--threads", type=own_threads, default=2, help="torch intra-op threads")
    p.add_argument("--batch-size", type=positive_int, default=128, help="samples per step (mlp, cnn)")
    p.add_argument("--callbacks", type=nonnegative_int, default=1,
                   help="callbacks in the Trainer, each only counting its per-step hook calls")
    add_json_flag(p, "lightning_step", help="write the table's figures here")
    return p


def measure(args, model: str) -> tuple[dict, dict]:
    """From one Trainer.fit of one training_step: ({"lightning": [us per step, one per round], "raw": [...]},
    the same for the callbacks' hook calls per step)."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    from torch_impl.models import build_model
    from torch_impl.optim import KerasAdam

    class Counting(L.Callback):
        """Counts the per-step hooks Lightning calls; the calls cost what a no-op's do."""
        calls = 0

        def on_before_backward(self, trainer, pl_module, loss):
            Counting.calls += 1

        def on_after_backward(self, trainer, pl_module):
            Counting.calls += 1

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            Counting.calls += 1

    class Timed(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False  # as torch_impl's LitClassifier
            if model == "tiny":
                self.w = torch.nn.Parameter(torch.ones(4))
            else:
                self.net = build_model(model, (28, 28, 1), 10).to(memory_format=torch.channels_last)
            self.times = {form: [] for form in FORMS}
            self.hooks = {form: [] for form in FORMS}  # callback hook calls per step, per round

        def configure_optimizers(self):
            return KerasAdam(self.parameters(), lr=1e-3)

        def train_dataloader(self):
            return [0]  # one training_step, which times everything

        def training_step(self, batch, batch_idx):
            wrapped = self.optimizers()  # Lightning's LightningOptimizer around the KerasAdam
            bare = wrapped.optimizer
            gen = torch.Generator().manual_seed(0)
            if model != "tiny":
                images = torch.rand(SAMPLES, 1, 28, 28, generator=gen)
                images = images.to(self.device, memory_format=torch.channels_last)
                labels = torch.randint(0, 10, (SAMPLES,), generator=gen).to(self.device)

            def loss():
                if model == "tiny":
                    return (self.w * self.w).sum()
                idx = torch.randint(0, SAMPLES, (args.batch_size,), generator=gen).to(self.device)
                return F.cross_entropy(self.net(images[idx]), labels[idx])

            def lightning_step():
                value = loss()
                wrapped.zero_grad(set_to_none=True)
                self.manual_backward(value)  # on_before_backward / on_after_backward hooks around it
                wrapped.step()  # on_before_optimizer_step hooks, precision plugin, closure
                return value

            def raw_step():
                value = loss()
                bare.zero_grad(set_to_none=True)
                value.backward()
                bare.step()
                return value

            steps = {"lightning": lightning_step, "raw": raw_step}
            for fn in steps.values():  # warm-up: allocator, oneDNN primitive caches
                for _ in range(5):
                    fn()
            for _ in range(args.rounds):
                for form, fn in steps.items():
                    calls, t0 = Counting.calls, time.perf_counter()
                    for _ in range(args.steps):
                        value = fn()
                    value.item()  # a GPU's queue drained inside the interval
                    self.times[form].append((time.perf_counter() - t0) / args.steps * 1e6)
                    self.hooks[form].append((Counting.calls - calls) / args.steps)

    from torch_impl.train import quiet_lightning
    quiet_lightning()
    module = Timed()
    trainer = L.Trainer(accelerator="auto", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[Counting() for _ in range(args.callbacks)])
    trainer.fit(module)
    return module.times, module.hooks


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from .common import stamp, table, write_json
    results, hooks, difference, ratio, rows = {}, {}, {}, {}, []
    for model in args.models:
        times, calls = measure(args, model)
        results[model], hooks[model] = times, {form: median(c) for form, c in calls.items()}
        lit, raw = median(times["lightning"]), median(times["raw"])
        difference[model], ratio[model] = lit - raw, raw / lit
        per_round = [r / w for w, r in zip(times["lightning"], times["raw"])]
        rows.append([model, f"{lit:,.1f}", f"{raw:,.1f}", f"{lit - raw:,.1f}", f"{raw / lit:.3f}",
                     f"{min(per_round):.3f}-{max(per_round):.3f}",
                     f"{hooks[model]['lightning']:g} / {hooks[model]['raw']:g}"])
    when = stamp()
    print(f"batch {args.batch_size} (mlp, cnn), {args.threads} threads, {args.rounds} rounds of {args.steps} steps "
          f"per form, {args.callbacks} callback(s), torch {torch.__version__}; {when['machine']}; {when['date']}")
    print(table(rows, ["model", "Lightning us/step", "raw us/step", "difference us", "raw / Lightning",
                       "range (per round)", "callback hook calls/step"]))
    write_json(args.json, {**when, "config": vars(args), "torch": torch.__version__, "us_per_step": results,
                           "callback_hook_calls_per_step": hooks, "difference_us": difference,
                           "raw_over_lightning": ratio})


if __name__ == "__main__":
    main()
