"""Tiny, offline stand-ins for the two published models Vitrine's visual search loads.

Both builders write files in the *on-disk format of the real thing*, so the production loaders run unchanged
against them; only the sizes (CLIP) or the values (SimCLR) are fake. Nothing touches the network, and both are
deterministic given ``seed`` (the global torch RNG is left as it was).

``build_tiny_clip`` — layout of ``sentence-transformers/clip-ViT-B-32``
------------------------------------------------------------------------
The published repository keeps the Hugging Face files in a ``0_CLIPModel/`` sub-folder::

    modules.json                       [{"idx": 0, "name": "0", "path": "0_CLIPModel",
                                         "type": "sentence_transformers.models.CLIPModel"}]
    config_sentence_transformers.json  {"__version__": {"sentence_transformers": "2.0.0", ...}}
    0_CLIPModel/config.json            transformers ``CLIPConfig``
    0_CLIPModel/model.safetensors      (the real repo also has the older ``pytorch_model.bin``)
    0_CLIPModel/preprocessor_config.json  legacy form: "feature_extractor_type": "CLIPFeatureExtractor",
                                          integer "size"/"crop_size"
    0_CLIPModel/vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json   (no tokenizer.json)

``module_path=""`` writes the flat variant (HF files next to ``modules.json``); both load the same way.

In sentence-transformers 6.2 the legacy type string resolves through
``sentence_transformers.util.deprecated_import`` (``sentence_transformers.models.CLIPModel`` →
``sentence_transformers.sentence_transformer.modules.clip_model.CLIPModel``, imported with DeprecationWarnings
suppressed), a thin subclass of the generic multimodal ``Transformer`` module; loaded from disk it logs nothing
(its "CLIPModel module is deprecated" warning fires only when constructed by hand). The loaded model reports
modalities ``['text', 'image']`` and ``get_embedding_dimension() == projection_dim``
(``get_sentence_embedding_dimension()`` still works but emits a ``FutureWarning``).

Encoding with sentence-transformers 6.2 (``model = SentenceTransformer(str(path), device="cpu")``)::

    model.encode([pil_a, pil_b], normalize_embeddings=True)      # (2, projection_dim) float32 ndarray
    model.encode(["a red dress", "jeans"], normalize_embeddings=True)
    model.encode(pil_a)                                          # one input -> shape (projection_dim,)

PIL images (any mode/size; the processor converts to RGB, resizes and centre-crops) go straight into ``encode``;
``{"image": pil}`` / ``{"text": str}`` dicts also work. A single batch must hold ONE modality: mixing images
and strings raises ``ValueError: This batch mixes multiple modalities``. Embeddings equal
``CLIPModel.get_image_features`` / ``get_text_features`` exactly. Loading prints a tqdm "Loading weights" bar on
stderr unless ``HF_HUB_DISABLE_PROGRESS_BARS=1`` is set before transformers is imported.

``write_bolts_simclr_checkpoint`` — Lightning Bolts' ``simclr_imagenet.ckpt``
------------------------------------------------------------------------------
``pl_bolts.models.self_supervised.SimCLR`` (bolts ≥ 0.2.5) is a ``LightningModule`` with
``encoder = resnets.resnet50(first_conv=..., maxpool1=..., return_all_feature_maps=False)`` and
``projection = Projection(input_dim=hidden_mlp, hidden_dim=hidden_mlp, output_dim=feat_dim)``; the ImageNet
run also used ``SSLOnlineEvaluator`` which, in the bolts of that time, attached
``pl_module.non_linear_evaluator = SSLEvaluator(n_input=2048, n_classes=1000, n_hidden=None)`` to the module,
so its linear probe ends up in ``state_dict`` too (why bolts' docs load it with ``strict=False``).
The file is a ``torch.save``d dict::

    epoch, global_step, pytorch-lightning_version, state_dict, callbacks, optimizer_states,
    lr_schedulers, native_amp_scaling_state, hparams_name ("kwargs"), hyper_parameters

``state_dict`` (an ``OrderedDict``)::

    encoder.conv1.weight                  [64, 3, 7, 7]   ([64, 3, 3, 3] when first_conv=False)
    encoder.bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
    encoder.layer1.0.conv1.weight … encoder.layer4.2.bn3.num_batches_tracked
    encoder.layer{1..4}.0.downsample.{0.weight,1.*}
    encoder.fc.weight [1000, 2048], encoder.fc.bias [1000]
    projection.model.0.weight [2048, 2048], projection.model.0.bias [2048]      Linear (bias)
    projection.model.1.{weight,bias,running_mean,running_var,num_batches_tracked}  BatchNorm1d(2048)
    projection.model.3.weight [128, 2048]                                        Linear (bias=False); 2 is ReLU
    non_linear_evaluator.block_forward.2.{weight [1000, 2048], bias [1000]}     (online_evaluator=True)

Bolts' ``resnets.ResNet`` uses torchvision's attribute names (``conv1, bn1, layer1..4`` of ``Bottleneck``
``conv1..3/bn1..3/downsample.0/.1``, ``avgpool, fc``), so after stripping ``encoder.`` the keys and shapes match
``torchvision.models.resnet50()`` one for one, ``fc`` included. Differences: bolts' ``forward`` returns
``[avgpool(layer4).flatten(1)]`` (a 2048-d feature in a list) and never applies ``fc``, so ``encoder.fc.*`` is
an untrained random 1000-way head that loaders should drop; ``first_conv=False`` replaces the 7×7/stride-2/pad-3
stem with ``Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)`` (CIFAR-style, only
``conv1.weight``'s shape changes); ``maxpool1=False`` replaces the 3×3/stride-2 max-pool with
``MaxPool2d(kernel_size=1, stride=1)``, an identity without state (``nn.Identity()`` is equivalent). The
published ImageNet checkpoint has ``first_conv=True, maxpool1=True, hidden_mlp=2048, feat_dim=128``.

``weights_only=True`` and the real file: PyTorch Lightning 1.x (before 1.5) stored callback states keyed by the
callback *class* (``checkpoint["callbacks"] = {ModelCheckpoint: {...}}``, see ``Callback._legacy_state_key``),
so ``torch.load(..., weights_only=True)`` on the published file should stop at
``Unsupported global: GLOBAL pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``. PL 0.9/1.0-era
``dump_checkpoint`` also pickled ``model.hparams`` itself (``pytorch_lightning.utilities.parsing.AttributeDict``)
when omegaconf was installed; PL ≥ 1.1 saves ``dict(model.hparams)``. Both can be allow-listed without
importing Lightning::

    with torch.serialization.safe_globals([
        (StubClass, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),  # only used as a dict key
        (dict, "pytorch_lightning.utilities.parsing.AttributeDict"),                  # rebuilt as a plain dict
    ]):
        torch.load(path, map_location="cpu", weights_only=True)

A ``dict`` *subclass* stand-in for ``AttributeDict`` does not work: torch's weights-only unpickler only allows
SETITEMS on exact ``dict``/``OrderedDict``/``Counter`` ("Can only SETITEMS for dict, ..."). (Inferred from the
Lightning and bolts sources and checked on a file pickled with stand-ins of those classes; the published binary
itself was not inspected.) The file written here uses builtins only: ``callbacks`` is ``{}`` and
``optimizer_states``/``lr_schedulers`` are empty, so it loads with ``weights_only=True`` and no allow-listing.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

CLIP_MODULE_DIR = "0_CLIPModel"
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table (what ``ByteLevel`` pre-tokenisation emits)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def _tiny_clip_vocab() -> dict[str, int]:
    """256 byte characters, the same 256 with ``</w>`` (word end), then the two specials (514 entries)."""
    chars = list(_bytes_to_unicode().values())
    vocab = {char: i for i, char in enumerate(chars)}
    vocab.update({f"{char}</w>": 256 + i for i, char in enumerate(chars)})
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_tiny_clip(
    path: Path,
    *,
    projection_dim: int = 16,
    image_size: int = 32,
    seed: int = 0,
    module_path: str = CLIP_MODULE_DIR,
    full_size: bool = False,
) -> Path:
    """Write a tiny random CLIP in the layout of ``sentence-transformers/clip-ViT-B-32``; return ``path``.

    ``full_size=True`` writes ViT-B/32's shapes instead (transformers' ``CLIPConfig`` defaults: 12-layer
    768-wide vision tower on 224 px with 32-px patches, 12-layer 512-wide text tower, 512-d projection), still
    random and with the tiny vocabulary: right for speed measurements (``manage.py benchmark``), not for search.

    Text and vision towers have hidden size 32, 2 layers, 2 heads, MLP 64; the vision tower uses 8-pixel
    patches on ``image_size`` pixels. ``module_path=""`` puts the HF files at the top level instead of in
    ``0_CLIPModel/``. Load it with ``SentenceTransformer(str(path), device="cpu")`` (works offline).
    """
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    module_dir = path / module_path if module_path else path
    module_dir.mkdir(parents=True, exist_ok=True)

    vocab = _tiny_clip_vocab()
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    if full_size:
        tiny, projection_dim, image_size = {}, 512, 224
    config = CLIPConfig(
        text_config={
            **tiny,
            "vocab_size": len(vocab),
            "max_position_embeddings": 77,
            "projection_dim": projection_dim,
            "bos_token_id": vocab[BOS_TOKEN],
            "eos_token_id": vocab[EOS_TOKEN],
            "pad_token_id": vocab[EOS_TOKEN],
        },
        vision_config={
            **tiny,
            "image_size": image_size,
            "patch_size": 32 if full_size else 8,
            "projection_dim": projection_dim,
        },
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    config.save_pretrained(module_dir)
    weights = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, str(module_dir / "model.safetensors"), metadata={"format": "pt"})

    special_tokens = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    _write_json(module_dir / "vocab.json", vocab)
    (module_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    _write_json(module_dir / "special_tokens_map.json", special_tokens)
    _write_json(
        module_dir / "tokenizer_config.json",
        {
            **special_tokens,
            "add_prefix_space": False,
            "errors": "replace",
            "do_lower_case": True,
            "model_max_length": 77,
            "tokenizer_class": "CLIPTokenizer",
        },
    )
    _write_json(
        module_dir / "preprocessor_config.json",
        {
            "crop_size": image_size,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": OPENAI_CLIP_MEAN,
            "image_std": OPENAI_CLIP_STD,
            "resample": 3,
            "size": image_size,
        },
    )
    _write_json(
        path / "modules.json",
        [{"idx": 0, "name": "0", "path": module_path, "type": "sentence_transformers.models.CLIPModel"}],
    )
    _write_json(
        path / "config_sentence_transformers.json",
        {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.7.0", "pytorch": "1.9.0+cu102"}},
    )
    return path


def _bolts_simclr_hyper_parameters(*, first_conv: bool, maxpool1: bool) -> dict[str, Any]:
    """``dict(SimCLR.hparams)`` of bolts' ImageNet run (``cli_main`` with ``--dataset imagenet``), builtins only."""
    return {
        "gpus": 8,
        "num_samples": 1_231_167,  # ImageNet train minus bolts' 50 images per class held out for validation
        "batch_size": 64,
        "dataset": "imagenet",
        "num_nodes": 8,
        "arch": "resnet50",
        "hidden_mlp": 2048,
        "feat_dim": 128,
        "warmup_epochs": 10,
        "max_epochs": 800,
        "temperature": 0.1,
        "first_conv": first_conv,
        "maxpool1": maxpool1,
        "optimizer": "lars",
        "exclude_bn_bias": True,
        "start_lr": 0.3,
        "learning_rate": 4.8,
        "final_lr": 0.0048,
        "weight_decay": 1e-06,
        # the rest of the argparse namespace, flattened in through **kwargs by save_hyperparameters()
        "online_ft": True,
        "fp32": False,
        "gaussian_blur": True,
        "jitter_strength": 1.0,
        "data_dir": ".",
        "fast_dev_run": False,
        "num_workers": 8,
        "max_steps": -1,
        "input_height": 224,
    }


def _randomise_batch_norms(module: torch.nn.Module, *, batches_seen: int) -> None:
    """Give every BatchNorm non-default affine parameters and running statistics (drawn from the current RNG)."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            with torch.no_grad():
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.normal_(0.0, 0.1)
                layer.running_mean.normal_(0.0, 0.1)
                layer.running_var.uniform_(0.5, 1.5)
                layer.num_batches_tracked.fill_(batches_seen)


def write_bolts_simclr_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    first_conv: bool = True,
    maxpool1: bool = True,
    online_evaluator: bool = True,
) -> dict[str, torch.Tensor]:
    """Write a random-weight checkpoint in the format of Lightning Bolts' ``simclr_imagenet.ckpt``.

    Returns the encoder's weights as torchvision ``resnet50`` keys (no ``encoder.`` prefix, no ``fc.*``), for
    comparing with what a loader restored. ``online_evaluator`` adds bolts' online linear probe
    (``non_linear_evaluator.*``). The file (~130 MB) loads with ``torch.load(path, weights_only=True)``.
    """
    from torchvision.models import resnet50

    path = Path(path)
    epoch, steps_per_epoch = 799, 1_231_167 // (64 * 8 * 8)
    global_step = (epoch + 1) * steps_per_epoch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = resnet50()
        if not first_conv:
            encoder.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            torch.nn.init.kaiming_normal_(encoder.conv1.weight, mode="fan_out", nonlinearity="relu")
        if not maxpool1:
            encoder.maxpool = torch.nn.MaxPool2d(kernel_size=1, stride=1)
        projection = torch.nn.Sequential(
            torch.nn.Linear(2048, 2048),
            torch.nn.BatchNorm1d(2048),
            torch.nn.ReLU(),
            torch.nn.Linear(2048, 128, bias=False),
        )
        _randomise_batch_norms(encoder, batches_seen=global_step)
        _randomise_batch_norms(projection, batches_seen=global_step)
        probe = torch.nn.Linear(2048, 1000) if online_evaluator else None

    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    encoder_state = encoder.state_dict()
    state_dict.update((f"encoder.{name}", tensor) for name, tensor in encoder_state.items())
    state_dict.update((f"projection.model.{name}", tensor) for name, tensor in projection.state_dict().items())
    if probe is not None:
        state_dict.update((f"non_linear_evaluator.block_forward.2.{n}", t) for n, t in probe.state_dict().items())

    checkpoint: dict[str, Any] = {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": "1.1.0",
        "state_dict": state_dict,
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "native_amp_scaling_state": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        },
        "hparams_name": "kwargs",
        "hyper_parameters": _bolts_simclr_hyper_parameters(first_conv=first_conv, maxpool1=maxpool1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return {name: tensor for name, tensor in encoder_state.items() if not name.startswith("fc.")}
