"""The LightningModule: organises training of a plain Backbone (no architecture in here).

training_step is Keras's train_step, written out with manual optimization because it takes a
block of k batches and makes k optimizer steps (Keras's steps_per_execution; the datamodule decides
k): Lightning's per-batch machinery then runs once per k steps. k = 1 is the textbook step.
Validation runs on the evaluation split with torchmetrics accuracy and mean loss;
configure_optimizers gives Keras-semantics Adam or SGD and a schedule that training_step steps once
per optimizer step (its checkpoint state travels with the optimizer's).

Every .ckpt this project writes (training checkpoints, `compare convert --to x.ckpt`) holds the
module's hyper-parameters, so Lightning's own loader rebuilds it with no arguments:

    model = LitClassifier.load_from_checkpoint("x.ckpt").eval()
    logits = model(images)  # (B, C, H, W) float32 in [0, 1] (data.stream.normalize), as trained

and trains on with a Trainer and DataLoader of one's own (training_step also takes a plain
(images, labels) batch; the optimizer is the checkpoint's run's, the defaults for a conversion).

`model.hparams` holds the architecture and, for a training checkpoint, the run's settings (`config`).
"""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics

from data.contract import RunConfig

from .datamodule import Block
from .models import ReplicaDropout, build_model, rng_state, set_rng_state
from .optim import make_optimizer


class LitClassifier(L.LightningModule):
    def __init__(self, model: str, input_shape: list, num_classes: int, widths: list | None = None,
                 dropout: float = 0.0, config: dict | None = None, total_steps: int = 1,
                 backbone: torch.nn.Module | None = None):
        """The architecture (models.Backbone.description), the run's settings (RunConfig.to_dict(); None:
        the defaults) and budget, which drive configure_optimizers, and optionally the Backbone already
        built (training passes its own, initial weights loaded). All but the backbone are saved as
        hyper-parameters, in plain types, so a weights_only load rebuilds the module."""
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if backbone is None:
            backbone = build_model(model, tuple(input_shape), num_classes, widths, dropout)
        if config is None:
            config = {"model": model, "widths": widths, "dropout": dropout}
        self.backbone, self.total_steps = backbone, total_steps
        self.cfg = RunConfig(**{k: tuple(v) if k == "widths" and v else v for k, v in config.items()})
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_loss = torchmetrics.MeanMetric(nan_strategy="disable")  # a NaN loss stays NaN, as in Keras's Mean (the default drops it)
        self.result_state = None  # the run's losses/curve so far, carried in checkpoints
        self.automatic_optimization = False  # training_step steps the optimizer itself, k times per block

    def forward(self, images):
        return self.backbone(images)

    def setup(self, stage):
        """Data parallel: each rank trains on its slice of the global batch (train.sharded_datamodule), so its
        dropout layers draw the global batch's mask and keep that slice (models.ReplicaDropout)."""
        for m in self.modules():
            if isinstance(m, ReplicaDropout):
                m.rank, m.world = self.trainer.global_rank, self.trainer.world_size

    def training_step(self, batch, batch_idx):
        """batch: a datamodule.Block of k (images, labels) batches (this project's datamodule), or one
        (images, labels) batch from any DataLoader (a Trainer and loader of your own, as for a module loaded
        with load_from_checkpoint). Returns the losses, detached."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        losses = []
        for images, labels in batch if isinstance(batch, Block) else [batch]:
            loss = F.cross_entropy(self(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()  # counts as one trainer.global_step
            scheduler.step()  # schedules are counted in optimizer steps
            losses.append(loss.detach())
        return torch.stack(losses)

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images).float()
        self.test_loss.update(F.cross_entropy(logits, labels, reduction="none"))
        self.test_acc.update(logits, labels)

    def on_validation_epoch_start(self):
        self.test_loss.reset()
        self.test_acc.reset()

    def configure_optimizers(self):
        optimizer, scheduler = make_optimizer(self.cfg, self.parameters(), self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        if self.result_state is not None:
            checkpoint["klc_result"] = self.result_state()
        checkpoint["klc_rng"] = rng_state()  # dropout masks: a resumed run draws the same ones

    def on_load_checkpoint(self, checkpoint):
        self.loaded_result = checkpoint.get("klc_result")
        if self._trainer is not None:  # a resume: the run's generators; load_from_checkpoint leaves the caller's alone
            set_rng_state(checkpoint.get("klc_rng"))
