"""Each space's loader, run on real weights (EfficientNet-Lite0, MiniLM) or on tiny models written in the
published formats (CLIP in sentence-transformers layout, SimCLR in Lightning Bolts format)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from search import embedders
from search.embedders import SpaceUnavailable
from search.embedders.sentence import ClipEmbedder
from search.embedders.simclr import SimCLREmbedder

DEMO = Path(__file__).resolve().parents[2] / "demo" / "images"


def demo_image(name: str) -> Image.Image:
    return Image.open(next(DEMO.glob(f"*/{name}"))).convert("RGB")


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_pixels_are_normalised_32x32_and_handle_flat_images():
    pixels = embedders.get("pixels")
    vectors = pixels.embed_images([Image.new("RGB", (50, 20), (255, 255, 255)), demo_image("apple.png")])
    assert vectors.shape == (2, 3072) and pixels.version == "pixels-32x32-v1"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


def test_efficientnet_lite0_real_weights_see_objects_not_pixels():
    cnn = embedders.get("cnn")
    apple, violin = demo_image("apple.png"), demo_image("student-violin.png")
    a, a_mirrored, v = cnn.embed_images([apple, ImageOps.mirror(apple), violin])
    assert cnn.dimension == 1280 and cnn.version.startswith("efficientnet-lite0-")
    assert cos(a, a_mirrored) > 0.9 > cos(a, v)
    assert cos(a, a_mirrored) - cos(a, v) > 0.2


def test_efficientnet_missing_weights_are_reported(use_spaces, tmp_path):
    use_spaces("cnn", cnn={"WEIGHTS": str(tmp_path / "nope.pth")})
    with pytest.raises(SpaceUnavailable, match="weights not found"):
        embedders.load("cnn")


def test_tiny_clip_loads_through_the_clip_vit_b_32_path(use_spaces, tiny_clip):
    use_spaces("clip", clip={"MODEL": str(tiny_clip)})
    clip = embedders.load("clip")
    assert isinstance(clip, ClipEmbedder) and clip.dimension == 16
    images = clip.embed_images([demo_image("apple.png"), demo_image("student-violin.png")])
    texts = clip.embed_texts(["a photo of an apple", "a violin"])
    assert images.shape == texts.shape == (2, 16)
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert clip.version.startswith(f"{tiny_clip.name}-") and "unknown" not in clip.version


def test_clip_by_name_offline_is_unavailable_within_seconds(use_spaces, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    use_spaces("clip", clip={"MODEL": "clip-ViT-B-32"})
    started = time.monotonic()
    with pytest.raises(SpaceUnavailable, match="nor in the Hugging Face cache"):
        embedders.load("clip")
    assert time.monotonic() - started < 5
    with pytest.raises(SpaceUnavailable):  # remembered, not retried on every call
        embedders.load("clip")


def test_simclr_bolts_checkpoint_restores_the_encoder_exactly(use_spaces, simclr_checkpoint):
    path, weights = simclr_checkpoint
    use_spaces("simclr", simclr={"CHECKPOINT": str(path)})
    simclr = embedders.load("simclr")
    assert isinstance(simclr, SimCLREmbedder) and simclr.dimension == 2048
    state = simclr.model.state_dict()
    for name, tensor in weights.items():
        assert name in state, name
        assert state[name].shape == tensor.shape and bool((state[name] == tensor).all()), name
    vectors = simclr.embed_images([demo_image("apple.png")])
    assert vectors.shape == (1, 2048) and np.isfinite(vectors).all()


def test_simclr_small_stem_variant(use_spaces, tmp_path):
    from tests.search.tinymodels import write_bolts_simclr_checkpoint

    path = tmp_path / "cifar-style.ckpt"
    write_bolts_simclr_checkpoint(path, seed=5, first_conv=False, maxpool1=False)
    use_spaces("simclr", simclr={"CHECKPOINT": str(path)})
    simclr = embedders.load("simclr")
    assert simclr.model.conv1.kernel_size == (3, 3)
    assert simclr.embed_images([demo_image("apple.png")]).shape == (1, 2048)


@pytest.mark.parametrize("checkpoint, reason", [
    ("", "no SimCLR checkpoint configured"),
    ("/nonexistent/simclr.ckpt", "not found"),
    ("http://127.0.0.1:9/simclr.ckpt", "could not download"),
])  # fmt: skip
def test_simclr_without_a_checkpoint_is_unavailable_fast(use_spaces, checkpoint, reason):
    use_spaces("simclr", simclr={"CHECKPOINT": checkpoint})
    started = time.monotonic()
    with pytest.raises(SpaceUnavailable, match=reason):
        embedders.load("simclr")
    assert time.monotonic() - started < 10


def test_text_space_uses_the_packaged_minilm_offline():
    text = embedders.get("text")
    vectors = text.embed_texts(["red summer dress", "a crimson dress for summer", "cordless power drill"])
    assert text.dimension == 384 and text.version.startswith("all-MiniLM-L6-v2-")
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2


def test_registry_knows_modalities_without_loading(settings):
    settings.VITRINE_ENABLED_SPACES = list(settings.VITRINE_SPACES)
    assert embedders.image_spaces() == ["pixels", "cnn", "simclr", "clip"]
    assert embedders.text_spaces() == ["text", "multilingual"]
    assert embedders.modalities("clip") == {"image", "text"}


def test_clip_by_name_with_the_hub_unreachable_fails_within_seconds(use_spaces, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    use_spaces("clip", clip={"MODEL": "clip-ViT-B-32"})
    started = time.monotonic()
    with pytest.raises(SpaceUnavailable, match="cannot be reached"):
        embedders.load("clip")
    assert time.monotonic() - started < 5


def test_each_space_asks_the_decoder_only_for_the_pixels_it_uses():
    from search.embedders.cnn import EfficientNetLite0Embedder
    from search.embedders.pixels import PixelsEmbedder
    from search.embedders.sentence import ClipEmbedder

    assert EfficientNetLite0Embedder("cnn").decode_sides() == (224, 0)  # padded square: the long side
    assert ClipEmbedder("clip").decode_sides() == (224, 0)  # FIT=pad, the default
    assert ClipEmbedder("clip", {"FIT": "crop"}).decode_sides() == (0, 224)  # shortest side resized, then cropped
    assert PixelsEmbedder("pixels").decode_sides() == (0, 32)  # stretched: both sides
