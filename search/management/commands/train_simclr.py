"""manage.py train_simclr [--epochs N] [--size PX] [--base cnn|resnet50] [--batch-size N] [--limit N]"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.models import ProductImage
from search import embedders
from search.embedders import SpaceUnavailable
from search.indexing import bulk, jobs, versions
from search.lab.evaluation import NothingToEvaluate, compare_with_start, evaluate_space
from search.lab.training import BASES, TrainingError, simclr_train


class Command(BaseCommand):
    help = (
        "Fine-tune an ImageNet encoder with SimCLR on the catalogue's own images and save a checkpoint the simclr "
        "space serves. Then reindexes simclr (a new version built beside the old one; search switches when it "
        "is complete): queued for the worker by default, here with --sync (which also evaluates it)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--epochs", type=int, default=5)
        parser.add_argument("--size", type=int, default=96, help="Training crop size in pixels (default 96).")
        parser.add_argument("--base", choices=list(BASES), default="cnn",
                            help="cnn: EfficientNet-Lite0 (packaged ImageNet weights); resnet50: torchvision's "
                                 "(weights must be on disk).")  # fmt: skip
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--limit", type=int, default=None, help="Train on at most this many images.")
        parser.add_argument("--temperature", type=float, default=0.2)
        parser.add_argument("--lr", type=float, default=1e-4, help="Encoder learning rate (the head's is 10×).")
        parser.add_argument("--embed-size", type=int, default=224, help="Input size the simclr space embeds at.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--k", type=int, default=5, help="k for the evaluation after --sync.")
        parser.add_argument("--sync", action="store_true", help="Reindex here (and evaluate) instead of queueing.")
        parser.add_argument("--no-reindex", action="store_true", help="Only write the checkpoint.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, epochs: int, size: int, base: str, batch_size: int, limit: int | None,
               temperature: float, lr: float, embed_size: int, seed: int, k: int, sync: bool, no_reindex: bool,
               no_progress: bool, **options: Any) -> None:  # fmt: skip
        available = ProductImage.objects.count() if limit is None else min(limit, ProductImage.objects.count())
        bar = tqdm(total=epochs * available, unit="img", desc="simclr", file=sys.stderr,
                   disable=no_progress or None, dynamic_ncols=True)  # fmt: skip

        def on_epoch(epoch: int, loss: float, seconds: float) -> None:
            with tqdm.external_write_mode(file=sys.stderr):  # the line goes above the bar, not through it
                self.stdout.write(f"epoch {epoch}/{epochs}: loss {loss:.4f} ({seconds:.1f} s)")

        try:
            result = simclr_train(epochs=epochs, size=size, base=base, batch_size=batch_size, limit=limit,
                                  temperature=temperature, learning_rate=lr, embed_size=embed_size, seed=seed,
                                  on_batch=bar.update, on_epoch=on_epoch)  # fmt: skip
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        self.stdout.write(self.style.SUCCESS(f"trained {result.version} on {result.n_images} images in "
                                             f"{result.seconds:.0f} s (start: {result.base_version})"))  # fmt: skip
        self.stdout.write(f"checkpoint: {result.path}")
        if result.unreadable:
            self.stdout.write(self.style.WARNING(f"{result.unreadable} unreadable image(s) left out"))
        if no_reindex:
            return
        if "simclr" not in embedders.enabled():
            self.stdout.write(self.style.WARNING("the simclr space is not enabled (VITRINE_ENABLED_SPACES): "
                                                 "no reindex"))  # fmt: skip
            return
        try:
            embedder = versions.space_load("simclr")
        except SpaceUnavailable as exc:
            raise CommandError(f"the simclr space cannot load the new checkpoint: {exc.reason}") from None
        if embedder.version != result.version:
            self.stdout.write(self.style.WARNING(
                f"the simclr space serves {embedder.version}, not the new checkpoint: VITRINE_SIMCLR_CHECKPOINT "
                "names a checkpoint explicitly; unset it to serve the newest trained one. No reindex."))  # fmt: skip
            return
        if not sync:
            job = jobs.reindex_job_create(space="simclr")
            self.stdout.write(f"queued reindex job #{job.pk} for simclr ({result.version}); search switches to it "
                              "when every image has a vector")  # fmt: skip
            return
        bar = tqdm(total=ProductImage.objects.count(), unit="img", desc="reindex simclr", file=sys.stderr,
                   disable=no_progress or None, dynamic_ncols=True)  # fmt: skip
        with bar:
            done = bulk.images_embed_bulk(space="simclr", progress=bar.update)
        self.stdout.write(f"simclr: {done.processed} embedded, {done.failed} failed")
        try:
            evaluated = evaluate_space(space="simclr", k=k)
        except NothingToEvaluate as exc:
            self.stdout.write(self.style.WARNING(f"not evaluated: {exc}"))
            return
        comparison = compare_with_start(evaluated)
        if comparison is None:
            self.stdout.write(f"simclr p@{k} {evaluated.precision_at_k:.3f} (its start, the cnn space, has no "
                              "vectors of the same base here to compare with)")  # fmt: skip
        else:
            self.stdout.write(comparison.sentence(k))
