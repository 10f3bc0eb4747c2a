"""SimCLR encoder (ResNet-50 or EfficientNet-Lite0) from a checkpoint in Lightning Bolts format.

Which checkpoint: the ``CHECKPOINT`` option when set (``VITRINE_SIMCLR_CHECKPOINT``); else the
newest checkpoint that ``manage.py train_simclr`` wrote under ``TRAINED_DIR`` (default
``$VITRINE_HOME/models/simclr/trained``); else ``PUBLISHED_CHECKPOINT`` (Bolts' ImageNet
ResNet-50). A path, or an http(s) URL downloaded once into ``$VITRINE_HOME/models/simclr``
with a short timeout so an offline machine fails in seconds. A process that has the space
loaded notices a newer trained checkpoint at its next ``load()`` and switches to it: the new
version is then built beside the old one, which serves until it is complete.

Checkpoints written by ``train_simclr`` use the same layout (``state_dict`` with ``encoder.*``
keys, ``hyper_parameters`` with ``arch``) plus ``vitrine_simclr``, ``image_size`` and
``weights_sha256``; their version is ``simclr-ft-<arch>-<weights hash>``.

Bolts' checkpoints hold the encoder under ``encoder.*`` and the projection head under
``projection.*``; the head is dropped. Bolts may replace the 7×7 stem (``first_conv=False``) and drop the first max-pool
(``maxpool1=False``); both flags are read from the checkpoint's hyper-parameters.

Checkpoints are read with ``weights_only=True``. Lightning 1.x pickled its
hyper-parameters as ``AttributeDict``; such non-tensor classes are rebuilt as
plain dicts instead of being imported, so loading a checkpoint never runs code.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings

from search.embedders.base import SpaceUnavailable, fingerprint_files
from search.embedders.torchvision_base import TorchImageEmbedder

logger = logging.getLogger(__name__)

PUBLISHED_IMAGENET_CHECKPOINT = (
    "https://pl-bolts-weights.s3.us-east-2.amazonaws.com/simclr/bolts_simclr_imagenet/simclr_imagenet.ckpt"
)
DOWNLOAD_TIMEOUT_S = 5.0


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``, reading foreign metadata classes as plain dicts.

    Old Lightning checkpoints name classes such as ``AttributeDict`` (hyper-parameters)
    or ``ModelCheckpoint`` (as a key of ``callbacks``); none of them matter for the
    weights, so each is stood in for by ``dict`` instead of being imported.
    """
    import pickle

    import torch

    stand_ins: list[Any] = []
    for _ in range(20):
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
        except pickle.UnpicklingError as exc:
            match = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if not match or match.group(1).startswith("torch"):
                raise SpaceUnavailable(f"{path.name} cannot be read safely: {str(exc)[:200]}") from None
            stand_ins.append((dict, match.group(1)))
    raise SpaceUnavailable(f"{path.name}: too many unknown classes in the checkpoint")


NO_CHECKPOINT = ("no SimCLR checkpoint configured (set VITRINE_SIMCLR_CHECKPOINT to a path or URL, "
                 "or run `manage.py train_simclr`)")  # fmt: skip
TRAINED_PREFIX = "simclr-ft-"
TRAINED_SUFFIX = ".ckpt"
ARCHITECTURES = ("resnet50", "efficientnet-lite0")


def fine_tuned_base(version: str) -> str | None:
    """The base architecture of a version trained here (``simclr-ft-<arch>-<hash>``), else None."""
    if not version.startswith(TRAINED_PREFIX):
        return None
    rest = version[len(TRAINED_PREFIX) :]
    return next((arch for arch in ARCHITECTURES if rest.startswith(f"{arch}-")), None)


def trained_dir(options: dict[str, Any] | None = None) -> Path:
    """Where ``train_simclr`` writes checkpoints and this space looks for the newest one."""
    configured = str((options or {}).get("TRAINED_DIR") or "")
    return Path(configured).expanduser() if configured else Path(settings.VITRINE_HOME) / "models/simclr/trained"


def latest_trained_checkpoint(directory: Path) -> Path | None:
    """The newest trained checkpoint (names start with a UTC timestamp, so the largest name is the newest)."""
    try:
        names = sorted(p for p in directory.iterdir() if p.name.startswith(TRAINED_PREFIX)
                       and p.name.endswith(TRAINED_SUFFIX) and p.is_file())  # fmt: skip
    except OSError:
        return None
    return names[-1] if names else None


def resnet50_encoder(*, first_conv: bool = True, maxpool1: bool = True) -> Any:
    """torchvision's ResNet-50 shaped like Bolts' encoder, classifier removed."""
    import torch
    from torchvision.models import resnet50

    model = resnet50()
    if not first_conv:
        model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    if not maxpool1:
        model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    return model


def efficientnet_lite0_encoder() -> Any:
    """EfficientNet-Lite0 with random weights (the checkpoint supplies them); features via :func:`encoder_features`."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def encoder_features(model: Any, arch: str, batch: Any) -> Any:
    """Pooled features of a (n, 3, H, W) batch: the embedding SimCLR trains and this space serves."""
    if arch == "efficientnet-lite0":
        return model.extract_features(batch).mean(dim=(2, 3))
    return model(batch)


class SimCLREmbedder(TorchImageEmbedder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arch = "resnet50"
        self._loaded_from = ""

    @property
    def model_id(self) -> str:
        source = self._source() or "no checkpoint configured"
        return f"SimCLR {self.arch if self.loaded else ''} ({source})".replace("  ", " ")

    def _source(self) -> str:
        """Explicit CHECKPOINT, else the newest trained one, else the published checkpoint."""
        explicit = str(self.options.get("CHECKPOINT") or "")
        if explicit:
            return explicit
        trained = latest_trained_checkpoint(trained_dir(self.options))
        if trained is not None:
            return str(trained)
        return str(self.options.get("PUBLISHED_CHECKPOINT") or "")

    def load(self) -> None:
        # A newer trained checkpoint (or a changed setting) replaces the loaded model in this process.
        if self.loaded and self._source() != self._loaded_from:
            with self._lock:
                self._loaded = False
        super().load()

    def _load(self) -> None:
        # A checkpoint that cannot be had (offline, a wrong path) makes the space unavailable before PyTorch is
        # imported: a worker whose other spaces serve from ONNX exports then never carries torch for nothing.
        self._checkpoint_path()
        super()._load()

    def _checkpoint_path(self) -> Path:
        source = self._source()
        if not source:
            raise SpaceUnavailable(NO_CHECKPOINT)
        if not source.startswith(("http://", "https://")):
            path = Path(source).expanduser()
            if not path.is_file():
                raise SpaceUnavailable(f"SimCLR checkpoint not found at {path}")
            return path
        cache = Path(settings.VITRINE_HOME) / "models" / "simclr"
        target = cache / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{Path(source).name}"
        if target.is_file():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(source, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            partial.unlink(missing_ok=True)
            raise SpaceUnavailable(f"could not download the SimCLR checkpoint from {source}: {exc}") from None
        partial.rename(target)
        return target

    def check(self) -> None:
        source = self._source()
        if not source:
            raise SpaceUnavailable(NO_CHECKPOINT)
        if not source.startswith(("http://", "https://")) and not Path(source).expanduser().is_file():
            raise SpaceUnavailable(f"SimCLR checkpoint not found at {source}")

    def _build(self) -> Any:
        import numpy as np

        source = self._source()
        path = self._checkpoint_path()
        checkpoint = load_checkpoint(path)
        state = checkpoint.get("state_dict", checkpoint)
        hyper = dict(checkpoint.get("hyper_parameters") or {})
        encoder_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        encoder_state = {k: v for k, v in encoder_state.items() if not k.startswith(("fc.", "_fc."))}
        if not encoder_state:
            raise SpaceUnavailable(f"{path.name} has no encoder.* weights; is it a Bolts SimCLR checkpoint?")
        arch = str(hyper.get("arch", "resnet50"))
        if arch not in ARCHITECTURES:
            raise SpaceUnavailable(f"{path.name} is a SimCLR {arch}; this space runs {' or '.join(ARCHITECTURES)}")
        if arch == "resnet50":
            model = resnet50_encoder(first_conv=bool(hyper.get("first_conv", True)),
                                     maxpool1=bool(hyper.get("maxpool1", True)))  # fmt: skip
            dimension = 2048
        else:
            model = efficientnet_lite0_encoder()
            dimension = int(model._fc.in_features)
        try:
            # EfficientNet keeps its (unused) ImageNet classifier as _fc; only the encoder must fit exactly.
            missing, unexpected = model.load_state_dict(encoder_state, strict=False)
        except RuntimeError as exc:
            raise SpaceUnavailable(f"{path.name} does not fit a {arch} encoder: {str(exc)[:300]}") from None
        missing = [k for k in missing if not k.startswith("_fc.")]
        if missing or unexpected:
            raise SpaceUnavailable(f"{path.name} does not fit a {arch} encoder (missing {missing[:3]}, "
                                   f"unexpected {unexpected[:3]})")  # fmt: skip
        self.arch = arch
        # Trained here: the input size and normalisation it was trained for travel in the checkpoint.
        self.image_size = int(hyper.get("image_size", type(self).image_size))  # type: ignore[misc]
        mean, std = hyper.get("mean", self.mean), hyper.get("std", self.std)
        self._mean = np.array(mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.array(std, dtype=np.float32).reshape(3, 1, 1)
        if hyper.get("vitrine_simclr") and hyper.get("weights_sha256"):
            self.version = f"{TRAINED_PREFIX}{arch}-{str(hyper['weights_sha256'])[:12]}"
        else:
            self.version = f"simclr-{arch}-{fingerprint_files([path])}"
        self.dimension = dimension
        self._loaded_from = source
        return model

    def _features(self, batch: Any) -> Any:
        return encoder_features(self.model, self.arch, batch)
