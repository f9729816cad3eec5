"""A small CNN attribute classifier: images in [-1, 1] -> one logit per binary attribute.

The spatial map is flattened rather than averaged, so position attributes (left, top) stay readable.
`features` is the penultimate layer, used as a feature space for FID on Shapes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from hspace.errors import UserError
from hspace.files import atomic_write_safetensors, atomic_write_text
from hspace.identity import config_hash, state_hash, weights_identity

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier.json"


@dataclass
class CNNConfig:
    attributes: list[str]
    channels: list[int]
    hidden: int = 256
    resolution: int = 32


class AttributeCNN(nn.Module):
    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], 3
        for c in config.channels:
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1),
                nn.GroupNorm(8, c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.GroupNorm(8, c),
                nn.SiLU(),
                nn.AvgPool2d(2),
            ]
            c_in = c
        self.body = nn.Sequential(*layers)
        side = config.resolution // 2 ** len(config.channels)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, config.hidden), nn.SiLU())
        self.head = nn.Linear(config.hidden, len(config.attributes))
        self.weight_hash: str | None = None  # set by `load`: the hash of the weights file
        self.loaded_state: str | None = None  # set by `load`: the hash of the weights it read (weights_identity)

    @property
    def attributes(self) -> list[str]:
        return self.config.attributes

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def identity(self) -> str:
        """The hash of the weights (of the file it was loaded from while they are unchanged, else of the weights in
        memory: hspace.identity.weights_identity) with the config: its attribute names say which score is which."""
        return f"{weights_identity(self, self.weight_hash, self.loaded_state)}:{config_hash(asdict(self.config))}"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features. (B, hidden)"""
        return self.embed(self.body(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits, one per attribute. (B, A)"""
        return self.head(self.features(images))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """P(attribute) for each image. (B, A) in [0, 1]"""
        weights = next(self.parameters())  # images of a half-precision model are scored at the weights' precision
        return torch.cat(
            [
                torch.sigmoid(self(images[i : i + batch_size].to(weights.device, weights.dtype))).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_safetensors(directory / WEIGHTS_FILE, self.state_dict())
        atomic_write_text(directory / CONFIG_FILE, json.dumps(asdict(self.config), indent=2))
        return directory

    @classmethod
    def load(cls, source: str | Path, device: str | torch.device = "cpu") -> AttributeCNN:
        """From a directory holding classifier.json and classifier.safetensors, or a shipped name."""
        directory = Path(source).expanduser()
        if not directory.is_dir() and (SHIPPED_DIR / str(source) / WEIGHTS_FILE).is_file():
            directory = SHIPPED_DIR / str(source)
        if not (directory / WEIGHTS_FILE).is_file() or not (directory / CONFIG_FILE).is_file():
            raise UserError(
                f"no attribute classifier at {directory.resolve()}: expected {CONFIG_FILE} and {WEIGHTS_FILE} there "
                "(or a shipped name such as shapes_attributes)"
            )
        model = cls(CNNConfig(**json.loads((directory / CONFIG_FILE).read_text())))
        model.load_state_dict(load_file(directory / WEIGHTS_FILE))
        model.weight_hash = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]
        model.loaded_state = state_hash(model)
        return model.to(device).eval().requires_grad_(False)
