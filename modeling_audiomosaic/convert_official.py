"""Convert an AudioMosaic checkpoint of the authors' code (`HanxunH/AudioMosaic`) into a transformers folder.

SRC is either a state-dict file (`.pt` / `.pth` / `.bin`, read with `torch.load(weights_only=True)` so no code is
ever unpickled, or `.safetensors`) or one of the authors' Hub release folders (`config.json` with `model_class`,
constructor arguments and `audio_preprocessing`, plus `model.safetensors`). The kind of checkpoint (pretrained
encoder + projector, classifier, layer / weighted-sum / attentive probe, AASIST) is detected from the keys, the sizes
from the tensor shapes. The output folder holds `config.json` (with `auto_map`), `model.safetensors`,
`preprocessor_config.json` with that checkpoint's normalisation and length, and the code files for
`trust_remote_code=True`.

    audiomosaic convert-official model_state_dict.pt converted/ --labels class_labels_indices.csv
    python -m modeling_audiomosaic.convert_official SRC OUT_DIR
"""

import argparse
import csv
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_audiomosaic import AudioMosaicConfig
from .feature_extraction_audiomosaic import AudioMosaicFeatureExtractor
from .modeling_audiomosaic import AudioMosaicForAudioClassification, AudioMosaicForPreTraining


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
    (r"^(LL|first_bn1?|encoder|attention|pos_S|master[12]|GAT_layer_[ST]|HtrgGAT_layer_ST\d+|pool_\w+|out_layer)\b",
     r"aasist.\1"),
]

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
            release_config = json.loads(config_path.read_text())
        state_dict = load_file(weights_path)
    elif not src.is_file():
        raise FileNotFoundError(f"Checkpoint {src} does not exist.")
    elif src.suffix == ".safetensors":
        state_dict = load_file(src)
    elif src.suffix in (".pt", ".pth", ".bin"):
        try:
            state_dict = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - re-raised with the path and the reason
            raise ConversionError(
                f"Could not read {src} as a plain state dict with torch.load(weights_only=True): {error}"
            ) from error
    else:
        raise ConversionError(f"Unsupported checkpoint file {src}: expected .pt, .pth, .bin, .safetensors or a folder.")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ConversionError(f"{src} does not hold a flat state dict of tensors.")
    # The authors' training compiles (`_orig_mod.`) and wraps in DDP (`module.`); their loaders drop both anywhere.
    state_dict = {key.replace("module.", "").replace("_orig_mod.", ""): value for key, value in state_dict.items()}
    return state_dict, release_config


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
    heads = num_heads or release_config.get("num_heads") or hidden_size // 64
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
                renamed[re.sub(pattern, replacement, key)] = value
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
    return {int(row["index"]): row["display_name"] for row in rows}


def feature_extractor_for(config: AudioMosaicConfig, release_config: dict) -> AudioMosaicFeatureExtractor:
    preprocessing = release_config.get("audio_preprocessing")
    if preprocessing:
        return AudioMosaicFeatureExtractor(
            max_length=int(preprocessing.get("target_length", config.max_length)),
            mean=float(preprocessing["norm_mean"]),
            std=float(preprocessing["norm_std"]),
            num_mel_bins=config.num_mel_bins,
            feature_size=config.num_mel_bins,
        )
    preset = PREPROCESSING_BY_LENGTH.get(config.max_length, PREPROCESSING_BY_LENGTH[1024])[0]
    feature_extractor = AudioMosaicFeatureExtractor.from_preset(preset)
    feature_extractor.max_length = config.max_length
    return feature_extractor


def convert(
    src: str | Path,
    out_dir: str | Path,
    num_heads: int | None = None,
    labels: str | Path | None = None,
    probe_layer: int | None = None,
    classifier_type: str | None = None,
    max_length: int | None = None,
    problem_type: str | None = None,
) -> Path:
    """Convert `src` and write a transformers folder to `out_dir`; returns `out_dir`. With `max_length` the
    positional embeddings are resized to that many frames the way the authors' fine-tuning loader does (e.g. a 10 s
    pretrained encoder prepared for 1 s Speech Commands clips). Classifiers get `problem_type`
    "multi_label_classification" (sigmoid scores in `pipeline`) for AudioSet's 527 classes or when the release config
    says so, unless `problem_type` is given."""
    state_dict, release_config = load_official_checkpoint(src)
    detected = detect_classifier_type(state_dict, release_config)
    if classifier_type is not None:
        if detected is None:
            raise ConversionError("`classifier_type` was given but the checkpoint is a pretraining checkpoint.")
        detected = classifier_type
    if problem_type is not None and detected is None:
        raise ConversionError("`problem_type` was given but the checkpoint is a pretraining checkpoint (no head).")
    config = infer_config(state_dict, release_config, detected, num_heads=num_heads, probe_layer=probe_layer,
                          problem_type=problem_type)
    if labels is not None:
        id2label = read_labels(labels)
        if len(id2label) != config.num_labels:
            raise ValueError(f"{labels} has {len(id2label)} labels but the checkpoint's head has {config.num_labels}.")
        config.id2label = id2label
        config.label2id = {name: index for index, name in id2label.items()}
    model = convert_state_dict(state_dict, config)
    if max_length is not None and max_length != config.max_length:
        model.audiomosaic.resize_position_embeddings(max_length, method="official")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    feature_extractor_for(config, release_config).save_pretrained(out_dir)
    return out_dir


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="authors' state dict (.pt/.pth/.bin/.safetensors) or Hub release folder")
    parser.add_argument("out_dir", help="folder to write the transformers checkpoint to")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads (default: release config or width/64)")
    parser.add_argument("--labels", default=None, help="index,mid,display_name CSV for id2label")
    parser.add_argument("--classifier-type", choices=sorted(set(CLASSIFIER_TYPES.values())), default=None,
                        help="head type when it cannot be told from the keys (a layer probe looks like a classifier)")
    parser.add_argument("--probe-layer", type=int, default=None, help="block read by a layer probe")
    parser.add_argument("--max-length", type=int, default=None,
                        help="resize the positional embeddings to this many frames (authors' interpolation)")
    parser.add_argument("--problem-type", choices=PROBLEM_TYPES, default=None,
                        help="override the head's problem type (default: multi-label for 527 AudioSet classes or when "
                             "the release config says so, else single-label)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run(args)


def run(args: argparse.Namespace) -> None:
    out_dir = convert(args.src, args.out_dir, num_heads=args.num_heads, labels=args.labels,
                      probe_layer=args.probe_layer, classifier_type=args.classifier_type, max_length=args.max_length,
                      problem_type=args.problem_type)
    print(f"Wrote {out_dir}: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")


if __name__ == "__main__":
    main()
