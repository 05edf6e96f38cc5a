"""AudioMosaic as the audio tower of a causal language model (the authors' LTU model, `HanxunH/AudioMosaic`
`models/modeling_ltu.py`, on stock transformers).

The encoder's tokens go through the per-token final LayerNorm, are pooled into audio tokens, divided by a constant,
normalised by a non-affine LayerNorm and projected to the language model's width; the results replace the embeddings
of the audio placeholder tokens of `input_ids` (the authors' layout is 32 placeholders before BOS). Any
`AutoModelForCausalLM` works as the language model; LoRA comes from peft (see `training/ltu.py`).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, CausalLMOutputWithPast

from .configuration_audiomosaic_ltu import AudioMosaicLtuConfig
from .modeling_audiomosaic import AudioMosaicModel


IGNORE_INDEX = -100

# Every Auto class a saved composite folder serves (module names are the files `save_pretrained` copies).
AUTO_MAP = {
    "AutoConfig": "configuration_audiomosaic_ltu.AudioMosaicLtuConfig",
    "AutoModelForCausalLM": "modeling_audiomosaic_ltu.AudioMosaicLtuForConditionalGeneration",
}


def pool_audio_tokens(patch_tokens: torch.Tensor, num_freq_patches: int, pool_size: int, mode: str) -> torch.Tensor:
    """Patch tokens (B, Tp * Fp, D), time-major (index t * Fp + f), -> audio tokens (B, Tp / pool_size, D).

    `"official"` is the authors' code: `view(B, Fp, Tp, D)` (their `view(B, 8, 64, 768)`), mean over the first axis,
    `avg_pool2d` of `pool_size` along the second. `"time"` averages over frequency, then over `pool_size` consecutive
    time patches."""
    batch_size, num_tokens, hidden_size = patch_tokens.shape
    num_time_patches = num_tokens // num_freq_patches
    if mode == "official":
        pooled = patch_tokens.reshape(batch_size, num_freq_patches, num_time_patches, hidden_size).mean(dim=1)
    elif mode == "time":
        pooled = patch_tokens.reshape(batch_size, num_time_patches, num_freq_patches, hidden_size).mean(dim=2)
    else:
        raise ValueError(f"Unknown audio pooling {mode!r}; expected 'official' or 'time'.")
    # avg_pool2d on the 3-D tensor averages `pool_size` neighbours along the token axis, exactly as the authors do.
    return F.avg_pool2d(pooled, (pool_size, 1))


class AudioMosaicLtuProjector(nn.Module):
    """x / audio_feature_scale -> non-affine LayerNorm -> Linear(audio width -> text width) (authors' `audio_proj`)."""

    def __init__(self, config: AudioMosaicLtuConfig):
        super().__init__()
        self.feature_scale = config.audio_feature_scale
        self.layer_norm = nn.LayerNorm(
            config.audio_config.hidden_size, eps=config.projector_layer_norm_eps, elementwise_affine=False
        )
        self.linear = nn.Linear(config.audio_config.hidden_size, config.text_config.hidden_size)

    def forward(self, pooled_audio: torch.Tensor) -> torch.Tensor:
        return self.linear(self.layer_norm(pooled_audio / self.feature_scale))


class AudioMosaicLtuPreTrainedModel(PreTrainedModel):
    config: AudioMosaicLtuConfig
    config_class = AudioMosaicLtuConfig
    main_input_name = "input_ids"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["AudioMosaicLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        # As for the encoder: write every Auto entry, so the folder loads with trust_remote_code=True anywhere.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)


class AudioMosaicLtuForConditionalGeneration(AudioMosaicLtuPreTrainedModel, GenerationMixin):
    """AudioMosaic encoder + projector + any causal language model; `generate` answers questions about audio.

    Example:

    ```python
    >>> from transformers import AutoProcessor
    >>> from modeling_audiomosaic import AudioMosaicLtuForConditionalGeneration

    >>> model = AudioMosaicLtuForConditionalGeneration.from_pretrained("converted-ltu")
    >>> processor = AutoProcessor.from_pretrained("converted-ltu")
    >>> prompt = processor.build_prompt("What sound is this?")
    >>> inputs = processor(text=[prompt], audio=[waveform], sampling_rate=16000)
    >>> answer_ids = model.generate(**inputs, max_new_tokens=20)[:, inputs["input_ids"].shape[1]:]
    ```"""

    def __init__(self, config: AudioMosaicLtuConfig):
        super().__init__(config)
        self.audio_tower = AudioMosaicModel(config.audio_config)
        self.audio_projector = AudioMosaicLtuProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    @classmethod
    def from_audio_text_pretrained(
        cls,
        language_model: str | PreTrainedModel,
        audio_encoder: str | AudioMosaicModel | None = None,
        language_model_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "AudioMosaicLtuForConditionalGeneration":
        """Compose a model from a pretrained causal LM (folder, Hub id or model) and a pretrained AudioMosaic encoder
        (folder or model; `None` builds a random one from `config_kwargs["audio_config"]`). Only the projector is
        new. Neither pretrained part is allocated twice, so this works for 7B language models. `audio_token_id`
        defaults to the language model's `vocab_size`."""
        if isinstance(language_model, str):
            language_model = AutoModelForCausalLM.from_pretrained(language_model, **(language_model_kwargs or {}))
        if isinstance(audio_encoder, str):
            audio_encoder = AudioMosaicModel.from_pretrained(audio_encoder)
        if audio_encoder is not None:
            config_kwargs["audio_config"] = audio_encoder.config
        # Default placeholder: one past the vocabulary, so the language model needs no new embedding row.
        config_kwargs.setdefault("audio_token_id", language_model.config.vocab_size)
        config = AudioMosaicLtuConfig(text_config=language_model.config, **config_kwargs)
        with torch.device("meta"):
            model = cls(config)
        model.language_model = language_model
        model.audio_tower = audio_encoder if audio_encoder is not None else AudioMosaicModel(config.audio_config)
        model.audio_projector = AudioMosaicLtuProjector(config)
        model.audio_projector.apply(model._init_weights)  # as `cls(config)` would initialise it
        model.config.text_config = language_model.config
        model.config.audio_config = model.audio_tower.config
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def get_audio_features(
        self,
        input_values: torch.Tensor,
        patch_order: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Log-Mel features (B, frames, mel) -> the audio tower's output whose `pooler_output` holds the audio
        embeddings (B, num_audio_tokens, text hidden size), as transformers' audio-language models return them
        (e.g. Voxtral); `last_hidden_state`, `hidden_states` and `attentions` are the encoder's.

        patch_order (`torch.LongTensor` of shape `(B, patches)`, *optional*): time-major patch indices in the order
        the encoder should see them (the authors' training-mode shuffle). By default the tokens are shuffled in
        training mode when `config.shuffle_patches_in_training` is set, and kept in order otherwise.
        output_hidden_states / output_attentions / return_dict (*optional*): as in `forward`, default from the
        config.
        """
        audio_config = self.config.audio_config
        num_freq_patches = audio_config.num_mel_bins // audio_config.patch_size
        if patch_order is None and self.training and self.config.shuffle_patches_in_training:
            num_patches = -(-input_values.shape[-2] // audio_config.patch_size) * num_freq_patches
            patch_order = torch.rand(input_values.shape[0], num_patches, device=input_values.device).argsort(dim=1)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        audio_outputs = self.audio_tower(
            input_values,
            keep_patch_indices=patch_order,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        # The authors' encoder ends in a per-token LayerNorm `norm`, which their loader initialises from the
        # pretraining `fc_norm`; the encoder's `fc_norm` plays that role here, applied to every token.
        patch_tokens = self.audio_tower.fc_norm(audio_outputs.last_hidden_state)[:, 1:]
        pooled = pool_audio_tokens(patch_tokens, num_freq_patches, self.config.audio_pool_size,
                                   self.config.audio_pooling)
        output = BaseModelOutputWithPooling(
            last_hidden_state=audio_outputs.last_hidden_state,
            pooler_output=self.audio_projector(pooled),
            hidden_states=audio_outputs.hidden_states,
            attentions=audio_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): text ids with
        `num_audio_tokens` copies of `config.audio_token_id` per clip (see [`AudioMosaicLtuProcessor`]).
        input_values (`torch.FloatTensor` of shape `(num_clips, frames, num_mel_bins)`, *optional*): log-Mel features
        of the clips, in the order their placeholders appear in `input_ids` (row by row).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): next-token targets aligned
        with `input_ids` (shifted inside the loss); audio placeholder positions are always ignored.

        Other keyword arguments (cache, `use_cache`, `logits_to_keep`, ...) go to the language model unchanged.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        audio_mask = None
        if inputs_embeds is None:
            audio_mask = input_ids == self.config.audio_token_id
            # The placeholder id may lie outside the vocabulary; its embedding is replaced below anyway.
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(audio_mask, 0))
        if input_values is not None:
            if audio_mask is None:
                raise ValueError("`input_values` needs `input_ids` with audio placeholders to place the audio in.")
            audio_embeds = self.get_audio_features(input_values, return_dict=True).pooler_output.to(inputs_embeds.dtype)
            num_placeholders = int(audio_mask.sum())
            if num_placeholders != audio_embeds.shape[0] * audio_embeds.shape[1]:
                raise ValueError(
                    f"`input_ids` hold {num_placeholders} audio placeholders (id {self.config.audio_token_id}) but "
                    f"{audio_embeds.shape[0]} clip(s) give {audio_embeds.shape[1]} audio tokens each; every clip "
                    f"needs exactly {audio_embeds.shape[1]} placeholders (use the processor to expand them)."
                )
            inputs_embeds = inputs_embeds.masked_scatter(audio_mask.unsqueeze(-1), audio_embeds)
        elif audio_mask is not None and audio_mask.any():
            raise ValueError("`input_ids` hold audio placeholders but no `input_values` were given.")
        if labels is not None and audio_mask is not None:
            labels = labels.masked_fill(audio_mask, IGNORE_INDEX)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids, input_values=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # The audio goes in with the step that still holds its placeholders (the prompt); later steps reuse the cache.
        step_ids = model_inputs.get("input_ids")
        if step_ids is not None and (step_ids == self.config.audio_token_id).any():
            model_inputs["input_values"] = input_values
        return model_inputs


__all__ = ["AudioMosaicLtuForConditionalGeneration", "AudioMosaicLtuPreTrainedModel", "pool_audio_tokens"]
