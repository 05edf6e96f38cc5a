"""Configuration of the AudioMosaic audio-language model (LTU layout: AudioMosaic encoder -> pooled audio tokens ->
projector -> any causal language model)."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

from .configuration_audiomosaic import AudioMosaicConfig


AUDIO_POOLINGS = ("official", "time")


@strict
class AudioMosaicLtuConfig(PreTrainedConfig):
    r"""
    Configuration of [`AudioMosaicLtuForConditionalGeneration`]: an AudioMosaic encoder whose tokens are pooled into
    audio tokens, projected to the width of a causal language model and placed at the audio placeholder positions of
    its input, as in the authors' LTU model (`HanxunH/AudioMosaic`, `models/modeling_ltu.py`). The defaults
    reproduce the released `AudioMosaic-vit-b16-ltu-stage4` (ViT-B/16 on 1024 frames, 32 audio tokens, LLaMA-7B).

    Args:
        audio_config (`AudioMosaicConfig` or `dict`, *optional*): the encoder (default: ViT-B/16, 1024 frames).
        text_config (`PreTrainedConfig` or `dict`, *optional*): any causal language model config (default: LLaMA-7B).
        audio_token_id (`int`, defaults to 32000): id of the audio placeholder token. It may lie outside the language
            model's vocabulary (the default is one past LLaMA's 32000 ids): placeholder positions are never looked up
            in the embedding table, so the base model needs no resizing.
        audio_pooling (`str`, defaults to `"official"`): how encoder tokens become audio tokens.
            `"official"` is the authors' code: view the (time-major) patch tokens as (freq_patches, time_patches),
            average over the first axis, then average groups of `audio_pool_size` along the second. Written for
            CAV-MAE's frequency-major tokens, on AudioMosaic's time-major tokens it makes audio token k the mean of
            the patches with `t mod freq_patches == k // (freq_patches / audio_pool_size)` and a band of
            `audio_pool_size` frequency patches (for 1024 frames: 8 time positions 1.28 s apart). `"time"` averages
            over frequency, then over `audio_pool_size` consecutive time patches: audio tokens in time order.
        audio_pool_size (`int`, defaults to 2): patches averaged along the second axis (2 in the authors' code).
        audio_feature_scale (`float`, defaults to 50.0): pooled features are divided by this before the projector
            (the authors' "hard norm"; it sets the effective LayerNorm epsilon, so it matters for parity).
        projector_layer_norm_eps (`float`, defaults to 1e-5): epsilon of the projector's non-affine LayerNorm.
        shuffle_patches_in_training (`bool`, defaults to `False`): randomly permute the patch tokens of every clip
            in training mode before pooling, as the authors' encoder does (its `mask_ratio=0.0` keeps all tokens in
            random order), so that each audio token averages random patches during training. The authors'
            curriculum recipes switch it on; at evaluation no permutation happens.
    """

    model_type = "audiomosaic_ltu"
    sub_configs = {"audio_config": AudioMosaicConfig, "text_config": AutoConfig}

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    audio_token_id: int = 32000
    audio_pooling: str = "official"
    audio_pool_size: int = 2
    audio_feature_scale: float | int = 50.0
    projector_layer_norm_eps: float = 1e-5
    shuffle_patches_in_training: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.audio_config is None:
            self.audio_config = AudioMosaicConfig(drop_path_rate=0.0)
        elif isinstance(self.audio_config, dict):
            self.audio_config = AudioMosaicConfig(**self.audio_config)
        if self.text_config is None:
            self.text_config = AutoConfig.for_model("llama")
        elif isinstance(self.text_config, dict):
            text_config = dict(self.text_config)
            if "model_type" not in text_config:
                raise ValueError("`text_config` needs a `model_type` (e.g. 'llama') to know which config to build.")
            self.text_config = AutoConfig.for_model(text_config.pop("model_type"), **text_config)
        super().__post_init__(**kwargs)
        if self.audio_pooling not in AUDIO_POOLINGS:
            raise ValueError(f"`audio_pooling` must be one of {AUDIO_POOLINGS}, got {self.audio_pooling!r}.")
        if self.audio_pool_size <= 0:
            raise ValueError(f"`audio_pool_size` must be a positive integer, got {self.audio_pool_size}.")
        if self.audio_feature_scale <= 0:
            raise ValueError(f"`audio_feature_scale` must be positive, got {self.audio_feature_scale}.")
        self.num_audio_tokens_for(self.audio_config.max_length)  # validates the encoder length against the pooling

    def num_audio_tokens_for(self, num_frames: int) -> int:
        """Audio tokens one clip of `num_frames` frames becomes (32 for the authors' 1024 frames)."""
        # Both poolings reduce (time_patches x freq_patches) tokens to time_patches / audio_pool_size audio tokens.
        time_patches = -(-num_frames // self.audio_config.patch_size)
        if time_patches % self.audio_pool_size:
            raise ValueError(
                f"{num_frames} frames give {time_patches} time patches, which `audio_pool_size` "
                f"({self.audio_pool_size}) must divide; pad the features to a multiple of "
                f"{self.audio_config.patch_size * self.audio_pool_size} frames."
            )
        return time_patches // self.audio_pool_size

    @property
    def num_audio_tokens(self) -> int:
        """Audio tokens of one clip of `audio_config.max_length` frames."""
        return self.num_audio_tokens_for(self.audio_config.max_length)


__all__ = ["AudioMosaicLtuConfig"]
