"""ONNX Runtime against eager PyTorch, per image and per text, for every space; CLIP's preprocessing of our
own against Hugging Face's processor; int8 as its own version; the fallback to PyTorch; manage.py quantize."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from catalog import services as catalog_services
from search import embedders
from search.embedders import runtime, tokens
from search.embedders.base import GPU_DRIVER_FILES
from search.embedders.sentence import ClipEmbedder, clip_pixels
from search.indexing import versions
from search.models import ImageEmbedding, SpaceVersion
from tests.factories import CategoryFactory, ProductFactory

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "images"
TEXTS = ["a red summer dress", "stainless steel chef's knife with a wooden handle", "mug", "Gitarre aus Holz", ""]


def demo_images(n: int = 6) -> list[Image.Image]:
    paths = sorted(DEMO.glob("*/*"))[:: max(1, 450 // n)][:n]
    return [Image.open(path).convert("RGB") for path in paths]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def both_runtimes(use_spaces, key: str, **options: object) -> tuple[embedders.Embedder, embedders.Embedder]:  # type: ignore[no-untyped-def]
    loaded = []
    for name in ("torch", "onnx"):
        use_spaces(key, **{key: {**options, "RUNTIME": name, "QUANTIZE": "never"}})
        loaded.append(embedders.load(key))
    return loaded[0], loaded[1]


@pytest.mark.parametrize("key", ["cnn", "simclr", "clip"])
def test_onnx_and_pytorch_image_vectors_agree_per_image(use_spaces, key, tiny_clip, simclr_checkpoint):
    options = {"simclr": {"CHECKPOINT": str(simclr_checkpoint[0])}, "clip": {"MODEL": str(tiny_clip)}}.get(key, {})
    eager, onnx = both_runtimes(use_spaces, key, **options)
    assert eager.runtime_label == "torch" and onnx.runners["image"].backend == "onnx", onnx.runtime_label
    # fp32 ONNX shares the PyTorch version: switching runtimes needs no reindex.
    assert eager.version == onnx.version and "int8" not in onnx.version
    images = demo_images()
    assert cosines(eager.embed_images(images), onnx.embed_images(images)).min() >= 0.999


@pytest.mark.parametrize("key", ["clip", "text"])
def test_onnx_and_pytorch_text_vectors_agree_per_text(use_spaces, key, tiny_clip):
    options = {"clip": {"MODEL": str(tiny_clip)}}.get(key, {})
    eager, onnx = both_runtimes(use_spaces, key, **options)
    assert onnx.runners["text"].backend == "onnx", onnx.runtime_label
    got = onnx.embed_texts(TEXTS)
    assert cosines(eager.embed_texts(TEXTS), got).min() >= 0.999
    # …and both reproduce sentence-transformers' own encode (tokenizer, transformer, pooling).
    reference = eager.model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert cosines(reference, got).min() >= 0.999


def test_exports_are_cached_per_model_version(use_spaces):
    _, onnx = both_runtimes(use_spaces, "cnn")
    path = onnx.runners["image"].path
    assert path is not None and path.is_file() and onnx.version in path.name
    assert path.parent == Path(runtime.cache_dir())
    before = path.stat().st_mtime_ns
    use_spaces("cnn", cnn={"RUNTIME": "onnx", "QUANTIZE": "never"})
    again = embedders.load("cnn")
    assert again is not onnx and again.runners["image"].path == path and path.stat().st_mtime_ns == before


def test_clip_preprocessing_matches_the_hugging_face_processor(use_spaces, tiny_clip):
    """Ours: PIL resize/crop per image, numpy normalisation per batch. Theirs: the CLIP processor."""
    from search.embedders.torchvision_base import normalise_batch

    use_spaces("clip", clip={"MODEL": str(tiny_clip)})
    clip = embedders.load("clip")
    assert isinstance(clip, ClipEmbedder)
    processor = clip.st_model()[0].processor.image_processor
    config = clip.image_config
    assert (config.size, config.crop) == (32, 32)
    images = [*demo_images(4), Image.new("RGB", (90, 40), (10, 200, 30))]
    for fit in ("crop", "pad"):
        ours = normalise_batch([clip_pixels(image, config, fit=fit) for image in images], config.mean, config.std)
        # "pad": the processor sees the padded square; its resize and crop are then no-ops.
        inputs = (
            images if fit == "crop" else [Image.fromarray(clip_pixels(image, config, fit="pad")) for image in images]
        )
        theirs = processor(images=inputs, return_tensors="np")["pixel_values"]
        assert ours.shape == theirs.shape == (len(images), 3, 32, 32)
        # Torchvision's bicubic and PIL's differ by rounding at most; in 0..255 units:
        difference = np.abs(ours - theirs) * config.std.reshape(1, 3, 1, 1) * 255
        assert difference.mean() < (0.01 if fit == "pad" else 1.5) and np.percentile(difference, 99) < 6


def test_int8_is_a_version_of_its_own(use_spaces, tiny_clip):
    use_spaces("clip", clip={"MODEL": str(tiny_clip), "RUNTIME": "onnx", "QUANTIZE": "never"})
    fp32 = embedders.load("clip")
    use_spaces("clip", clip={"MODEL": str(tiny_clip), "RUNTIME": "onnx", "QUANTIZE": "always"})
    int8 = embedders.load("clip")
    # The image tower only: stored clip vectors are image vectors; text queries stay fp32.
    assert int8.runners["image"].backend == "onnx-int8" and int8.runners["text"].backend == "onnx"
    assert int8.version == fp32.version + runtime.INT8_SUFFIX
    images = demo_images()
    assert cosines(fp32.embed_images(images), int8.embed_images(images)).min() > 0.9
    use_spaces("clip", clip={"MODEL": str(tiny_clip), "RUNTIME": "torch", "QUANTIZE": "always"})
    assert embedders.load("clip").version == fp32.version  # int8 needs ONNX; eager stays fp32


def test_convolutional_spaces_refuse_int8_and_keep_fp32_onnx(use_spaces, db):
    use_spaces("cnn", cnn={"RUNTIME": "onnx", "QUANTIZE": "always"})
    cnn = embedders.load("cnn")
    assert cnn.runners["image"].backend == "onnx" and "int8" not in cnn.version
    assert "nothing to quantize" in cnn.runners["image"].details["int8_refused"]
    with pytest.raises(CommandError, match="int8 is not available for cnn: nothing to quantize"):
        call_command("quantize", space="cnn", no_progress=True)


def test_an_export_that_disagrees_with_pytorch_falls_back_to_pytorch_with_the_reason(caplog, settings, tmp_path):
    """A forward pass that leaves torch (via numpy) is frozen into a constant by the tracer: the check on a
    second batch catches it, and the model runs in PyTorch."""
    import torch

    from search.embedders.torchvision_base import random_pixels, torch_module

    settings.VITRINE_HOME = tmp_path
    weight = torch.nn.Linear(3, 4)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return weight(torch.from_numpy(x.numpy().mean(axis=(2, 3))))

    spec = runtime.ModelSpec(module=torch_module(forward, weight=weight),
                             example={"pixel_values": random_pixels(2, 8, seed=0)},
                             check={"pixel_values": random_pixels(3, 8, seed=1)},
                             dynamic={"pixel_values": {0: "batch"}})  # fmt: skip
    runner = runtime.runner_build(lambda: spec, name="broken", runtime="onnx")
    assert runner.backend == "torch" and "disagrees with PyTorch" in runner.fallback_reason
    assert "ONNX unavailable" in runner.label and "running in PyTorch" in caplog.text
    assert runner(spec.check or {}).shape == (3, 4)  # still answers, in PyTorch
    assert not list(tmp_path.rglob("*.onnx"))


def test_a_space_whose_onnx_path_fails_still_loads_and_says_why(use_spaces, settings, tmp_path, db):
    """No writable model cache: the export fails, the space runs in PyTorch, and the admin's state says so."""
    (tmp_path / "models").write_text("a file where the cache folder should be")
    settings.VITRINE_HOME = tmp_path
    use_spaces("text", text={"RUNTIME": "onnx"})
    embedder = versions.space_load("text")
    assert embedder.runners["text"].backend == "torch" and embedder.runners["text"].fallback_reason
    assert embedder.embed_texts(["still works"]).shape == (1, 384)
    from search.models import SpaceState

    assert "ONNX unavailable" in SpaceState.objects.get(key="text").model_id


@pytest.fixture
def demo_catalogue(db):  # type: ignore[no-untyped-def]
    """Four demo categories, five real product photos each."""
    for folder in sorted(DEMO.iterdir())[:4]:
        category = CategoryFactory(name=folder.name, slug=folder.name)
        for path in sorted(folder.iterdir())[:5]:
            product = ProductFactory(category=category, title=path.stem)
            catalog_services.product_image_add(product=product, file=path.read_bytes())  # type: ignore[arg-type]


@pytest.mark.parametrize("max_drop,accepted", [(1.0, True), (-1.0, False)])
def test_quantize_measures_precision_and_records_the_decision(use_spaces, settings, tmp_path, demo_catalogue,
                                                              tiny_clip, max_drop, accepted):  # fmt: skip
    settings.VITRINE_HOME = tmp_path
    use_spaces("clip", clip={"MODEL": str(tiny_clip), "RUNTIME": "onnx", "QUANTIZE": "auto"})
    fp32_version = embedders.load("clip").version
    out = io.StringIO()
    call_command("quantize", space="clip", max_drop=max_drop, as_json=True, no_progress=True, stdout=out)
    decision = json.loads(out.getvalue())
    assert decision["accepted"] is accepted and decision["fp32_version"] == fp32_version
    assert decision["n_queries"] == 20 and 0.0 <= decision["precision_int8"] <= 1.0
    assert json.loads(runtime.decisions_path().read_text())["clip"]["accepted"] is accepted
    int8_version = fp32_version + runtime.INT8_SUFFIX
    active = SpaceVersion.objects.get(space="clip", state=SpaceVersion.State.ACTIVE)
    reloaded = embedders.load("clip")
    if accepted:
        # Every process that loads the space now computes int8, and search reads only the int8 version.
        assert active.version == int8_version == reloaded.version
        assert ImageEmbedding.objects.filter(space="clip", model_version=int8_version).count() == 20
    else:
        assert active.version == fp32_version == reloaded.version
        assert not SpaceVersion.objects.filter(version=int8_version).exists()
        assert not ImageEmbedding.objects.filter(model_version=int8_version).exists()


def test_benchmark_runtimes_reports_each_backend_side_by_side(use_spaces, demo_catalogue, tmp_path):
    use_spaces("cnn", "text")
    out, target = io.StringIO(), tmp_path / "runtimes.json"
    call_command("benchmark", runtimes=True, spaces="cnn,text", backends="torch,onnx,onnx-int8", images=8, repeat=1,
                 query_trials=3, json_out=target, stdout=out)  # fmt: skip
    figures = json.loads(target.read_text())
    cnn = figures["spaces"]["cnn"]
    for backend in ("torch", "onnx"):
        speed = cnn["throughput"][backend]
        assert speed["img_per_s_decode_excluded"] > 0 and speed["img_per_s_decode_included"] > 0
        assert cnn["latency"][backend]["image_query"]["n"] == 3
        assert figures["spaces"]["text"]["latency"][backend]["text_query"]["p50_ms"] > 0
    assert cnn["throughput"]["torch"]["speedup_vs_torch"] == 1.0 and cnn["throughput"]["images"] == 8
    assert "nothing to quantize" in cnn["throughput"]["onnx-int8"]["skipped"]
    table = out.getvalue()
    assert "img/s w/ decode" in table and "cnn     onnx " in table and "text    onnx " in table


def test_worker_processes_times_inference_threads_fit_the_cores(settings, monkeypatch):
    from config.celery import split_cores

    monkeypatch.setenv("VITRINE_TORCH_THREADS", "")
    monkeypatch.delenv("VITRINE_TORCH_THREADS")  # restored to unset afterwards
    settings.VITRINE_CPUS = 8
    assert split_cores(2) == 4 and runtime.inference_threads() == 4  # what the pool's children inherit
    monkeypatch.setenv("VITRINE_TORCH_THREADS", "3")
    assert split_cores(2) == 3  # an explicit value wins
    monkeypatch.delenv("VITRINE_TORCH_THREADS")
    settings.VITRINE_INFERENCE_THREADS = 0
    assert runtime.inference_threads() == runtime.cpu_count()  # reindex --sync, benchmark: every core


LOAD_IN_A_FRESH_PROCESS = """
import json, os, sys
import django
django.setup()
from PIL import Image
from search import embedders
embedder = embedders.load(sys.argv[1])
if sys.argv[2].endswith(".png"):
    vectors = embedder.embed_images([Image.open(sys.argv[2]).convert("RGB")])
else:
    vectors = embedder.embed_texts(json.loads(sys.argv[2]))
print(json.dumps({"torch": "torch" in sys.modules, "backends": sorted(r.backend for r in embedder.runners.values()),
                  "version": embedder.version, "dimension": embedder.dimension, "vectors": vectors.tolist()}))
"""


@pytest.mark.skipif(any(os.path.exists(path) for path in GPU_DRIVER_FILES),
                    reason="with a GPU driver present, choosing the device asks torch")  # fmt: skip
@pytest.mark.parametrize("key", ["cnn", "text", "clip"])
def test_a_cached_export_serves_without_importing_torch(use_spaces, settings, key, tiny_clip):
    """The first process exports the model (and, for text models, saves the tokenizer); the next needs no torch."""
    options = {"clip": {"MODEL": str(tiny_clip), "QUANTIZE": "never"}}.get(key, {})
    use_spaces(key, **({key: options} if options else {}))
    here = embedders.load(key)
    assert {runner.backend for runner in here.runners.values()} == {"onnx"}, here.runtime_label
    photo = sorted(DEMO.glob("*/*"))[0]
    env = {**os.environ, "VITRINE_HOME": str(settings.VITRINE_HOME), "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "VITRINE_CLIP_MODEL": str(tiny_clip), "VITRINE_QUANTIZE": "never"}  # fmt: skip
    data = str(photo) if key == "cnn" else json.dumps(TEXTS)
    result = subprocess.run([sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS, key, data], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    parts = len(here.runners)
    assert (facts["torch"], facts["backends"], facts["version"], facts["dimension"]) == (
        False, ["onnx"] * parts, here.version, here.dimension)  # fmt: skip
    expected = here.embed_images([Image.open(photo).convert("RGB")]) if key == "cnn" else here.embed_texts(TEXTS)
    assert cosines(np.asarray(facts["vectors"]), expected).min() > 0.9999


def test_a_saved_tokenizer_reproduces_the_models_tokens_or_is_not_kept(use_spaces, tmp_path):
    text = embedders.load("text")  # eager or not, st_model() is the sentence-transformers model
    model = text.st_model()
    saved = tokens.save(model[0].tokenizer, text._st_tokenize, folder=tmp_path, name="minilm")
    assert saved is not None and saved.names == ["input_ids", "attention_mask", "token_type_ids"]
    odd = [*TEXTS, "word " * 400, "🙂🙃 ÆØÅ ﬁ ＦＵＬＬ", "\u200b zero\u200bwidth"]
    for batch in (odd, odd[:1], odd[-2:]):
        ours, theirs = tokens.load(tmp_path, "minilm")(batch), text._st_tokenize(batch)  # type: ignore[misc]
        assert all(np.array_equal(ours[k], theirs[k]) for k in saved.names)

    def truncating_elsewhere(batch: list[str]) -> dict[str, np.ndarray]:
        return {k: v[:, :50] for k, v in text._st_tokenize(batch).items()}  # a model that cuts at 50 tokens…

    # …but whose short texts pad to another width than the saved tokenizer would give: refused, nothing written.
    assert tokens.save(model[0].tokenizer, truncating_elsewhere, folder=tmp_path / "other", name="x") is None
    assert not (tmp_path / "other").exists()


MAPPED_IN_A_FRESH_PROCESS = """
import sys, django
django.setup()
from search import embedders
embedder = embedders.load("cnn")
maps = open("/proc/self/maps").read()
print("MAPPED" if sys.argv[1] in maps else "NOT MAPPED", "torch" in sys.modules)
"""


def test_an_export_keeps_its_weights_beside_the_graph_and_processes_map_them(use_spaces, settings, tmp_path):
    """Weights in a file of their own are mapped by ONNX Runtime, not copied: the web workers and the pool share
    them, and pages no query touches stay on disk. An export in an older format is replaced, not kept."""
    settings.VITRINE_HOME = tmp_path
    stale = runtime.cache_dir() / "cnn-image-efficientnet-lite0-a5f21c0d0312-v1.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an export in the format before")
    use_spaces("cnn", cnn={"RUNTIME": "onnx", "QUANTIZE": "never"})
    cnn = embedders.load("cnn")
    path = cnn.runners["image"].path
    assert path is not None and path.name.endswith(f"-{runtime.EXPORT_FORMAT}.onnx")
    weights = path.parent / cnn.runners["image"].details["weights"]
    assert weights.is_file() and weights.stat().st_size > 10 * path.stat().st_size  # the graph is small, apart
    assert not stale.exists()
    env = {**os.environ, "VITRINE_HOME": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    result = subprocess.run([sys.executable, "-c", MAPPED_IN_A_FRESH_PROCESS, str(weights)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["MAPPED", "False"]


UNAVAILABLE_IN_A_FRESH_PROCESS = """
import sys, django
django.setup()
from search import embedders
try:
    embedders.load("simclr")
except embedders.SpaceUnavailable as exc:
    print("UNAVAILABLE", "torch" in sys.modules)
"""


def test_a_space_whose_checkpoint_cannot_be_had_never_imports_torch(settings, tmp_path):
    """Offline, the published SimCLR checkpoint cannot be fetched: the space is unavailable, and the worker that
    found out does not carry PyTorch (about 500 MB) for nothing when its other spaces serve from ONNX exports."""
    env = {**os.environ, "VITRINE_HOME": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "VITRINE_SIMCLR_CHECKPOINT": "http://127.0.0.1:9/simclr.ckpt"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", UNAVAILABLE_IN_A_FRESH_PROCESS], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["UNAVAILABLE", "False"]
