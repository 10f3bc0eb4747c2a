"""Where an embedder's forward pass runs: eager PyTorch or ONNX Runtime (fp32, or dynamic int8).

Each embedder describes its model once, as a :class:`ModelSpec`: a ``torch.nn.Module`` that maps named
numpy inputs (``pixel_values``, or ``input_ids``/``attention_mask``…) to unnormalised features, plus an
example batch. :func:`runner_build` turns that into a callable:

* ``runtime="torch"``: the module itself, in inference mode (the eager baseline and the fallback);
* ``runtime="onnx"``: the module exported once to ``$VITRINE_HOME/models/onnx/`` (file name keyed by the
  space, the model version, which fingerprints the weights, and :data:`EXPORT_FORMAT`), checked against
  the module on a batch of another size before it is cached, and served by an ONNX Runtime session;
* ``quantize=True``: the fp32 export, dynamically quantized to int8 weights (``quantize_dynamic``).

Anything that goes wrong on the ONNX path (``onnxruntime`` missing, an export that fails or disagrees
with PyTorch) is logged and the module runs in PyTorch instead; ``Runner.fallback_reason`` keeps why.

Vectors: fp32 ONNX reproduces PyTorch to cosine ≥ 0.999 (checked at export, :data:`AGREEMENT`), so a
space keeps one model version across the two runtimes and switching needs no reindex. int8 does not
reproduce it that closely, so a quantized space is another version (:data:`INT8_SUFFIX`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from search.embedders.errors import SpaceUnavailable

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")
# Bump when the exported graph of any space changes shape or meaning (wrappers, opset) or how it is stored: old
# files are ignored. v2: weights in a file beside the graph (see _externalise).
EXPORT_FORMAT = "v2"
OPSET = 17
AGREEMENT = 0.999
INT8_SUFFIX = "-int8"


class ExportFailed(Exception):
    """The ONNX path cannot serve this model; ``str()`` says why (shown in logs and the admin)."""


@dataclass
class ModelSpec:
    """What the runtime layer needs from an embedder.

    ``module(*inputs)`` takes tensors in the order of ``example``'s keys and returns (n, d) features.
    ``dynamic`` names the axes that vary per input (``{"pixel_values": {0: "batch"}}``).
    ``check`` is a second input set of other sizes, used to prove the export is not shape-frozen.
    """

    module: Any
    example: dict[str, np.ndarray]
    dynamic: dict[str, dict[int, str]]
    check: dict[str, np.ndarray] | None = None


@dataclass
class Runner:
    """A forward pass: named numpy inputs in, float32 (n, d) features out."""

    backend: str  # "torch", "onnx" or "onnx-int8"
    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    fallback_reason: str = ""
    path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.run(inputs)

    @property
    def label(self) -> str:
        if self.fallback_reason:
            return f"torch (ONNX unavailable: {self.fallback_reason})"
        return self.backend


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def inference_threads() -> int:
    """Intra-op threads for torch and ONNX Runtime in this process.

    ``VITRINE_TORCH_THREADS`` wins (web workers and Celery children set it so processes × threads =
    cores); else ``settings.VITRINE_INFERENCE_THREADS``; else every core this process may use.
    """
    configured = os.environ.get("VITRINE_TORCH_THREADS") or settings.VITRINE_INFERENCE_THREADS
    return max(1, int(configured)) if configured else cpu_count()


def inference_streams() -> int:
    """Forward passes a bulk job keeps running at once in this process (``settings.VITRINE_INFERENCE_STREAMS``,
    0 = one per inference thread); each gets ``inference_threads() // streams`` intra-op threads.

    On CPU cores that decode threads and the database share, separate single-threaded passes beat one pass
    split across threads: a split operator waits for its slowest thread, and with other work on the cores
    one of them is always late. EfficientNet-Lite0 in ONNX Runtime, 2 cores, batches of 32, a decode load
    on one core: 1 pass x 2 threads 114 img/s, 2 passes x 1 thread 163 img/s (both ~220 img/s when idle).
    """
    threads = inference_threads()
    configured = int(settings.VITRINE_INFERENCE_STREAMS or 0)
    return max(1, min(threads, configured)) if configured > 0 else threads


def stream_threads() -> int:
    """Intra-op threads of each forward pass: the process's inference threads shared among its streams."""
    return max(1, inference_threads() // inference_streams())


def cache_dir() -> Path:
    return Path(settings.VITRINE_HOME) / "models" / "onnx"


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _torch_run(module: Any, names: list[str], device: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    import torch

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[name])).to(device) for name in names]
        with torch.inference_mode():
            out = module(*tensors)
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    return run


def torch_runner(spec: ModelSpec, *, device: str = "cpu", fallback_reason: str = "") -> Runner:
    module = spec.module.to(device).eval()
    return Runner(backend="torch", run=_torch_run(module, list(spec.example), device),
                  fallback_reason=fallback_reason)  # fmt: skip


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.asarray((a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12))


def _export(spec: ModelSpec, target: Path) -> str:
    """Write ``spec.module`` as ONNX to ``target``; returns which exporter did it.

    The TorchScript-based exporter goes first: it handles the Hugging Face towers here (torch 2.14's
    dynamo exporter writes an invalid graph for sentence-transformers' pooling: a duplicated output
    name). The dynamo exporter is the second try, for modules the tracer cannot take.
    """
    import warnings

    import torch

    names = list(spec.example)
    args = tuple(torch.from_numpy(np.ascontiguousarray(spec.example[name])) for name in names)
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer chatter; the agreement check below is the real test
                if dynamo:
                    dims: dict[str, Any] = {}
                    shapes = {name: {axis: dims.setdefault(label, torch.export.Dim(label))
                                     for axis, label in spec.dynamic.get(name, {}).items()}
                              for name in names}  # fmt: skip
                    torch.onnx.export(spec.module, args, str(target), input_names=names, output_names=["features"],
                                      dynamic_shapes=shapes, dynamo=True, external_data=False,
                                      verbose=False)  # fmt: skip
                else:
                    axes = {name: dict(spec.dynamic.get(name, {})) for name in names}
                    axes["features"] = {0: "batch"}
                    torch.onnx.export(spec.module, args, str(target), input_names=names, output_names=["features"],
                                      dynamic_axes=axes, dynamo=False, opset_version=OPSET,
                                      external_data=False)  # fmt: skip
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(exc).__name__}: {first_line}")
            target.unlink(missing_ok=True)
    raise ExportFailed("; ".join(errors))


def _session(path: Path, *, threads: int, device: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Operators run one after another; parallelism comes from intra-op threads, from bulk jobs running
    # inference_streams() batches at once (sessions are thread-safe) and from Celery processes.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning intra-op threads burn the cores the decode threads need between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _onnx_run(session: Any) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    import onnxruntime as ort

    # The exporter drops inputs the graph does not use (e.g. token_type_ids of some models).
    wanted = [i.name for i in session.get_inputs()]
    # A batch of one (a shopper's query, one upload) hands its activations back to the system when it is done: a
    # web worker answers a photo search now and then, and should not keep that memory in between. Bulk batches
    # keep ONNX Runtime's arena, which the next batch of the same size reuses.
    single = ort.RunOptions()
    single.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(inputs[name]) for name in wanted}
        options = single if wanted and len(feed[wanted[0]]) == 1 else None
        return np.asarray(session.run(None, feed, options)[0], dtype=np.float32)

    return run


_export_lock = threading.Lock()


def _exported(spec_factory: Callable[[], ModelSpec], *, name: str, device: str) -> tuple[Path, dict[str, Any]]:
    """The cached fp32 export for ``name``, made (and checked against PyTorch) if absent.

    ``spec_factory`` is called only to export: a cached file needs no PyTorch module, so a process that
    finds one never imports torch (about 1.5 s of a worker's or ``reindex``'s start here).
    """
    folder = cache_dir()
    path = folder / f"{name}.onnx"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        return path, json.loads(meta_path.read_text())
    with _export_lock:
        if path.is_file() and meta_path.is_file():
            return path, json.loads(meta_path.read_text())
        spec = spec_factory()
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.{os.getpid()}.onnx"
        started = time.perf_counter()
        spec.module.cpu().eval()  # export and check on the CPU; the runner moves it back
        exporter = _export(spec, partial)
        try:
            worst = _agreement(spec, partial)
        except Exception:
            partial.unlink(missing_ok=True)
            raise
        finally:
            spec.module.to(device)
        if worst < AGREEMENT:
            partial.unlink(missing_ok=True)
            raise ExportFailed(f"the ONNX export disagrees with PyTorch (cosine {worst:.5f} < {AGREEMENT})")
        try:
            weights = _externalise(partial, name)
        except Exception:
            partial.unlink(missing_ok=True)
            raise
        meta = {"exporter": exporter, "cosine_min": worst, "export_s": round(time.perf_counter() - started, 2),
                "torch": _version("torch"), "onnxruntime": _version("onnxruntime"), "weights": weights}  # fmt: skip
        partial.replace(path)  # atomic: other processes see a whole graph (its weights are already there) or none
        _forget_older_formats(folder, name)
        meta_path.write_text(json.dumps(meta, indent=2))
        logger.info("exported %s to ONNX in %.1f s (%s exporter, min cosine vs PyTorch %.6f)", name,
                    meta["export_s"], exporter, worst)  # fmt: skip
        return path, meta


def _externalise(partial: Path, name: str) -> str:
    """Move the weights of the export at ``partial`` into a file of their own beside it; returns that file's name.

    ONNX Runtime maps such a file instead of reading it into its own memory: the processes that load one model
    (web workers, the Celery pool) share its pages, and pages no input touches are never read, such as most of a
    text model's vocabulary table (MiniLM's is 47 MB of its 90). The name is unique to this export, so two
    processes exporting at once never write one file; the graph names it, and the graph is renamed into place last.
    """
    import onnx

    weights = f"{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.weights"
    model = onnx.load(str(partial))
    onnx.save_model(model, str(partial), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=weights, size_threshold=1024)  # fmt: skip
    (partial.parent / weights).chmod(0o644)  # readable like the graph (onnx writes it private)
    return weights


def _forget_older_formats(folder: Path, name: str) -> None:
    """Delete this model's exports in earlier formats (``…-v1.onnx`` and its files): nothing reads them again."""
    base, _, current = name.rpartition("-")
    for old in folder.glob(f"{base}-v*"):
        form = old.name[len(base) + 1 :].split(".", 1)[0]
        if form != current and form.startswith("v") and form[1:].isdigit():
            old.unlink(missing_ok=True)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def _agreement(spec: ModelSpec, path: Path) -> float:
    """Smallest cosine between ONNX Runtime and PyTorch features over the example and check batches."""
    session = _session(path, threads=inference_threads(), device="cpu")
    reference = _torch_run(spec.module.cpu().eval(), list(spec.example), "cpu")
    worst = 1.0
    for inputs in (spec.example, spec.check):
        if inputs is not None:
            got, want = _onnx_run(session)(inputs), reference(inputs)
            if got.shape != want.shape:  # a trace that froze the batch size
                raise ExportFailed(f"the ONNX export disagrees with PyTorch: shape {got.shape}, not {want.shape}")
            worst = min(worst, float(_cosines(got, want).min()))
    return worst


# Dynamic int8 pays off for weight-heavy matrix products (transformers: CLIP's towers). Convolutions stay
# fp32: ONNX Runtime's ConvInteger ran EfficientNet-Lite0 9x slower than fp32 on our 2-core machine, and
# per-tensor int8 weights in depthwise convolutions cost it up to 0.4 in cosine.
QUANTIZED_OPS = ["MatMul", "Gemm"]


def quantized(path: Path) -> Path:
    """The dynamic int8 version of an fp32 export (int8 weights, activations quantized per batch).

    Raises :class:`ExportFailed` when the model has no matrix product to quantize (a CNN).
    """
    target = path.with_name(path.stem + ".int8.onnx")
    if target.is_file():
        return target
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _export_lock:
        if target.is_file():
            return target
        partial = path.with_name(f".{path.stem}.{os.getpid()}.int8.onnx")
        # The quantizer logs every tensor it skips on the root logger: hundreds of lines that say nothing here.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(str(path), str(partial), weight_type=QuantType.QInt8,
                             op_types_to_quantize=QUANTIZED_OPS)  # fmt: skip
        finally:
            logging.disable(logging.NOTSET)
        graph = onnx.load(str(partial), load_external_data=False).graph
        if not any(node.op_type in {"MatMulInteger", "DynamicQuantizeMatMul"} for node in graph.node):
            partial.unlink(missing_ok=True)
            raise ExportFailed("nothing to quantize: dynamic int8 covers MatMul/Gemm weights and this model's "
                               "work is in convolutions, which stay fp32")  # fmt: skip
        partial.replace(target)
    return target


def runner_build(spec_factory: Callable[[], ModelSpec], *, name: str, runtime: str, device: str = "cpu",
                 quantize: bool = False) -> Runner:  # fmt: skip
    """A runner for the model ``spec_factory`` describes; see the module docstring.

    ``name`` keys the cache: space, part (image/text tower) and model version, e.g. ``cnn-efficientnet-lite0-ab12``.
    """
    if runtime not in RUNTIMES:
        raise ExportFailed(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return torch_runner(spec_factory(), device=device)
    try:
        if not onnx_available():
            raise ExportFailed("onnxruntime is not installed")
        path, meta = _exported(spec_factory, name=f"{safe_name(name)}-{EXPORT_FORMAT}", device=device)
        backend = "onnx"
        if quantize:
            try:
                path, backend = quantized(path), "onnx-int8"
            except Exception as exc:  # int8 refused: fp32 ONNX still serves, under the fp32 version
                meta = {**meta, "int8_refused": str(exc)}
                logger.warning("%s: int8 not used: %s", name, exc)
        session = _session(path, threads=stream_threads(), device=device)
    except SpaceUnavailable:
        raise  # the model itself cannot be built: PyTorch could not serve it either
    except Exception as exc:  # any failure here leaves PyTorch, which always works
        reason = str(exc) if isinstance(exc, ExportFailed) else f"{type(exc).__name__}: {str(exc)[:300]}"
        logger.warning("%s: ONNX Runtime not used, running in PyTorch: %s", name, reason)
        return torch_runner(spec_factory(), device=device, fallback_reason=reason)
    return Runner(backend=backend, run=_onnx_run(session), path=path, details=meta)


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:180]


# --- the int8 decision, per space ------------------------------------------------------------------


def decisions_path() -> Path:
    return cache_dir() / "quantization.json"


def quantization_decisions() -> dict[str, dict[str, Any]]:
    path = decisions_path()
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return {}


def quantization_accepted(*, space: str, version: str) -> bool:
    """Did ``manage.py quantize`` accept int8 for this space's fp32 ``version``?"""
    decision = quantization_decisions().get(space) or {}
    return bool(decision.get("accepted")) and decision.get("fp32_version") == version


def quantization_record(*, space: str, decision: dict[str, Any]) -> None:
    decisions = quantization_decisions()
    decisions[space] = decision
    path = decisions_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(decisions, indent=2, sort_keys=True))
    partial.replace(path)
