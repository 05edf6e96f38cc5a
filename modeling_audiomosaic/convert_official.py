"""Convert an AudioMosaic checkpoint of the authors' code (`HanxunH/AudioMosaic`) into a transformers folder.

SRC is a state-dict file (`.pt` / `.pth` / `.bin`, read with `torch.load(weights_only=True)` so no code is
ever unpickled, or `.safetensors`), one of the authors' Hub release folders (`config.json` with `model_class`,
constructor arguments and `audio_preprocessing`, plus `model.safetensors`), or the Hub id of such a release
(`hanxunh/AudioMosaic-vit-b16-finetune-as20k`), fetched with `huggingface_hub.snapshot_download` (its cache,
`HF_HUB_OFFLINE` and token handling). For the authors' 14 releases (`releases.py`) the converter also knows the
labels, the problem type and the head type; `--all-releases` converts them all, with a model card each. The kind of checkpoint (pretrained
encoder + projector, classifier, layer / weighted-sum / attentive probe, AASIST) is detected from the keys, the sizes
from the tensor shapes. The output folder holds `config.json` (with `auto_map`), `model.safetensors`,
`preprocessor_config.json` with that checkpoint's normalisation and length, and the code files for
`trust_remote_code=True`.

    audiomosaic convert-official model_state_dict.pt converted/ --labels class_labels_indices.csv
    audiomosaic convert-official hanxunh/AudioMosaic-vit-b16-finetune-as20k as20k/ --verify
    audiomosaic convert-official --all-releases converted/ [--push-to NAMESPACE]
    python -m modeling_audiomosaic.convert_official SRC OUT_DIR

`--verify` imports the release's own `modeling.py` (the authors' code: it executes) and compares its forward pass with
ours on the same input; a conversion whose max |error| exceeds 1e-4 fails. Without it only key coverage and shapes
are checked.
"""

import argparse
import csv
import importlib.resources
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from .caching import atomic_folder
from .configuration_audiomosaic import AudioMosaicConfig
from .feature_extraction_audiomosaic import AudioMosaicFeatureExtractor
from .inputs import command_parser
from .modeling_audiomosaic import AudioMosaicForAudioClassification, AudioMosaicForPreTraining
from .releases import AUTHORS_SOURCE, RELEASES, Release, labels_file, release_for
from .validation import (
    check_value,
    corrupt_file,
    existing_file,
    from_hub,
    integer,
    output_folder,
    read_safetensors,
    read_torch_weights,
)


logger = logging.getLogger(__name__)


# Official key -> our key. Encoder keys get the `audiomosaic.` prefix of the task models.
KEY_RENAMES = [
    (r"^cls_token$", "audiomosaic.embeddings.cls_token"),
    (r"^pos_embed$", "audiomosaic.embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "audiomosaic.embeddings.patch_embeddings.projection."),
    (r"^patch_embed\.norm\.", "audiomosaic.embeddings.patch_embeddings.layernorm."),
    (r"^norm_pre\.", "audiomosaic.embeddings.pre_layernorm."),
    (r"^blocks\.(\d+)\.norm1\.", r"audiomosaic.layers.\1.layernorm_before."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"audiomosaic.layers.\1.attention.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"audiomosaic.layers.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.norm2\.", r"audiomosaic.layers.\1.layernorm_after."),
    (r"^blocks\.(\d+)\.mlp\.fc([12])\.", r"audiomosaic.layers.\1.mlp.fc\2."),
    (r"^fc_norm\.", "audiomosaic.fc_norm."),
    (r"^projector\.0\.", "projector.dense_in."),
    (r"^projector\.1\.", "projector.norm_in."),
    (r"^projector\.3\.", "projector.dense_out."),
    (r"^projector\.4\.", "projector.norm_out."),
    (r"^head\.", "classifier."),
    (r"^layer_weights$", "layer_weights"),
    (r"^attn_query$", "attentive_probe.query"),
    (r"^attn_key\.", "attentive_probe.key."),
    (r"^attn_value\.", "attentive_probe.value."),
    (r"^layer_norms\.", "attentive_probe.layer_norms."),
    # AASIST back-end: upstream (clovaai/aasist) names -> PEP 8 names of modeling_audiomosaic_aasist.py.
    (r"^LL\.", "aasist.token_projection."),
    (r"^first_bn1\.", "aasist.encoder_norm."),
    (r"^first_bn\.", "aasist.first_norm."),
    (r"^(encoder|attention|out_layer)\.", r"aasist.\1."),
    (r"^pos_S$", "aasist.spectral_position_embeddings"),
    (r"^(master[12])$", r"aasist.\1"),
    (r"^GAT_layer_S\.", "aasist.spectral_graph_attention."),
    (r"^GAT_layer_T\.", "aasist.temporal_graph_attention."),
    (r"^HtrgGAT_layer_ST([12])([12])\.", r"aasist.hs_gal\1_layer\2."),
    (r"^pool_S\.", "aasist.spectral_pool."),
    (r"^pool_T\.", "aasist.temporal_pool."),
    (r"^pool_hS([12])\.", r"aasist.hs_gal\1_spectral_pool."),
    (r"^pool_hT([12])\.", r"aasist.hs_gal\1_temporal_pool."),
]
# Inside the heterogeneous graph-attention layers, upstream's master-node tensors end in "M" (`att_projM`, ...).
MASTER_NODE_RENAME = (r"\.(att_proj|att_weight|proj_with_att|proj_without_att)M(?=\.|$)", r".\1_master")

CLASSIFIER_TYPES = {
    "AudioMosaicClassifier": "linear",
    "AudioMosaicLayerProbe": "layer_probe",
    "AudioMosaicWeightedSumProbe": "weighted_sum_probe",
    "AudioMosaicAttentiveProbe": "attentive_probe",
    "AudioMosaicAASIST": "aasist",
}

# Normalisation statistics the authors trained each input length with (spec §5.3).
PREPROCESSING_BY_LENGTH = {
    1024: ("audioset", -4.2677393, 4.5689974),
    512: ("esc50", -6.6268077, 5.358466),
    128: ("speechcommands", -6.845978, 5.5654526),
}


# AudioSet's ontology: the only multi-label task of the authors' releases (AS-20K, AS-2M and their probes).
AUDIOSET_NUM_CLASSES = 527
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification")
# `owner/name` as the Hub spells repository ids; anything else that does not exist locally is a missing file.
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Largest max |error| between the authors' forward pass and ours that a verified conversion accepts.
PARITY_TOLERANCE = 1e-4


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message lists the offending keys."""


def describe_keys(state_dict: dict[str, torch.Tensor], limit: int = 24) -> str:
    """The checkpoint's keys for an error message: the first `limit` (sorted) with their shapes, then a count."""
    keys = sorted(state_dict)
    listed = ", ".join(f"{key} {tuple(state_dict[key].shape)}" for key in keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"it holds {len(keys)} keys: {listed}{more}"


def load_official_checkpoint(src: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an authors' state dict (file or Hub release folder); returns (state dict without `module.` /
    `_orig_mod.` prefixes, release config or {})."""
    src = Path(src)
    release_config: dict = {}
    if src.is_dir():
        config_path, weights_path = src / "config.json", src / "model.safetensors"
        if not weights_path.is_file():
            raise FileNotFoundError(f"{src} is a folder but has no model.safetensors (an authors' Hub release has one).")
        if config_path.is_file():
            release_config = read_release_config(config_path)
        if release_config.get("model_type") == "audiomosaic":
            raise ConversionError(f"{src} is already a transformers AudioMosaic folder (its config.json has model_type "
                                  "audiomosaic): load it with from_pretrained, there is nothing to convert.")
        state_dict = read_safetensors(weights_path, "safetensors checkpoint")
    elif not src.is_file():
        raise FileNotFoundError(f"Checkpoint {src} does not exist.")
    elif src.suffix == ".safetensors":
        state_dict = read_safetensors(src, "safetensors checkpoint")
    elif src.suffix in (".pt", ".pth", ".bin"):
        state_dict = read_torch_weights(src, "PyTorch state-dict")
    else:
        raise ConversionError(f"Unsupported checkpoint file {src}: expected .pt, .pth, .bin, .safetensors or a folder.")
    # The authors' training compiles (`_orig_mod.`) and wraps in DDP (`module.`); their loaders drop both anywhere.
    state_dict = {key.replace("module.", "").replace("_orig_mod.", ""): value for key, value in state_dict.items()}
    return state_dict, release_config


def read_release_config(path: Path) -> dict:
    """The `config.json` of an authors' release folder (a JSON object); `corrupt_file` otherwise."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise corrupt_file(path, "JSON release config", error) from None
    if not isinstance(config, dict):
        raise corrupt_file(path, "JSON release config", "expected a JSON object")
    return config


def detect_classifier_type(state_dict: dict[str, torch.Tensor], release_config: dict) -> str | None:
    """`None` for a pretraining checkpoint, else the `classifier_type` of the head."""
    model_class = release_config.get("model_class")
    if model_class == "AudioMosaicPretrain" or "projector.0.weight" in state_dict:
        return None
    if model_class in CLASSIFIER_TYPES:
        return CLASSIFIER_TYPES[model_class]
    if "LL.weight" in state_dict:
        return "aasist"
    if "attn_query" in state_dict:
        return "attentive_probe"
    if "layer_weights" in state_dict:
        return "weighted_sum_probe"
    if "head.weight" in state_dict:
        return "linear"
    raise ConversionError(
        "Cannot tell what this checkpoint is: it has neither a projector (`projector.*`), a classification head "
        "(`head.*`), probe weights (`layer_weights`, `attn_query`) nor an AASIST back-end (`LL.*`); "
        + describe_keys(state_dict)
    )


def infer_problem_type(num_labels: int, release_config: dict, problem_type: str | None = None) -> str:
    """`problem_type` if given, else the release config's (`problem_type`, or `multi_label: true`), else multi-label for
    AudioSet's 527 classes (its heads were trained with BCE: sigmoid scores) and single-label otherwise."""
    if problem_type is None:
        problem_type = release_config.get("problem_type")
    if problem_type is None and "multi_label" in release_config:
        problem_type = PROBLEM_TYPES[bool(release_config["multi_label"])]
    if problem_type is None:
        problem_type = PROBLEM_TYPES[num_labels == AUDIOSET_NUM_CLASSES]
    if problem_type not in PROBLEM_TYPES:
        raise ConversionError(f"Unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}.")
    return problem_type


def infer_config(
    state_dict: dict[str, torch.Tensor],
    release_config: dict,
    classifier_type: str | None,
    num_heads: int | None = None,
    probe_layer: int | None = None,
    problem_type: str | None = None,
) -> AudioMosaicConfig:
    """Sizes from tensor shapes; head count, pooling, drop path and probe layer from the release config or the
    arguments (head count defaults to width / 64, as in ViT-B); the problem type as `infer_problem_type` says."""
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ConversionError(
            f"Not an AudioMosaic encoder checkpoint: missing keys {missing}; {describe_keys(state_dict)}"
        )
    hidden_size = state_dict["cls_token"].shape[-1]
    patch_size = state_dict["patch_embed.proj.weight"].shape[-1]
    spec_size = release_config.get("spec_size")
    num_mel_bins = int(spec_size[1]) if spec_size else 128
    num_patches = state_dict["pos_embed"].shape[1] - 1
    num_freq_patches = num_mel_bins // patch_size
    if num_patches % num_freq_patches:
        raise ConversionError(f"pos_embed has {num_patches} patch slots, not a multiple of {num_freq_patches}.")
    depth = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key)))
    heads = num_heads or release_config.get("num_heads") or max(1, hidden_size // 64)
    if hidden_size % heads:
        raise ConversionError(f"{heads} attention heads (--num-heads) do not divide the checkpoint's width "
                              f"{hidden_size}.")
    kwargs = dict(
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch_size,
        num_mel_bins=num_mel_bins,
        max_length=num_patches // num_freq_patches * patch_size,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        proj_bias="blocks.0.attn.proj.bias" in state_dict,
        pooling="cls" if release_config.get("pooling") == "cls" else "mean",
        drop_path_rate=release_config.get("drop_path_rate", 0.1),
    )
    if classifier_type is None:
        if "projector.0.weight" in state_dict:  # encoder-only weights (e.g. LTU's) have no projector
            kwargs.update(
                projection_hidden_size=state_dict["projector.0.weight"].shape[0],
                projection_dim=state_dict["projector.3.weight"].shape[0],
                projector_norm="batch_norm" if "projector.1.weight" in state_dict else "none",
                mask_ratio_time=release_config.get("mask_ratio_time", 0.6),
                mask_ratio_freq=release_config.get("mask_ratio_freq", 0.4),
            )
    else:
        kwargs["classifier_type"] = classifier_type
        kwargs["num_labels"] = 2 if classifier_type == "aasist" else state_dict["head.weight"].shape[0]
        kwargs["problem_type"] = infer_problem_type(kwargs["num_labels"], release_config, problem_type)
        if classifier_type == "layer_probe":
            kwargs["probe_layer"] = probe_layer if probe_layer is not None else release_config.get("probe_layer", 0)
        if classifier_type == "attentive_probe":
            kwargs["attentive_probe_heads"] = release_config.get("num_attn_heads", 1)
        if classifier_type != "linear":
            kwargs["freeze_encoder"] = True
    return AudioMosaicConfig(**kwargs)


def rename_keys(state_dict: dict[str, torch.Tensor], classifier_type: str | None) -> dict[str, torch.Tensor]:
    renamed, unknown = {}, []
    for key, value in state_dict.items():
        if classifier_type == "aasist" and key.startswith("head."):
            continue  # the authors' AASIST model keeps timm's unused 1000-way head
        for pattern, replacement in KEY_RENAMES:
            if re.match(pattern, key):
                renamed[re.sub(MASTER_NODE_RENAME[0], MASTER_NODE_RENAME[1], re.sub(pattern, replacement, key))] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"Unknown keys in the checkpoint (not part of any AudioMosaic model): {sorted(unknown)}")
    return renamed


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], config: AudioMosaicConfig
) -> AudioMosaicForPreTraining | AudioMosaicForAudioClassification:
    """Build the model for `config` and load the authors' weights into it, refusing any unknown, missing or
    mis-shaped key."""
    classifier_type = config.classifier_type if "projector.0.weight" not in state_dict else None
    model_class = AudioMosaicForPreTraining if classifier_type is None else AudioMosaicForAudioClassification
    model = model_class(config)
    renamed = rename_keys(state_dict, classifier_type)
    expected = model.state_dict()
    problems = [f"unexpected key {key}" for key in renamed if key not in expected]
    problems += [f"missing key {key}" for key in expected if key not in renamed]
    problems += [
        f"{key}: checkpoint shape {tuple(renamed[key].shape)} != model shape {tuple(expected[key].shape)}"
        for key in renamed
        if key in expected and renamed[key].shape != expected[key].shape
    ]
    if problems:
        raise ConversionError("The checkpoint does not fit the inferred model:\n  " + "\n  ".join(problems))
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in renamed.items()}, strict=True)
    return model.eval()


def read_labels(path: str | Path) -> dict[int, str]:
    """`index,mid,display_name` CSV (AudioSet's class_labels_indices.csv) -> id2label."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"index", "display_name"} <= set(rows[0]):
        raise ValueError(f"{path} must be a CSV with a header containing `index` and `display_name` (and `mid`).")
    try:
        return {int(row["index"]): row["display_name"] for row in rows}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: every `index` must be an integer (index,mid,display_name rows).") from None


def feature_extractor_for(config: AudioMosaicConfig, release_config: dict, release: Release | None = None
                          ) -> AudioMosaicFeatureExtractor:
    """Length and normalisation from the release config's `audio_preprocessing`, else the known release's preset,
    else the authors' statistics for the checkpoint's length."""
    preprocessing = release_config.get("audio_preprocessing")
    if preprocessing:
        return AudioMosaicFeatureExtractor(
            max_length=int(preprocessing.get("target_length", config.max_length)),
            mean=float(preprocessing["norm_mean"]),
            std=float(preprocessing["norm_std"]),
            num_mel_bins=config.num_mel_bins,
            feature_size=config.num_mel_bins,
        )
    preset = release.preset if release else PREPROCESSING_BY_LENGTH.get(config.max_length,
                                                                         PREPROCESSING_BY_LENGTH[1024])[0]
    feature_extractor = AudioMosaicFeatureExtractor.from_preset(preset)
    feature_extractor.max_length = config.max_length
    return feature_extractor


def resolve_source(src: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A local file or folder as it is; a Hub id (`owner/name`) that is not a local path is downloaded (or found in the
    cache) with `huggingface_hub.snapshot_download`, which handles `HF_HUB_OFFLINE`, tokens and the cache."""
    path = Path(src)
    if path.exists():
        if revision is not None:
            raise ValueError(f"--revision applies to Hub ids (owner/name); {src} is a local path.")
        return path
    if HUB_REPO_ID.match(str(src)):
        from huggingface_hub import snapshot_download

        return Path(from_hub(str(src), lambda: snapshot_download(str(src), revision=revision, cache_dir=cache_dir),
                             local="local file or folder"))
    raise FileNotFoundError(f"Checkpoint {src} does not exist (neither a local file or folder nor a Hub id owner/name).")


def release_labels(release: Release | None, config: AudioMosaicConfig, release_config: dict) -> dict[int, str] | None:
    """id2label from the release's label file; None (with a warning naming what is missing) when it is not known."""
    if release is not None and release.labels_file is not None:
        with importlib.resources.as_file(labels_file(release)) as path:
            id2label = read_labels(path)
        if len(id2label) != config.num_labels:
            raise ConversionError(f"{release.name}: its label file {release.labels_file} has {len(id2label)} labels "
                                  f"but the checkpoint's head has {config.num_labels}.")
        return id2label
    if release is not None:
        logger.warning("%s: the authors' class order is not known here (see modeling_audiomosaic/labels/README.md); "
                       "id2label keeps the generic names LABEL_0..LABEL_%d. Pass --labels CSV to set them.",
                       release.name, config.num_labels - 1)
    else:
        logger.warning("Not one of the authors' known releases: could not fill in id2label (generic names "
                       "LABEL_0..LABEL_%d; pass --labels CSV) and took problem_type %s from the %s.",
                       config.num_labels - 1, config.problem_type,
                       "release config" if {"problem_type", "multi_label"} & set(release_config) else "class count")
    return None


def load_reference_model(folder: Path, release_config: dict) -> torch.nn.Module:
    """The release's own model: `modeling.py` from the release folder (the authors' code, executed here), its
    `model_class` built from the config and loaded with the folder's weights, as the authors' `load_model.py` does."""
    modeling_path = folder / "modeling.py"
    if not folder.is_dir():
        raise ConversionError(f"--verify needs an authors' release folder (with modeling.py); {folder} is a file.")
    if not modeling_path.is_file() or "model_class" not in release_config:
        raise ConversionError(f"--verify needs an authors' release folder with modeling.py and a config.json naming "
                              f"`model_class`; {folder} has {sorted(p.name for p in folder.iterdir())}.")
    spec = importlib.util.spec_from_file_location(f"audiomosaic_release_{folder.name}", modeling_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kwargs = {key: value for key, value in release_config.items() if key != "model_class"}
    reference = getattr(module, release_config["model_class"])(**kwargs)
    reference.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    return reference.eval()


@torch.no_grad()
def reference_max_error(reference: torch.nn.Module, model: torch.nn.Module, batch_size: int = 2) -> float:
    """max |error| between the authors' forward and ours on the same normalised log-Mel input: logits for heads, the
    pooled feature (`f`, before fc_norm) for the pretrained encoder, whose authors' forward returns a dict."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    inputs = 0.5 * torch.randn(batch_size, config.max_length, config.num_mel_bins, generator=generator)
    expected = reference(inputs.unsqueeze(1))  # the authors' layout: (batch, 1, frames, mel bins)
    if isinstance(model, AudioMosaicForPreTraining):
        ours, expected = model.forward_view(inputs, view=0).pooled, expected["f"]
    else:
        ours = model(inputs).logits
    return (ours - expected).abs().max().item()


@dataclass
class Conversion:
    """What a conversion wrote and how it was checked."""

    out_dir: Path
    model: AudioMosaicForPreTraining | AudioMosaicForAudioClassification
    feature_extractor: AudioMosaicFeatureExtractor
    release: Release | None
    parity: str


def convert_with_report(
    src: str | Path,
    out_dir: str | Path,
    num_heads: int | None = None,
    labels: str | Path | None = None,
    probe_layer: int | None = None,
    classifier_type: str | None = None,
    max_length: int | None = None,
    problem_type: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = False,
) -> Conversion:
    """`convert`, returning the model, the release it recognised and the check it passed."""
    out_dir = Path(check_value("out_dir", out_dir, output_folder))
    for name, value, minimum in (("num_heads", num_heads, 1), ("probe_layer", probe_layer, 0),
                                 ("max_length", max_length, 1)):
        if value is not None:
            check_value(name, value, integer(minimum=minimum))
    if labels is not None:
        check_value("labels", labels, existing_file)
    folder = resolve_source(src, revision=revision, cache_dir=cache_dir)
    if out_dir.resolve() == folder.resolve():
        raise ValueError(f"{out_dir} is the checkpoint's own folder: the conversion would replace its config.json and "
                         "model.safetensors; choose another output folder.")
    state_dict, release_config = load_official_checkpoint(folder)
    release = release_for(str(src)) if folder.is_dir() else None
    detected = detect_classifier_type(state_dict, release_config)
    if classifier_type is not None:
        if detected is None:
            raise ConversionError("`classifier_type` was given but the checkpoint is a pretraining checkpoint.")
        detected = classifier_type
    elif detected is not None and release is not None and release.classifier_type is not None:
        detected = release.classifier_type
    if problem_type is not None and detected is None:
        raise ConversionError("`problem_type` was given but the checkpoint is a pretraining checkpoint (no head).")
    if problem_type is None and detected is not None and release is not None:
        problem_type = release.problem_type
    config = infer_config(state_dict, release_config, detected, num_heads=num_heads, probe_layer=probe_layer,
                          problem_type=problem_type)
    if max_length is not None and max_length % config.patch_size:
        raise ConversionError(f"--max-length {max_length} is not a multiple of the patch size {config.patch_size}.")
    id2label = read_labels(labels) if labels is not None else None
    if id2label is not None and len(id2label) != config.num_labels:
        raise ValueError(f"{labels} has {len(id2label)} labels but the checkpoint's head has {config.num_labels}.")
    if id2label is None and detected is not None:
        id2label = release_labels(release, config, release_config)
    if id2label is not None:
        config.id2label = id2label
        config.label2id = {name: index for index, name in id2label.items()}
    model = convert_state_dict(state_dict, config)
    parity = "keys and shapes match (forward not compared: no --verify)"
    if verify:
        error = reference_max_error(load_reference_model(folder, release_config), model)
        if not error <= PARITY_TOLERANCE:
            raise ConversionError(f"{src}: max |error| {error:.3g} between the authors' forward pass and ours "
                                  f"exceeds {PARITY_TOLERANCE:g}; nothing was written.")
        parity = f"max |error| {error:.1e} against the authors' forward pass"
    if max_length is not None and max_length != config.max_length:
        model.audiomosaic.resize_position_embeddings(max_length, method="official")
    feature_extractor = feature_extractor_for(config, release_config, release)
    with atomic_folder(out_dir) as partial:
        model.save_pretrained(partial)
        feature_extractor.save_pretrained(partial)
    return Conversion(out_dir, model, feature_extractor, release, parity)


def convert(
    src: str | Path,
    out_dir: str | Path,
    num_heads: int | None = None,
    labels: str | Path | None = None,
    probe_layer: int | None = None,
    classifier_type: str | None = None,
    max_length: int | None = None,
    problem_type: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = False,
) -> Path:
    """Convert `src` (file, release folder or Hub id at `revision`) and write a transformers folder to `out_dir`;
    returns `out_dir`. With `max_length` the positional embeddings are resized to that many frames the way the
    authors' fine-tuning loader does (e.g. a 10 s pretrained encoder prepared for 1 s Speech Commands clips).
    Classifiers get `problem_type` "multi_label_classification" (sigmoid scores in `pipeline`) for AudioSet's 527
    classes, for the authors' BCE-trained releases, or when the release config says so, unless `problem_type` is
    given; the authors' releases get their labels. `verify` runs the release's own modeling code (see module doc)."""
    return convert_with_report(src, out_dir, num_heads=num_heads, labels=labels, probe_layer=probe_layer,
                               classifier_type=classifier_type, max_length=max_length, problem_type=problem_type,
                               revision=revision, cache_dir=cache_dir, verify=verify).out_dir


def release_model_card(conversion: Conversion, model_id: str):
    """Model card of a converted authors' release, rendered from `model_card.md`."""
    from huggingface_hub import ModelCardData

    from .model_cards import render_model_card

    release, config, feature_extractor = conversion.release, conversion.model.config, conversion.feature_extractor
    is_classifier = isinstance(conversion.model, AudioMosaicForAudioClassification)
    labels = [config.id2label[i] for i in range(config.num_labels)] if is_classifier else []
    card_data = ModelCardData(
        license="mit",
        library_name="transformers",
        pipeline_tag="audio-classification" if is_classifier else "feature-extraction",
        tags=["audio", "audiomosaic", "custom_code", *(["audio-classification"] if is_classifier else [])],
        base_model=release.repo_id,
        model_name=model_id,
    )
    kind = "classifier" if is_classifier else "pretrained encoder"
    return render_model_card(
        card_data,
        model_id=model_id,
        model_name=model_id,
        model_summary=f"The authors' AudioMosaic {kind} `{release.repo_id}` as a transformers checkpoint: "
                      f"{release.task}, trained on {release.dataset}.",
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_parameters=f"{sum(p.numel() for p in conversion.model.parameters()) / 1e6:.2f}M",
        classifier_type=config.classifier_type if is_classifier else None,
        freeze_encoder=is_classifier and config.freeze_encoder,
        num_labels=len(labels),
        multi_label=config.problem_type == "multi_label_classification",
        max_length=feature_extractor.max_length,
        seconds=f"{feature_extractor.max_length / 100:g}",
        norm_mean=feature_extractor.mean,
        norm_std=feature_extractor.std,
        base_model=None,  # the card says "converted from" instead of "initialised from"
        release_repo=release.repo_id,
        release_training=release.training,
        parity=conversion.parity,
        reported=release.reported,
        reported_source=f"[AudioMosaic README]({AUTHORS_SOURCE})",
        labels_preview=", ".join(f"`{name}`" for name in labels[:50]) + (" ..." if len(labels) > 50 else ""),
        limitations="Inputs longer than the training length are truncated unless split into windows "
                    "(`long_audio=\"window\"` in the feature extractor)."
                    + ("" if release.labels_file or not is_classifier else
                       " The class order of this head is not known here: its labels are the generic LABEL_i."),
    )


def describe_labels(model) -> str:
    if not isinstance(model, AudioMosaicForAudioClassification):
        return "-"
    config = model.config
    names = [config.id2label[i] for i in range(min(config.num_labels, 2))]
    kind = "sigmoid" if config.problem_type == "multi_label_classification" else "softmax"
    return f"{config.num_labels} {kind}: {', '.join(names)}, ..."


def convert_all_releases(
    out_root: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = False,
    push_to: str | None = None,
    api=None,
) -> list[dict[str, str]]:
    """Convert every release of `releases.RELEASES` into `out_root/<name>/` with a model card; with `push_to` (a
    Hub namespace) upload each folder to `<push_to>/<name>` through `api` (default `huggingface_hub.HfApi()`).
    Returns one summary row per release; a release that fails is reported in its row and the others go on."""
    if push_to and api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    rows = []
    for release in RELEASES.values():
        folder = Path(out_root) / release.name
        try:
            conversion = convert_with_report(release.repo_id, folder, revision=revision, cache_dir=cache_dir,
                                             verify=verify)
        except (ConversionError, OSError, ValueError) as error:
            rows.append({"release": release.name, "class": "-", "labels": "-", "parity": f"FAILED: {error}",
                         "folder": "-"})
            continue
        model_id = f"{push_to}/{release.name}" if push_to else release.name
        release_model_card(conversion, model_id).save(folder / "README.md")
        if push_to:
            api.create_repo(model_id, exist_ok=True, repo_type="model")
            api.upload_folder(folder_path=str(folder), repo_id=model_id, repo_type="model",
                              commit_message=f"Convert {release.repo_id} to transformers")
        model = conversion.model
        kind = type(model).__name__ + (f" ({model.config.classifier_type})"
                                       if isinstance(model, AudioMosaicForAudioClassification) else "")
        rows.append({"release": release.name, "class": kind, "labels": describe_labels(model),
                     "parity": conversion.parity, "folder": str(folder)})
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    widths = {column: max(len(column), *(len(row[column]) for row in rows)) for column in columns}
    lines = [" | ".join(column.ljust(widths[column]) for column in columns)]
    lines.append("-+-".join("-" * widths[column] for column in columns))
    lines += [" | ".join(row[column].ljust(widths[column]) for column in columns) for row in rows]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", nargs="?",
                        help="authors' state dict (.pt/.pth/.bin/.safetensors), release folder or Hub id owner/name")
    parser.add_argument("out_dir", nargs="?", type=output_folder, help="folder to write the transformers checkpoint to")
    parser.add_argument("--all-releases", metavar="OUT_ROOT", type=output_folder, default=None,
                        help="convert every authors' release (hanxunh/AudioMosaic-vit-b16-*) into OUT_ROOT/<name>/ "
                             "with a model card, and print a summary table")
    parser.add_argument("--push-to", metavar="NAMESPACE", default=None,
                        help="with --all-releases: upload each folder to NAMESPACE/<name> on the Hub")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of a Hub id source")
    parser.add_argument("--cache-dir", type=output_folder, default=None,
                        help="Hugging Face cache folder (default: the library's)")
    parser.add_argument("--verify", action="store_true",
                        help="run the release's own modeling.py (the authors' code: it executes) and compare its "
                             f"forward pass with ours; fail above {PARITY_TOLERANCE:g}")
    parser.add_argument("--num-heads", type=integer(minimum=1), default=None,
                        help="attention heads (default: release config or width/64)")
    parser.add_argument("--labels", type=existing_file, default=None,
                        help="index,mid,display_name CSV for id2label (default: the release's, when known)")
    parser.add_argument("--classifier-type", choices=sorted(set(CLASSIFIER_TYPES.values())), default=None,
                        help="head type when it cannot be told from the keys (a layer probe looks like a classifier)")
    parser.add_argument("--probe-layer", type=integer(minimum=0), default=None, help="block read by a layer probe")
    parser.add_argument("--max-length", type=integer(minimum=1), default=None,
                        help="resize the positional embeddings to this many frames (authors' interpolation)")
    parser.add_argument("--problem-type", choices=PROBLEM_TYPES, default=None,
                        help="override the head's problem type (default: the release's; else multi-label for 527 "
                             "AudioSet classes or when the release config says so, else single-label)")


def main(argv: list[str] | None = None) -> Path | list[dict[str, str]]:
    return run(command_parser("convert-official", __doc__, add_arguments).parse_args(argv))


def run(args: argparse.Namespace) -> Path | list[dict[str, str]]:
    if args.all_releases:
        if args.src or args.out_dir:
            raise ValueError("--all-releases OUT_ROOT converts every release; give no SRC / OUT_DIR with it.")
        rows = convert_all_releases(args.all_releases, revision=args.revision, cache_dir=args.cache_dir,
                                    verify=args.verify, push_to=args.push_to)
        print(format_table(rows))
        failed = [row["release"] for row in rows if row["parity"].startswith("FAILED")]
        if failed:
            raise ConversionError(f"{len(failed)} of {len(rows)} releases failed: {', '.join(failed)}.")
        return rows
    if not (args.src and args.out_dir):
        raise ValueError("give SRC and OUT_DIR, or --all-releases OUT_ROOT.")
    if args.push_to:
        raise ValueError("--push-to applies to --all-releases; upload a single folder with `huggingface-cli upload`.")
    conversion = convert_with_report(
        args.src, args.out_dir, num_heads=args.num_heads, labels=args.labels, probe_layer=args.probe_layer,
        classifier_type=args.classifier_type, max_length=args.max_length, problem_type=args.problem_type,
        revision=args.revision, cache_dir=args.cache_dir, verify=args.verify)
    out_dir = conversion.out_dir
    print(f"Wrote {out_dir}: {', '.join(sorted(p.name for p in out_dir.iterdir()))} ({conversion.parity}; labels: "
          f"{describe_labels(conversion.model)})")
    return out_dir


if __name__ == "__main__":
    main()
