"""Configuration and feature-extractor builders shared by the training scripts."""

from pathlib import Path

import yaml
from transformers import AutoFeatureExtractor

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor
from modeling_audiomosaic.norm_stats import AUTO_PRESET, feature_extractor_from_data

from .arguments import AudioDataArguments


def parse_config_overrides(overrides: str | dict | None, config_class: type = AudioMosaicConfig) -> dict:
    """`--config_overrides "hidden_size=192,qkv_bias=false"` -> {"hidden_size": 192, "qkv_bias": False}: values are
    read as YAML scalars (numbers, booleans, null, text), keys must be fields of `config_class`."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        parsed = dict(overrides)
    else:
        parsed = {}
        for item in filter(None, (part.strip() for part in overrides.split(","))):
            if "=" not in item:
                raise ValueError(f"--config_overrides entries must be key=value, got {item!r}.")
            key, value = item.split("=", 1)
            parsed[key.strip()] = yaml.safe_load(value.strip())
    fields = getattr(config_class, "__dataclass_fields__", None)
    unknown = sorted(key for key in parsed if fields is not None and key not in fields)
    if unknown:
        raise ValueError(f"--config_overrides: {config_class.__name__} has no field(s) {unknown}.")
    return parsed


def build_config(source: str | None, overrides: dict) -> AudioMosaicConfig:
    """`AudioMosaicConfig` read from `source` (a config.json, its folder or a Hub id) or the defaults (the released
    ViT-B), with `overrides` applied and checked."""
    if not source:
        return AudioMosaicConfig(**overrides)
    if source.startswith((".", "/")) and not Path(source).exists():
        raise FileNotFoundError(f"{source} does not exist (expected a config.json, a model folder or a Hub id).")
    config = AudioMosaicConfig.from_pretrained(source)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.validate_values()
    return config


def build_feature_extractor(
    data_args: AudioDataArguments,
    model_name_or_path: str | None = None,
    max_length: int | None = None,
    train_audio: list | None = None,
) -> AudioMosaicFeatureExtractor:
    """The run's feature extractor: `--feature_extractor_preset` if set (`auto`: normalised with the statistics of
    `train_audio`, the training split's audio column), else the checkpoint's, else the defaults; then the explicit
    `--max_length` (else `max_length`, the model's), `--norm_mean` / `--norm_std` and `--sampling_rate` on top."""
    length = data_args.max_length or max_length
    preset = data_args.feature_extractor_preset
    feature_extractor = None
    if preset and preset != AUTO_PRESET:
        feature_extractor = AudioMosaicFeatureExtractor.from_preset(preset)
    elif model_name_or_path:
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path)
        except (OSError, ValueError):  # an encoder folder saved without its feature extractor
            feature_extractor = None
    feature_extractor = feature_extractor or AudioMosaicFeatureExtractor()
    length = length or feature_extractor.max_length
    if preset == AUTO_PRESET:
        if train_audio is None:
            raise ValueError(f"--feature_extractor_preset {AUTO_PRESET} needs the training split's audio.")
        feature_extractor = feature_extractor_from_data(train_audio, length, sampling_rate=data_args.sampling_rate)
    overrides = {"max_length": length, "mean": data_args.norm_mean, "std": data_args.norm_std,
                 "sampling_rate": data_args.sampling_rate}
    for key, value in overrides.items():
        if value is not None:
            setattr(feature_extractor, key, value)
    return feature_extractor
