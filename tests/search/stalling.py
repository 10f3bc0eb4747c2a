"""An embedding space that stalls inside its first batch, so a test can kill a worker mid-embedding.

The real pixels model, plus two files named in its options: ``MARKER``, created (with the pid) by
the first batch ever, which then sleeps instead of finishing; and ``LOG``, one line per finished
batch (``pid n_images``). Later batches, in any process, see the marker and run normally.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from search.embedders.pixels import PixelsEmbedder


class StallingPixelsEmbedder(PixelsEmbedder):
    @property
    def model_id(self) -> str:
        return "stalling-raw-pixels"

    def _load(self) -> None:
        super()._load()
        self.version = "stalling-pixels-v1"

    def encode_batch(self, batch: list[Any]) -> np.ndarray:
        try:
            fd = os.open(self.options["MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            vectors = super().encode_batch(batch)
            with Path(self.options["LOG"]).open("a") as log:
                log.write(f"{os.getpid()} {len(batch)}\n")
            return vectors
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(600)  # "mid-embedding" until the test kills this process
        raise AssertionError("the test should have killed this worker")
