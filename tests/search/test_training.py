"""SimCLR fine-tuning: NT-Xent by hand, and a tiny training run end to end through the simclr space."""

from __future__ import annotations

import math
from io import BytesIO, StringIO
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from PIL import Image

from catalog.models import Product
from search import embedders
from search.embedders.simclr import SimCLREmbedder, fine_tuned_base, latest_trained_checkpoint, load_checkpoint
from search.indexing import jobs
from search.lab.training import nt_xent_loss
from search.models import ReindexJob, SpaceVersion
from search.querying import similar
from tests.factories import CategoryFactory, ProductFactory, add_image
from tests.imagefactory import image_bytes

E = math.e


def test_nt_xent_matches_a_hand_computed_case():
    # Two images, two views each, τ = 1. Views agree: each anchor has cosine 1 with its positive and 0 with the
    # two negatives, so every term is −log(e / (e + 1 + 1)).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(nt_xent_loss(z, z.clone(), 1.0)) == pytest.approx(math.log((E + 2) / E))
    # Views swapped (and not unit length: the loss normalises): each positive has cosine 0, and one negative has
    # cosine 1: −log(e⁰ / (e⁰ + e⁰ + e¹)) for every anchor.
    swapped = torch.tensor([[0.0, 3.0], [2.0, 0.0]])
    assert float(nt_xent_loss(z, swapped, 1.0)) == pytest.approx(math.log(2 + E))
    # Temperature divides the similarities: τ = 0.5 doubles them.
    assert float(nt_xent_loss(z, z.clone(), 0.5)) == pytest.approx(math.log((E**2 + 2) / E**2))


def test_nt_xent_has_gradients_and_falls_as_views_agree():
    torch.manual_seed(0)
    a = torch.randn(8, 16, requires_grad=True)
    far = nt_xent_loss(a, torch.randn(8, 16), 0.2)
    near = nt_xent_loss(a, a.detach() + 0.01 * torch.randn(8, 16), 0.2)
    assert float(near.detach()) < float(far.detach())
    near.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_versions_of_trained_checkpoints_name_their_base():
    assert fine_tuned_base("simclr-ft-efficientnet-lite0-0123456789ab") == "efficientnet-lite0"
    assert fine_tuned_base("simclr-ft-resnet50-0123456789ab") == "resnet50"
    assert fine_tuned_base("simclr-resnet50-0123456789ab") is None  # Bolts' published model: not trained here


def _train(**options: object) -> str:
    out = StringIO()
    call_command("train_simclr", epochs=1, size=32, batch_size=4, embed_size=64, no_progress=True, stdout=out,
                 stderr=StringIO(), **options)  # fmt: skip
    return out.getvalue()


@pytest.mark.django_db
def test_a_tiny_training_run_is_served_by_the_simclr_space_and_replaces_the_old_version(use_spaces, tmp_path):
    trained = tmp_path / "trained"
    use_spaces("cnn", "simclr", simclr={"CHECKPOINT": "", "TRAINED_DIR": str(trained)})
    reds, blues = CategoryFactory(name="Reds"), CategoryFactory(name="Blues")
    for i in range(3):
        add_image(ProductFactory(category=reds), color=(220 - 20 * i, 30, 30), size=(48, 48))
        add_image(ProductFactory(category=blues), color=(30, 30, 220 - 20 * i), size=(48, 48))
    call_command("reindex", space="cnn", sync=True, no_progress=True, stdout=StringIO(), stderr=StringIO())

    out = _train(sync=True)
    assert "epoch 1/1: loss" in out
    first = latest_trained_checkpoint(trained)
    assert first is not None and f"checkpoint: {first}" in out
    # The projection head is gone; the checkpoint records its base and sizes.
    checkpoint = load_checkpoint(first)
    assert all(key.startswith("encoder.") for key in checkpoint["state_dict"])
    assert not any(key.startswith(("encoder._fc.", "projection")) for key in checkpoint["state_dict"])
    hyper = checkpoint["hyper_parameters"]
    assert hyper["arch"] == "efficientnet-lite0" and hyper["train_size"] == 32 and hyper["image_size"] == 64
    assert len(hyper["losses"]) == 1 and math.isfinite(hyper["losses"][0])

    simclr = embedders.load("simclr")
    assert isinstance(simclr, SimCLREmbedder) and simclr.arch == "efficientnet-lite0" and simclr.dimension == 1280
    assert simclr.version == f"simclr-ft-efficientnet-lite0-{hyper['weights_sha256'][:12]}"
    assert simclr.version in out and simclr.image_size == 64
    # The encoder's weights are the trained ones, exactly.
    state = simclr.model.state_dict()
    for key, tensor in checkpoint["state_dict"].items():
        assert torch.equal(state[key[len("encoder.") :]], tensor), key
    vectors = simclr.embed_images([_rgb()])
    assert vectors.shape == (1, 1280) and abs(float((vectors**2).sum()) - 1.0) < 1e-4
    # --sync reindexed: the new version serves, and evaluate compared it with its ImageNet start.
    active = SpaceVersion.objects.get(space="simclr", state=SpaceVersion.State.ACTIVE)
    assert active.version == simclr.version
    assert "simclr p@5" in out and "vs its start (cnn, efficientnet-lite0, ImageNet)" in out

    # A second run: a new checkpoint (newest wins), built beside the old version while the old one serves.
    out = _train(seed=1)  # the default: a reindex job for the worker
    second = latest_trained_checkpoint(trained)
    assert second is not None and second != first
    new_version = embedders.load("simclr").version  # a process with the space loaded noticed the newer checkpoint
    assert new_version != active.version and "queued reindex job" in out
    states = dict(SpaceVersion.objects.filter(space="simclr").values_list("version", "state"))
    assert states == {active.version: "active", new_version: "building"}
    product = Product.objects.filter(category=reds).first()
    assert similar.similar_products(product=product, k=2, space="simclr")  # still answered by the old version
    (job,) = ReindexJob.objects.filter(space="simclr")
    assert jobs.reindex_job_run(job_id=job.pk).status == "done"  # what the worker runs
    states = dict(SpaceVersion.objects.filter(space="simclr").values_list("version", "state"))
    assert states == {active.version: "retired", new_version: "active"}

    table = StringIO()
    call_command("evaluate", space="simclr", k=2, stdout=table)
    assert "vs its start (cnn, efficientnet-lite0, ImageNet)" in table.getvalue()


def _rgb() -> Image.Image:
    return Image.open(BytesIO(image_bytes(size=(40, 30), color=(10, 200, 10)))).convert("RGB")


@pytest.mark.django_db
def test_an_explicit_checkpoint_wins_over_trained_ones(use_spaces, tmp_path, simclr_checkpoint):
    path, _ = simclr_checkpoint
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "simclr-ft-20990101T000000000000Z-efficientnet-lite0-abcdef012345.ckpt").write_bytes(b"not used")
    use_spaces("simclr", simclr={"CHECKPOINT": str(path), "TRAINED_DIR": str(trained)})
    assert embedders.load("simclr").version.startswith("simclr-resnet50-")


def test_the_newest_trained_checkpoint_is_the_latest_name(tmp_path: Path):
    assert latest_trained_checkpoint(tmp_path / "absent") is None
    for name in ("simclr-ft-20260101T000000000000Z-resnet50-aaaaaaaaaaaa.ckpt",
                 "simclr-ft-20260301T000000000000Z-efficientnet-lite0-bbbbbbbbbbbb.ckpt",
                 "simclr-ft-20260401T000000000000Z-efficientnet-lite0-cccccccccccc.ckpt.part",
                 "notes.txt"):  # fmt: skip
        (tmp_path / name).write_bytes(b"x")
    newest = latest_trained_checkpoint(tmp_path)
    assert newest is not None and newest.name.startswith("simclr-ft-20260301")
