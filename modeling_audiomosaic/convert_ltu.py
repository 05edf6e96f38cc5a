"""Convert the authors' AudioMosaic-LTU release (`hanxunh/AudioMosaic-vit-b16-ltu-stage4`: `extra_weights.bin` with
the encoder, projector and LoRA tensors of a PeftModel-wrapped `AudioMosaicLlamaForCausalLM`) into an
[`AudioMosaicLtuForConditionalGeneration`] folder plus a peft LoRA adapter for it.

The base LLaMA (the LTU base folder the release was trained on) is not part of the release; pass the folder where
you have it with `--base-model`. The output holds the composite (`config.json` with `auto_map`, weights, code
files), the processor (LTU's feature normalisation and prompt template, the base tokenizer with an `<audio>` token)
when a tokenizer is found in the release or base folder, and `adapter/` (peft `LoraConfig` r 8, alpha 16, dropout
0.05 on the language model's q_proj/v_proj):

    audiomosaic convert-ltu RELEASE_DIR OUT_DIR --base-model /path/to/ltu_base_llama

    model = AudioMosaicLtuForConditionalGeneration.from_pretrained(OUT_DIR)
    model = PeftModel.from_pretrained(model, OUT_DIR + "/adapter")   # or .merge_and_unload()
"""

import argparse
import json
import re
from pathlib import Path

import torch

from .caching import atomic_folder
from .convert_official import KEY_RENAMES, ConversionError, infer_config
from .feature_extraction_audiomosaic import AudioMosaicFeatureExtractor
from .inputs import command_parser
from .modeling_audiomosaic import AudioMosaicModel
from .modeling_audiomosaic_ltu import AudioMosaicLtuForConditionalGeneration
from .validation import (
    check_value,
    integer,
    language_model_reference,
    output_folder,
    read_safetensors,
    read_torch_weights,
)


# PeftModel prefixes the authors' Trainer may have saved the keys under (spec §2.2).
KEY_PREFIXES = ("base_model.model.model.", "model.", "")
AUDIO_TOKEN = "<audio>"
# LTU's training and inference normalisation (x + 5.081) / 4.4849 in the feature extractor's (x - mean) / (2 std)
# form. The release's injected `preprocess()` uses AudioSet statistics instead, but the weights were trained with these.
LTU_FEATURES = {"max_length": 1024, "mean": -5.081, "std": 4.4849 / 2}
# The authors' LoRA (main_ltu.py): the release stores only the matrices; alpha and dropout come from the code.
LORA_ALPHA = 16
LORA_DROPOUT = 0.05
LORA_TARGETS = r".*language_model.*\.(q_proj|v_proj)"
# peft 0.3 kept the adapter name (`.default`) in the saved keys; current peft files do not.
LORA_KEY = re.compile(r"layers\.(\d+)\.self_attn\.(q_proj|v_proj)\.lora_([AB])(?:\.default)?\.weight")


def load_release_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """`extra_weights.bin` (torch pickle read with `weights_only=True`; pickles that need code are refused) or a
    `.safetensors` file, or a release folder holding one; a truncated or foreign file is a `ValueError` naming it."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "extra_weights.bin", path / "extra_weights.safetensors"]
        found = [candidate for candidate in candidates if candidate.is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds no extra_weights.bin (the LTU release's weight file).")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"LTU weights {path} do not exist.")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_weights(path)


def split_release_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """-> (encoder tensors under timm names, projector tensors `1.weight`/`1.bias`, LoRA tensors
    `layers.N.self_attn.{q,v}_proj.lora_{A,B}.weight`). Every key must belong to one group."""
    encoder, projector, lora, unknown = {}, {}, {}, []
    prefix = next((p for p in KEY_PREFIXES if all(key.startswith(p) for key in state_dict)), "")
    for key, value in state_dict.items():
        name = key[len(prefix):]
        if name.startswith("audio_encoder."):
            encoder[name[len("audio_encoder."):]] = value
        elif name.startswith("audio_proj."):
            projector[name[len("audio_proj."):]] = value
        elif match := LORA_KEY.fullmatch(name):
            lora[f"layers.{match[1]}.self_attn.{match[2]}.lora_{match[3]}.weight"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"Keys that are neither encoder, projector nor LoRA: {sorted(unknown)[:10]}")
    if set(projector) != {"1.weight", "1.bias"}:
        raise ConversionError(f"Expected projector tensors audio_proj.1.weight/bias, got {sorted(projector)}.")
    if not encoder:
        raise ConversionError("No audio encoder tensors (keys containing 'audio_encoder.') in the release weights.")
    return encoder, projector, lora


def encoder_from_release(encoder_state_dict: dict[str, torch.Tensor], num_heads: int | None) -> AudioMosaicModel:
    """Build the AudioMosaic encoder and load the release's tensors; its final per-token `norm` becomes `fc_norm`,
    which the composite applies per token (the inverse of the authors' `fc_norm` -> `norm` rename)."""
    try:
        config = infer_config(encoder_state_dict, {}, None, num_heads=num_heads)
    except ValueError as error:
        raise ConversionError(f"--num-heads {num_heads}: {error}" if num_heads else str(error)) from None
    config.drop_path_rate = 0.0  # the authors' LTU encoder has no stochastic depth
    renamed = {}
    for key, value in encoder_state_dict.items():
        key = re.sub(r"^norm\.", "fc_norm.", key)
        for pattern, replacement in KEY_RENAMES:
            if re.match(pattern, key):
                renamed[re.sub(pattern, replacement, key).removeprefix("audiomosaic.")] = value
                break
        else:
            raise ConversionError(f"Unknown encoder key audio_encoder.{key}.")
    encoder = AudioMosaicModel(config)
    expected = encoder.state_dict()
    problems = sorted(set(expected) ^ set(renamed))
    problems += [key for key in renamed if key in expected and renamed[key].shape != expected[key].shape]
    if problems:
        raise ConversionError(f"The encoder tensors do not fit an AudioMosaic encoder: {problems[:10]}")
    encoder.load_state_dict(renamed, strict=True)
    return encoder


def load_ltu_tokenizer(*folders: str | Path):
    """The first tokenizer found in `folders`, with the authors' settings (pad id 0, left padding) and an `<audio>`
    placeholder token; `None` when no folder has one."""
    from transformers import AutoTokenizer

    for folder in folders:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, TypeError):
            continue
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
        tokenizer.padding_side = "left"
        tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
        return tokenizer
    return None


def write_conversion(model: AudioMosaicLtuForConditionalGeneration, tokenizer, lora_sd: dict[str, torch.Tensor],
                     folder: Path, out_dir: Path) -> None:
    """Save the composite, its processor (when a tokenizer was found) and the LoRA adapter into `folder`; the
    adapter names `out_dir` (where the folder's files end up) as its base model."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from .processing_audiomosaic_ltu import AudioMosaicLtuProcessor

    model.save_pretrained(folder)
    if tokenizer is not None:
        feature_extractor = AudioMosaicFeatureExtractor(**LTU_FEATURES)
        AudioMosaicLtuProcessor(feature_extractor, tokenizer, audio_token=AUDIO_TOKEN,
                                num_audio_tokens=model.config.num_audio_tokens).save_pretrained(folder)
    if lora_sd:
        rank = next(value.shape[0] for key, value in lora_sd.items() if key.endswith("lora_A.weight"))
        lora_config = LoraConfig(r=rank, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, bias="none",
                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lora_config)
        adapter_sd = {f"base_model.model.language_model.model.{key}": value for key, value in lora_sd.items()}
        expected = {key for key in peft_model.state_dict() if ".lora_" in key}
        expected = {re.sub(r"\.default\.", ".", key) for key in expected}
        if set(adapter_sd) != expected:
            missing, unexpected = sorted(expected - set(adapter_sd)), sorted(set(adapter_sd) - expected)
            raise ConversionError(f"LoRA tensors do not fit the base model: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}.")
        set_peft_model_state_dict(peft_model, adapter_sd)
        peft_model.peft_config["default"].base_model_name_or_path = str(out_dir)
        peft_model.save_pretrained(folder / "adapter")


def convert_ltu(
    release: str | Path,
    out_dir: str | Path,
    base_model: str | Path,
    num_heads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Convert an LTU release folder (or its weight file) against the base LM at `base_model`; returns `out_dir`,
    written only once the whole conversion succeeded. The output folder, the base model's config and weight-file
    headers and `num_heads` are checked before any weights are read."""
    check_value("out_dir", str(out_dir), output_folder)
    check_value("--base-model", str(base_model), language_model_reference)
    check_value("--num-heads", num_heads, integer(minimum=1), optional=True)
    release, out_dir = Path(release), Path(out_dir)
    if not release.exists():
        raise FileNotFoundError(f"LTU release {release} does not exist.")
    encoder_sd, projector_sd, lora_sd = split_release_state_dict(load_release_weights(release))
    encoder = encoder_from_release(encoder_sd, num_heads)
    release_folder = release if release.is_dir() else release.parent
    tokenizer = load_ltu_tokenizer(release_folder, base_model)

    # The placeholder is the tokenizer's new `<audio>` id (one past LLaMA's vocabulary: never embedded, no resize).
    config_kwargs = {"audio_token_id": tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)} if tokenizer is not None else {}
    model = AudioMosaicLtuForConditionalGeneration.from_audio_text_pretrained(
        str(base_model), audio_encoder=encoder, language_model_kwargs={"dtype": dtype}, **config_kwargs)
    projector = model.audio_projector.linear
    if projector_sd["1.weight"].shape != projector.weight.shape:
        raise ConversionError(
            f"Projector weight {tuple(projector_sd['1.weight'].shape)} does not map the encoder width to the base "
            f"model's hidden size {tuple(projector.weight.shape)}: is --base-model the LLaMA the release was "
            "trained on?"
        )
    projector.load_state_dict({"weight": projector_sd["1.weight"], "bias": projector_sd["1.bias"]})
    model = model.to(dtype).eval()
    with atomic_folder(out_dir) as staging:
        write_conversion(model, tokenizer, lora_sd, staging, out_dir)
        (staging / "conversion.json").write_text(json.dumps({
            "release": str(release), "base_model": str(base_model), "encoder_tensors": len(encoder_sd),
            "projector_tensors": len(projector_sd), "lora_tensors": len(lora_sd),
            "processor": tokenizer is not None,
        }, indent=2))
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", help="LTU release folder (with extra_weights.bin) or the weight file itself")
    parser.add_argument("out_dir", type=output_folder,
                        help="folder to write the composite model, processor and adapter/ to")
    parser.add_argument("--base-model", required=True,
                        help="folder (or Hub id) of the base LLaMA of the release (checked by `convert_ltu`)")
    parser.add_argument("--num-heads", type=integer(minimum=1), default=None,
                        help="encoder attention heads (default: width/64)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of the written model (default float32)")


def run(args: argparse.Namespace) -> Path:
    import peft  # noqa: F401  (the LoRA adapter needs it; `audiomosaic` names the `ltu` extra when it is missing)

    out_dir = convert_ltu(args.release, args.out_dir, args.base_model, num_heads=args.num_heads,
                          dtype=getattr(torch, args.dtype))
    print(f"Wrote {out_dir}: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")
    return out_dir


def main(argv: list[str] | None = None) -> Path:
    return run(command_parser("convert-ltu", __doc__, add_arguments).parse_args(argv))


if __name__ == "__main__":
    main()
