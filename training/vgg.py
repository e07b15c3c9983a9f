"""VGG19 features up to relu5_1, state_dict-compatible with torchvision's `vgg19().features`.

torchvision is not a dependency; this module rebuilds the same layers with the
same indices, so torchvision's `vgg19-dcbb9e9d.pth` (or a bare `features`
state_dict) loads into it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# torchvision's configuration "E" (VGG19): channels per conv, "M" for max-pooling.
_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
# Index in `features` of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
RELU_X_1 = (1, 6, 11, 20, 29)
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def default_weights_path() -> Path | None:
    """torchvision's VGG19 file in the torch hub cache, if it is there (never downloaded)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    return path if path.is_file() else None


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the relu1_1 ... relu5_1 activations of a [0, 1] RGB batch."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers[: RELU_X_1[-1] + 1])
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.pretrained = False
        path = Path(weights) if weights else default_weights_path()
        if path is not None:
            self.load_weights(path)
        else:
            log.warning("VGG19: no weights file (give --vgg-weights or place %s in %s): the contrastive loss runs "
                        "on random features", TORCHVISION_FILE, Path(torch.hub.get_dir()) / "checkpoints")
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such VGG19 weights file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        wanted = self.features.state_dict()
        found = {}
        for key in wanted:
            for candidate in (f"features.{key}", key):
                if candidate in state:
                    found[key] = state[candidate]
                    break
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise ValueError(f"{path}: not VGG19 features weights (missing {missing[:4]}...)")
        self.features.load_state_dict(found)
        self.pretrained = True

    def forward(self, image: Tensor) -> list[Tensor]:
        x = (image - self.mean) / self.std
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in RELU_X_1:
                outputs.append(x)
        return outputs
