"""Run every torch-backed embedding space on CUDA and on the CPU and compare.

For a machine with a GPU. Prints, per space: the device "auto" picked, the lowest
per-image cosine between CUDA and CPU vectors of the same images, and forward
throughput on each device at one batch size. Uses the real EfficientNet-Lite0
weights, and a tiny CLIP and a SimCLR checkpoint written in their published
formats (as the tests do), so it needs no model hub.

    python scripts/check_gpu_embedders.py [--batch-size 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import django
    from django.conf import settings

    home = Path(tempfile.mkdtemp(prefix="vitrine-gpu-"))
    settings.configure(VITRINE_HOME=home, VITRINE_SPACES={}, VITRINE_ENABLED_SPACES=[])
    django.setup()
    import torch

    from catalog.imaging import to_rgb
    from search.embedders.cnn import EfficientNetLite0Embedder
    from search.embedders.sentence import ClipEmbedder
    from search.embedders.simclr import SimCLREmbedder
    from tests.search.tinymodels import build_tiny_clip, write_bolts_simclr_checkpoint

    images = [to_rgb(Image.open(p)) for p in sorted((ROOT / "demo" / "images").glob("*/*.png"))[::15]]
    spaces = {
        "cnn": (EfficientNetLite0Embedder, {}),
        "clip (tiny)": (ClipEmbedder, {"MODEL": str(build_tiny_clip(home / "tiny-clip"))}),
        "simclr": (SimCLREmbedder, {"CHECKPOINT": str(home / "simclr.ckpt")}),
    }
    write_bolts_simclr_checkpoint(home / "simclr.ckpt", seed=1)
    report: dict[str, object] = {
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    for name, (cls, options) in spaces.items():
        vectors, rates = {}, {}
        auto = cls(name, dict(options))
        auto.load()
        for device in devices:
            embedder = cls(name, {**options, "DEVICE": device, "BATCH_SIZE": args.batch_size})
            embedder.load()
            vectors[device] = embedder.embed_images(images)
            batch = [embedder.preprocess(images[i % len(images)]) for i in range(args.batch_size)]
            embedder.encode_batch(batch)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            started, rounds = time.perf_counter(), 0
            while time.perf_counter() - started < 3.0:
                embedder.encode_batch(batch)
                rounds += 1
            if device == "cuda":
                torch.cuda.synchronize()
            rates[device] = rounds * args.batch_size / (time.perf_counter() - started)
        other = vectors.get("cuda", vectors["cpu"])
        agreement = float(np.min(np.sum(vectors["cpu"] * other, axis=1)))
        report[name] = {"auto_device": auto.device, "dimension": auto.dimension, "images": len(images),
                        "min_cosine_cpu_vs_cuda": agreement, "img_per_s": rates}  # fmt: skip
        print(
            f"{name:12} auto={auto.device:5} min cos(cpu, cuda)={agreement:.6f} "
            f"cpu {rates['cpu']:.0f} img/s, cuda {rates.get('cuda', 0):.0f} img/s (batch {args.batch_size})"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
