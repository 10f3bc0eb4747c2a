"""SimCLR ResNet-50 encoder from a checkpoint in Lightning Bolts format.

The ``CHECKPOINT`` option is a local path or an http(s) URL (downloaded once into
``$VITRINE_HOME/models/simclr``, with a short timeout so an offline machine
fails in seconds). Bolts' checkpoints hold the encoder under ``encoder.*`` and
the projection head under ``projection.*``; the head is dropped. Bolts may
replace the 7×7 stem (``first_conv=False``) and drop the first max-pool
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


class SimCLREmbedder(TorchImageEmbedder):
    @property
    def model_id(self) -> str:
        return f"SimCLR ResNet-50 ({self.options.get('CHECKPOINT') or 'no checkpoint configured'})"

    def _checkpoint_path(self) -> Path:
        source = str(self.options.get("CHECKPOINT") or "")
        if not source:
            raise SpaceUnavailable("no SimCLR checkpoint configured (set VITRINE_SIMCLR_CHECKPOINT to a path or URL)")
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
        source = str(self.options.get("CHECKPOINT") or "")
        if not source:
            raise SpaceUnavailable("no SimCLR checkpoint configured (set VITRINE_SIMCLR_CHECKPOINT to a path or URL)")
        if not source.startswith(("http://", "https://")) and not Path(source).expanduser().is_file():
            raise SpaceUnavailable(f"SimCLR checkpoint not found at {source}")

    def _build(self) -> Any:
        path = self._checkpoint_path()
        checkpoint = load_checkpoint(path)
        state = checkpoint.get("state_dict", checkpoint)
        hyper = dict(checkpoint.get("hyper_parameters") or {})
        encoder_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        encoder_state = {k: v for k, v in encoder_state.items() if not k.startswith("fc.")}
        if not encoder_state:
            raise SpaceUnavailable(f"{path.name} has no encoder.* weights; is it a Bolts SimCLR checkpoint?")
        arch = str(hyper.get("arch", "resnet50"))
        if arch != "resnet50":
            raise SpaceUnavailable(f"{path.name} is a SimCLR {arch}; this space runs resnet50")
        model = resnet50_encoder(first_conv=bool(hyper.get("first_conv", True)),
                                 maxpool1=bool(hyper.get("maxpool1", True)))  # fmt: skip
        try:
            model.load_state_dict(encoder_state, strict=True)
        except RuntimeError as exc:
            raise SpaceUnavailable(f"{path.name} does not fit a ResNet-50 encoder: {str(exc)[:300]}") from None
        self.version = f"simclr-resnet50-{fingerprint_files([path])}"
        self.dimension = 2048
        return model

    def _features(self, batch: Any) -> Any:
        return self.model(batch)
