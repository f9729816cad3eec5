"""Training an attribute classifier on any datamodule whose items hold `image` and `attributes`."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from hspace.checks import integer, number
from hspace.classifiers.cnn import CONFIG_FILE, WEIGHTS_FILE, AttributeCNN, CNNConfig
from hspace.data.datamodule import ImageDataModule
from hspace.errors import UserError
from hspace.files import atomic_write_directory
from hspace.lightning.exportable import ExportableModule


def check_classifier_settings(
    attributes: list[str], channels: list[int], hidden: int, resolution: int, lr: float, weight_decay: float
) -> None:
    """The module group's settings, each refused in one line naming it."""
    if not attributes:
        raise UserError("module.attributes is empty: list the attributes the classifier predicts")
    for i, width in enumerate(channels):
        integer(width, f"module.channels[{i}]", 8)  # GroupNorm(8, width) after every convolution
        if width % 8:
            raise UserError(f"module.channels[{i}]={width} is not a multiple of 8: each block normalises in 8 groups")
    integer(hidden, "module.hidden", 1)
    integer(resolution, "module.resolution", 2)
    halvings = (resolution & -resolution).bit_length() - 1  # how often the side halves without a remainder
    if halvings == 0:
        raise UserError(f"module.resolution={resolution} is odd: each block halves the side, so give an even one")
    if not 1 <= len(channels) <= halvings:
        raise UserError(
            f"module.channels has {len(channels)} blocks, each halving the side of {resolution} pixels: "
            f"give 1 to {halvings} blocks"
        )
    number(lr, "module.lr", above=0.0)
    number(weight_decay, "module.weight_decay", 0.0)


class AttributeAccuracy(Metric):
    """The share of samples each attribute is predicted right for (probability above 0.5 for a 1), reduced across
    processes; for one attribute as for many (torchmetrics' MultilabelAccuracy takes at least two)."""

    def __init__(self, num_attributes: int):
        super().__init__()
        self.add_state("correct", torch.zeros(num_attributes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct += ((probabilities > 0.5).long() == labels.long()).sum(dim=0)
        self.total += labels.shape[0]

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total


class AttributeClassifierTraining(ExportableModule):
    """Binary cross-entropy on every attribute; validation logs `val/acc/<attribute>` and `val/acc_min`."""

    def __init__(
        self,
        attributes: list[str],
        channels: list[int],
        hidden: int = 256,
        resolution: int = 32,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
    ):
        super().__init__()
        check_classifier_settings(attributes, channels, hidden, resolution, lr, weight_decay)
        self.save_hyperparameters()
        self.net = AttributeCNN(CNNConfig(list(attributes), list(channels), hidden, resolution))
        self.val_accuracy = AttributeAccuracy(len(attributes))

    def on_fit_start(self):
        data = self.trainer.datamodule
        if not isinstance(data, ImageDataModule):  # data given as bare loaders name no attributes
            return
        names = data.attributes
        if list(names) != list(self.hparams.attributes):
            raise UserError(
                f"the data's attributes ({', '.join(names)}) differ from module.attributes "
                f"({', '.join(self.hparams.attributes)}): make them the same list, in the same order"
            )

    def training_step(self, batch, batch_idx):
        loss = F.binary_cross_entropy_with_logits(self.net(batch["image"]), batch["attributes"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        # Probabilities: torchmetrics reads a batch of logits that all lie in [0, 1] as probabilities already.
        self.val_accuracy.update(torch.sigmoid(self.net(batch["image"])), batch["attributes"].int())

    def on_validation_epoch_end(self):
        accuracy = self.val_accuracy.compute().reshape(-1)  # torchmetrics hands one attribute's back as a scalar
        self.val_accuracy.reset()
        self.log_dict({f"val/acc/{name}": value for name, value in zip(self.hparams.attributes, accuracy)})
        self.log("val/acc_min", accuracy.min(), prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    exported_files = (CONFIG_FILE, WEIGHTS_FILE)
    needs_known_length = True  # OneCycleLR spans every step of the training

    def export(self, directory: str | Path) -> Path:
        """classifier.json and classifier.safetensors, written to a staging directory and renamed into place."""
        return atomic_write_directory(directory, self.net.save)
