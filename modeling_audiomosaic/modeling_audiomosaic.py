"""PyTorch AudioMosaic model: a ViT over 16x16 patches of 128-bin Kaldi log-Mel spectrograms, pretrained by contrasting
a time-masked and a frequency-masked view of the same clip (Huang et al., ICML 2026, arXiv 2605.14231).

Numerics follow the authors' code (`HanxunH/AudioMosaic` @ 67a86a8), which produced the released checkpoints; where
that code differs from the paper both behaviours are available from the config.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_audiomosaic import AudioMosaicConfig
from .modeling_audiomosaic_aasist import (
    AudioMosaicAASISTHead,
    AudioMosaicGraphAttentionLayer,
    AudioMosaicHeterogeneousGraphAttentionLayer,
)


logger = logging.get_logger(__name__)

# Every Auto class a saved AudioMosaic folder can serve (module names are the files `save_pretrained` copies).
AUTO_MAP = {
    "AutoConfig": "configuration_audiomosaic.AudioMosaicConfig",
    "AutoModel": "modeling_audiomosaic.AudioMosaicModel",
    "AutoModelForAudioClassification": "modeling_audiomosaic.AudioMosaicForAudioClassification",
    "AutoModelForPreTraining": "modeling_audiomosaic.AudioMosaicForPreTraining",
}


# ----------------------------------------------------------------------------------------------------------------------
# Positional embeddings
# ----------------------------------------------------------------------------------------------------------------------


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos embedding: [sin(p * w_k) || cos(p * w_k)], w_k = 10000^(-k / (dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_position_embeddings(hidden_size: int, rows: int, cols: int) -> torch.Tensor:
    """2-D sin-cos table (1 + rows * cols, hidden_size) with a zero cls slot; flat index i = row * cols + col gets
    [sincos(col) || sincos(row)] (MAE's `get_2d_sincos_pos_embed` convention)."""
    index = torch.arange(rows * cols)
    table = torch.cat([_sincos_1d(hidden_size // 2, index % cols), _sincos_1d(hidden_size // 2, index // cols)], dim=1)
    return torch.cat([torch.zeros(1, hidden_size, dtype=table.dtype), table]).float()


def resize_position_embeddings(
    position_embeddings: torch.Tensor, num_time_patches: int, num_freq_patches: int, method: str = "official"
) -> torch.Tensor:
    """Resize a (1, 1 + L, D) positional-embedding table (cls slot first, time-major patch order) to
    `num_time_patches` time rows.

    `method="official"` reproduces the authors' loader (`interpolate_pos_embed_audio`): it takes the target grid as
    their frequency-first `patch_hw` = (num_freq_patches, num_time_patches), reads the source as
    (L // num_time_patches, num_time_patches) and bilinearly resizes it (align_corners=False). For 1024 -> 128 frames
    this is a true time down-sampling; for other lengths it mixes time and frequency, exactly like the released
    fine-tuning runs. `method="grid"` resizes the true (time, frequency) grid along time.
    """
    cls_slot, patches = position_embeddings[:, :1], position_embeddings[:, 1:]
    hidden_size = patches.shape[-1]
    if method == "official":
        source_grid = (patches.shape[1] // num_time_patches, num_time_patches)
        target_grid = (num_freq_patches, num_time_patches)
    elif method == "grid":
        source_grid = (patches.shape[1] // num_freq_patches, num_freq_patches)
        target_grid = (num_time_patches, num_freq_patches)
    else:
        raise ValueError(f"Unknown position-embedding resize method {method!r}; expected 'official' or 'grid'.")
    if source_grid[0] * source_grid[1] != patches.shape[1]:
        raise ValueError(
            f"Cannot view {patches.shape[1]} positional embeddings as a {source_grid[0]}x{source_grid[1]} grid."
        )
    grid = patches.reshape(1, *source_grid, hidden_size).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=target_grid, mode="bilinear", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, hidden_size).to(position_embeddings.dtype)
    return torch.cat([cls_slot, patches], dim=1)


# ----------------------------------------------------------------------------------------------------------------------
# Patch masking (which patch tokens a view keeps). Patch tokens are time-major: flat index = t * Fp + f.
# ----------------------------------------------------------------------------------------------------------------------


def random_order(batch_size: int, num_units: int, device: torch.device) -> torch.Tensor:
    """A random permutation per sample from exactly one `torch.rand(batch_size, num_units)` call, as the authors'
    maskers do, so seeded runs draw the same units."""
    return torch.rand(batch_size, num_units, device=device).argsort(dim=1)


def grid_keep_indices(
    batch_size: int,
    rows: int,
    cols: int,
    row_ratio: float | None,
    col_ratio: float | None,
    device: torch.device,
) -> torch.Tensor:
    """Flat indices (row * cols + col) of the tokens kept when dropping a fraction of the rows and/or the columns of a
    (rows, cols) token grid. A `None` ratio keeps that axis whole and in order without drawing random numbers; a
    number keeps `int(n * (1 - ratio))` units in random order (rows are drawn before columns)."""
    row_ids = torch.arange(rows, device=device).expand(batch_size, rows)
    col_ids = torch.arange(cols, device=device).expand(batch_size, cols)
    if row_ratio is not None:
        row_ids = random_order(batch_size, rows, device)[:, : int(rows * (1 - row_ratio))]
    if col_ratio is not None:
        col_ids = random_order(batch_size, cols, device)[:, : int(cols * (1 - col_ratio))]
    return (row_ids[:, :, None] * cols + col_ids[:, None, :]).reshape(batch_size, -1)


PATCH_MASKINGS = ("none", "unstructured", "time", "frequency", "time_frequency")


def patch_keep_indices(
    masking: str,
    batch_size: int,
    rows: int,
    cols: int,
    time_ratio: float,
    freq_ratio: float,
    num_unstructured: int,
    device: torch.device,
) -> torch.Tensor | None:
    """Flat indices (row * cols + col) of the tokens `masking` keeps on a (rows, cols) grid whose rows are the time
    units: `"none"` keeps every token (`None`); `"time"` / `"frequency"` drop `time_ratio` of the rows /
    `freq_ratio` of the columns and `"time_frequency"` both (see [`grid_keep_indices`]); `"unstructured"` keeps
    `num_unstructured` random tokens. The one masking vocabulary of pretraining views, fine-tuning masking and
    `analysis.py`."""
    if masking not in PATCH_MASKINGS:
        raise ValueError(f"Unknown masking {masking!r}; choose from {PATCH_MASKINGS}.")
    if masking == "none":
        return None
    if masking == "unstructured":
        return random_order(batch_size, rows * cols, device)[:, :num_unstructured]
    row_ratio = time_ratio if masking in ("time", "time_frequency") else None
    col_ratio = freq_ratio if masking in ("frequency", "time_frequency") else None
    return grid_keep_indices(batch_size, rows, cols, row_ratio, col_ratio, device)


def pretraining_view_keep_indices(config: AudioMosaicConfig, view: int, num_time_patches: int, batch_size: int,
                                  device: torch.device) -> torch.Tensor | None:
    """Patch tokens kept by pretraining view 0 (time-masked) or view 1 (frequency-masked) under
    `config.pretraining_masking`; `None` keeps every token."""
    strategy = config.pretraining_masking
    num_freq_patches = config.num_mel_bins // config.patch_size
    masking = {"official": ("time", "frequency"), "paper": ("time", "frequency"), "time": ("time", "time"),
               "frequency": ("frequency", "frequency"), "unstructured": ("unstructured", "unstructured"),
               "none": ("none", "none")}[strategy][view]
    if strategy == "official":
        # The authors' PatchEmbed records patch_hw = (F/16, T/16) while tokens are time-major, so their maskers view
        # the tokens as an (Fp, Tp) grid: a "time" row is a chunk of Tp/Fp consecutive time rows with all their
        # frequency patches, a "frequency" column is a (t mod Tp/Fp, f) unit. Square inputs (T = 128) are unaffected.
        rows, cols = num_freq_patches, num_time_patches
    else:
        rows, cols = num_time_patches, num_freq_patches
    num_unstructured = int(rows * cols * (1 - config.mask_ratio_unstructured))
    return patch_keep_indices(masking, batch_size, rows, cols, config.mask_ratio_time, config.mask_ratio_freq,
                              num_unstructured, device)


# ----------------------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------------------


def drop_path(hidden_states: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth per sample (timm's `drop_path`)."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    random_tensor = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * random_tensor / keep_prob


class AudioMosaicDropPath(nn.Module):
    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return drop_path(hidden_states, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class AudioMosaicPatchEmbeddings(nn.Module):
    """Non-overlapping 16x16 patches of a (B, T, F) spectrogram, flattened time-major, then LayerNorm."""

    def __init__(self, config: AudioMosaicConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(1, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        patches = self.projection(input_values.unsqueeze(1))  # (B, D, Tp, Fp)
        return self.layernorm(patches.flatten(2).transpose(1, 2))


class AudioMosaicEmbeddings(nn.Module):
    """Patch embeddings, cls token and positional embeddings, then the pre-block LayerNorm (timm's `norm_pre`)."""

    def __init__(self, config: AudioMosaicConfig):
        super().__init__()
        self.config = config
        self.num_freq_patches = config.num_mel_bins // config.patch_size
        self.max_time_patches = config.max_length // config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, 1 + self.max_time_patches * self.num_freq_patches, config.hidden_size)
        )
        self.patch_embeddings = AudioMosaicPatchEmbeddings(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def initial_position_embeddings(self) -> torch.Tensor:
        if self.config.position_embedding_init == "official":
            rows, cols = self.num_freq_patches, self.max_time_patches
        else:
            rows, cols = self.max_time_patches, self.num_freq_patches
        return sincos_position_embeddings(self.config.hidden_size, rows, cols)[None]

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings(input_values)
        cls_tokens = self.cls_token.expand(patches.shape[0], -1, -1)
        embeddings = torch.cat([cls_tokens, patches], dim=1)
        # Time-major order: a shorter input uses the first rows of the table.
        embeddings = embeddings + self.position_embeddings[:, : embeddings.shape[1]]
        return self.pre_layernorm(self.dropout(embeddings))


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class AudioMosaicAttention(nn.Module):
    """Multi-head self-attention with the authors' fused [q; k; v] projection (one matmul instead of three)."""

    def __init__(self, config: AudioMosaicConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        # Read by transformers' sdpa/flash wrappers: without it an encoder would silently run causally.
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.proj_bias)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_len, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = self.o_proj(attn_output.reshape(batch_size, seq_len, -1))
        return attn_output, attn_weights


class AudioMosaicMLP(nn.Module):
    def __init__(self, config: AudioMosaicConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.proj_bias)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.proj_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class AudioMosaicLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block (timm `Block` without LayerScale) with stochastic depth."""

    def __init__(self, config: AudioMosaicConfig, drop_path_rate: float):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AudioMosaicAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = AudioMosaicMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = AudioMosaicDropPath(drop_path_rate)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(self.dropout(attn_output))
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        hidden_states = hidden_states + self.drop_path(self.dropout(mlp_output))
        return hidden_states, attn_weights


def masked_mean(hidden_states: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens (cls included, as the authors pool), ignoring tokens whose mask is 0."""
    if token_mask is None:
        return hidden_states.mean(dim=1)
    weights = token_mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class AudioMosaicPreTrainedModel(PreTrainedModel):
    config: AudioMosaicConfig
    config_class = AudioMosaicConfig
    base_model_prefix = "audiomosaic"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["AudioMosaicEmbeddings", "AudioMosaicLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` makes transformers write only the saved class's own entry to `auto_map`; a folder
        # should load through every Auto class that fits it when this package is not installed.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def resolve_output_flags(
        self, output_hidden_states: bool | None, output_attentions: bool | None, return_dict: bool | None
    ) -> tuple[bool, bool, bool]:
        """The `forward` flags a caller left unset (`None`) are read from the config, as in every transformers
        model; an explicit argument wins."""
        config = self.config
        return (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.output_attentions if output_attentions is None else output_attentions,
            config.return_dict if return_dict is None else return_dict,
        )

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # The authors initialise every Linear/Conv2d with a truncated normal (std 0.02), biases 0.
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, AudioMosaicEmbeddings):
            init.copy_(module.position_embeddings, module.initial_position_embeddings())
            init.normal_(module.cls_token, std=1e-6)
        elif isinstance(module, AudioMosaicAttentiveProbe):
            init.normal_(module.query, std=0.02)
        elif isinstance(module, AudioMosaicForAudioClassification) and module.layer_weights is not None:
            init.zeros_(module.layer_weights)
        elif isinstance(module, AudioMosaicGraphAttentionLayer):
            init.xavier_normal_(module.att_weight)
        elif isinstance(module, AudioMosaicHeterogeneousGraphAttentionLayer):
            for weight in (module.att_weight11, module.att_weight22, module.att_weight12, module.att_weight_master):
                init.xavier_normal_(weight)
        elif isinstance(module, AudioMosaicAASISTHead):
            for parameter in (module.spectral_position_embeddings, module.master1, module.master2):
                init.normal_(parameter)


@dataclass
class AudioMosaicModelOutput(BaseModelOutputWithPooling):
    """
    [`BaseModelOutputWithPooling`] plus the token keep-mask (1 = real token) of `last_hidden_state`, `None` when
    every token is real. `pooler_output` is `fc_norm` of the (masked) mean over all tokens including cls.
    """

    token_mask: torch.Tensor | None = None


class AudioMosaicModel(AudioMosaicPreTrainedModel):
    """The AudioMosaic encoder. The released encoder has no token-level final norm: `last_hidden_state` is the output
    of the last block; `pooler_output` = `fc_norm`(mean over all tokens including cls)."""

    def __init__(self, config: AudioMosaicConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = AudioMosaicEmbeddings(config)
        rates = [
            config.drop_path_rate * i / max(config.num_hidden_layers - 1, 1) for i in range(config.num_hidden_layers)
        ]
        self.layers = nn.ModuleList([AudioMosaicLayer(config, rate) for rate in rates])
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def resize_position_embeddings(self, max_length: int, method: str = "official") -> None:
        """Re-size the positional embeddings to `max_length` frames (see [`resize_position_embeddings`]) and update
        the config, e.g. before fine-tuning a 10 s pretrained encoder on 1 s clips as the authors do."""
        if max_length % self.config.patch_size != 0:
            raise ValueError(f"`max_length` must be a multiple of {self.config.patch_size}, got {max_length}.")
        embeddings = self.embeddings
        resized = resize_position_embeddings(
            embeddings.position_embeddings.data,
            max_length // self.config.patch_size,
            embeddings.num_freq_patches,
            method,
        )
        embeddings.position_embeddings = nn.Parameter(resized, requires_grad=embeddings.position_embeddings.requires_grad)
        embeddings.max_time_patches = max_length // self.config.patch_size
        self.config.max_length = max_length

    def _check_input(self, input_values: torch.Tensor) -> torch.Tensor:
        if input_values.ndim == 4 and input_values.shape[1] == 1:
            input_values = input_values.squeeze(1)
        if input_values.ndim != 3 or input_values.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"`input_values` must have shape (batch, frames, {self.config.num_mel_bins}) or "
                f"(batch, 1, frames, {self.config.num_mel_bins}), got {tuple(input_values.shape)}."
            )
        num_frames = input_values.shape[1]
        if num_frames < self.config.patch_size:
            raise ValueError(f"Inputs need at least {self.config.patch_size} frames, got {num_frames}.")
        if num_frames > self.config.max_length:
            raise ValueError(
                f"Input has {num_frames} frames but this model's `max_length` is {self.config.max_length}. "
                "Split long audio into windows with the feature extractor (`long_audio=\"window\"`) and average the "
                "outputs per clip with `average_windows`."
            )
        return input_values

    def patch_grid(self, num_frames: int) -> tuple[int, int]:
        """(time, frequency) patch counts of an input of `num_frames` frames (a partial last time row is padded)."""
        return math.ceil(num_frames / self.config.patch_size), self.embeddings.num_freq_patches

    def _patch_mask(self, attention_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Frame mask (B, T) -> patch-token mask (B, Tp * Fp): a time row of patches is real if any frame is."""
        if attention_mask.shape[1] < num_frames:
            attention_mask = F.pad(attention_mask, (0, num_frames - attention_mask.shape[1]))
        rows = attention_mask[:, :num_frames].reshape(attention_mask.shape[0], -1, self.config.patch_size).any(-1)
        return rows.repeat_interleave(self.embeddings.num_freq_patches, dim=1)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        keep_patch_indices: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AudioMosaicModelOutput | tuple:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, frames, num_mel_bins)` or `(batch_size, 1, frames,
        num_mel_bins)`): normalised log-Mel features from [`AudioMosaicFeatureExtractor`]. Any number of frames up to
        `config.max_length`; a length that is not a multiple of the patch size is zero-padded.
        attention_mask (`torch.LongTensor` of shape `(batch_size, frames)`, *optional*): 1 for real frames, 0 for
        padding. Patch rows with no real frame are excluded from attention and from the mean.
        keep_patch_indices (`torch.LongTensor` of shape `(batch_size, kept)`, *optional*): time-major indices
        (t * Fp + f) of the patch tokens to keep; the others are dropped after the embeddings (view masking).
        """
        output_hidden_states, output_attentions, return_dict = self.resolve_output_flags(
            output_hidden_states, output_attentions, return_dict
        )
        input_values = self._check_input(input_values)
        input_values = input_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        remainder = input_values.shape[1] % self.config.patch_size
        if remainder:
            input_values = F.pad(input_values, (0, 0, 0, self.config.patch_size - remainder))

        hidden_states = self.embeddings(input_values)
        token_mask = None
        if attention_mask is not None:
            patch_mask = self._patch_mask(attention_mask.bool(), input_values.shape[1])
            if not patch_mask.all():
                token_mask = F.pad(patch_mask, (1, 0), value=True)
        if keep_patch_indices is not None:
            # The cls token always stays in front; the kept patch tokens follow in the given order.
            index = keep_patch_indices.unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1])
            hidden_states = torch.cat([hidden_states[:, :1], hidden_states[:, 1:].gather(1, index)], dim=1)
            if token_mask is not None:
                token_mask = torch.cat([token_mask[:, :1], token_mask[:, 1:].gather(1, keep_patch_indices)], dim=1)

        attention_bias = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=token_mask
        )
        # Collected here rather than through output-capturing hooks, whose helpers have changed between 5.x releases;
        # remote code must run on whichever 5.x the user has.
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_bias, **kwargs)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        if output_attentions and all_attentions and all_attentions[0] is None:
            logger.warning_once(
                "Attention weights are only returned by the eager implementation; load the model with "
                "`attn_implementation=\"eager\"` to get them."
            )

        pooled = self.fc_norm(self.pool(hidden_states, token_mask))
        output = AudioMosaicModelOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            token_mask=token_mask,
        )
        return output if return_dict else output.to_tuple()

    def pool(self, hidden_states: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The un-normalised pooled feature (`f` in the authors' code): masked mean over all tokens incl. cls, or the
        cls token."""
        if self.config.pooling == "cls":
            return hidden_states[:, 0]
        return masked_mean(hidden_states, token_mask)


# ----------------------------------------------------------------------------------------------------------------------
# Pretraining
# ----------------------------------------------------------------------------------------------------------------------


class AudioMosaicProjector(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear -> bias-free BatchNorm (SimCLR v2 style, authors' `projector.0..4`)."""

    def __init__(self, config: AudioMosaicConfig):
        super().__init__()
        use_norm = config.projector_norm == "batch_norm"
        self.dense_in = nn.Linear(config.hidden_size, config.projection_hidden_size, bias=False)
        self.norm_in = nn.BatchNorm1d(config.projection_hidden_size) if use_norm else nn.Identity()
        self.activation = nn.ReLU()
        self.dense_out = nn.Linear(config.projection_hidden_size, config.projection_dim, bias=False)
        self.norm_out = nn.BatchNorm1d(config.projection_dim) if use_norm else nn.Identity()
        if use_norm:
            # The authors' BatchNorm1dNoBias: the bias exists (checkpoint key) but stays 0 and is never trained.
            self.norm_out.bias.requires_grad_(False)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.norm_out(self.dense_out(self.activation(self.norm_in(self.dense_in(pooled)))))


def contrastive_loss(
    projection_view0: torch.Tensor,
    projection_view1: torch.Tensor,
    temperature: float = 0.1,
    negatives: str = "all",
    gather_distributed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NT-Xent between two views; returns (loss, logits, labels, top-1 accuracy) for this process's rows.

    `negatives="all"` is the released loss: each row's logits are [cross-view similarities (m, incl. the positive) ||
    same-view similarities without itself (m - 1)], shape (2n, 2m - 1). `"cross_view"` is the paper's Eq. 4: shape
    (2n, m). In an initialised `torch.distributed` run with `gather_distributed`, the columns come from every process
    (m = n * world size) through an all-gather that carries gradients back to their owners, and the labels are offset
    by rank; with DDP's gradient averaging this is the exact gradient of the global mean loss.
    """
    if projection_view0.shape != projection_view1.shape or projection_view0.ndim != 2:
        raise ValueError(
            f"Both views need projections of the same (batch, dim) shape, got {tuple(projection_view0.shape)} and "
            f"{tuple(projection_view1.shape)}."
        )
    if negatives not in ("all", "cross_view"):
        raise ValueError(f"`negatives` must be 'all' or 'cross_view', got {negatives!r}.")
    z0 = F.normalize(projection_view0, dim=1)
    z1 = F.normalize(projection_view1, dim=1)
    batch_size = z0.shape[0]
    offset = 0
    all_z0, all_z1 = z0, z1
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if gather_distributed and distributed and torch.distributed.get_world_size() > 1:
        from torch.distributed.nn.functional import all_gather

        all_z0 = torch.cat(all_gather(z0), dim=0)
        all_z1 = torch.cat(all_gather(z1), dim=0)
        offset = torch.distributed.get_rank() * batch_size
    labels = torch.arange(batch_size, device=z0.device) + offset

    logits_01 = z0 @ all_z1.T / temperature
    logits_10 = z1 @ all_z0.T / temperature
    if negatives == "all":
        # Every column but the row's own, in order: a gather of static shape (a boolean mask would make the device
        # report how many entries it kept, a synchronisation each step, and break torch.compile's graph).
        columns = torch.arange(all_z0.shape[0] - 1, device=z0.device)[None]
        not_self = columns + (columns >= labels[:, None]).long()
        logits_00 = (z0 @ all_z0.T / temperature).gather(1, not_self)
        logits_11 = (z1 @ all_z1.T / temperature).gather(1, not_self)
        logits = torch.cat([torch.cat([logits_01, logits_00], 1), torch.cat([logits_10, logits_11], 1)], 0)
    else:
        logits = torch.cat([logits_01, logits_10], 0)
    labels = labels.repeat(2)
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
    return loss, logits, labels, accuracy


@dataclass
class AudioMosaicViewOutput(ModelOutput):
    """One pretraining view: encoder tokens (cls + kept patches), un-normalised pooled feature `pooled` (the
    authors' `f`), `fc_norm` output, projection (not L2-normalised), the kept patch indices and, when asked, the
    encoder's hidden states and attentions."""

    last_hidden_state: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    projection: torch.Tensor | None = None
    keep_patch_indices: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class AudioMosaicForPreTrainingOutput(ModelOutput):
    """
    loss: NT-Xent loss (when `return_loss`). contrastive_accuracy: top-1 accuracy of the positive among the
    logits. logits / labels: the NT-Xent logits and targets. projection_view0 / projection_view1: projector
    outputs (not L2-normalised). pooler_output_view0 / pooler_output_view1: `fc_norm` of the pooled features.
    hidden_states / attentions (with `output_hidden_states` / `output_attentions`): the encoder's embeddings and
    block outputs / attention weights for view 0, the time-masked view, under the names transformers' tools read
    (like [`BaseModelOutput`]'s); hidden_states_view1 / attentions_view1: the same for view 1. In training each
    view keeps only its own patch tokens, so the two views' sequence lengths may differ.
    """

    loss: torch.Tensor | None = None
    contrastive_accuracy: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    projection_view0: torch.Tensor | None = None
    projection_view1: torch.Tensor | None = None
    pooler_output_view0: torch.Tensor | None = None
    pooler_output_view1: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states_view1: tuple[torch.Tensor, ...] | None = None
    attentions_view1: tuple[torch.Tensor, ...] | None = None


class AudioMosaicForPreTraining(AudioMosaicPreTrainedModel):
    """AudioMosaic with the contrastive projector: two views of each clip, one time-masked and one
    frequency-masked (in training), projected and contrasted with NT-Xent. With `output_hidden_states` /
    `output_attentions` the encoder's hidden states and attentions of both views are returned (`hidden_states` /
    `attentions` for view 0, `hidden_states_view1` / `attentions_view1` for view 1)."""

    def __init__(self, config: AudioMosaicConfig):
        super().__init__(config)
        self.audiomosaic = AudioMosaicModel(config)
        self.projector = AudioMosaicProjector(config)
        self.post_init()

    def forward_view(
        self,
        input_values: torch.Tensor,
        view: int,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> AudioMosaicViewOutput:
        """Encode one view; in training mode its patches are masked as `config.pretraining_masking` says for `view`
        (0 = time-masked, 1 = frequency-masked). Eval mode never masks, as in the authors' code. The output flags
        fall back to the config."""
        keep = None
        if self.training:
            input_values = self.audiomosaic._check_input(input_values)
            num_time_patches, _ = self.audiomosaic.patch_grid(input_values.shape[1])
            keep = pretraining_view_keep_indices(
                self.config, view, num_time_patches, input_values.shape[0], input_values.device
            )
        encoded = self.audiomosaic(
            input_values,
            attention_mask=attention_mask,
            keep_patch_indices=keep,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        return AudioMosaicViewOutput(
            last_hidden_state=encoded.last_hidden_state,
            pooled=self.audiomosaic.pool(encoded.last_hidden_state, encoded.token_mask),
            pooler_output=encoded.pooler_output,
            projection=self.projector(encoded.pooler_output),
            keep_patch_indices=keep,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )

    def forward(
        self,
        input_values: torch.Tensor,
        input_values_view1: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        attention_mask_view1: torch.Tensor | None = None,
        return_loss: bool = True,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AudioMosaicForPreTrainingOutput | tuple:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, frames, num_mel_bins)`): view 0 (time-masked in
        training). input_values_view1 (*optional*): view 1 (frequency-masked in training); defaults to
        `input_values`, so that the masking alone makes the two views. attention_mask / attention_mask_view1
        (*optional*): frame masks of the two views. return_loss (`bool`, defaults to `True`): compute the NT-Xent loss,
        with negatives gathered from every process of an initialised `torch.distributed` run.
        output_hidden_states / output_attentions (`bool`, *optional*, default from the config): return the encoder's
        hidden states / attention weights of both views (see [`AudioMosaicForPreTrainingOutput`]).
        """
        output_hidden_states, output_attentions, return_dict = self.resolve_output_flags(
            output_hidden_states, output_attentions, return_dict
        )
        if input_values_view1 is None:
            input_values_view1, attention_mask_view1 = input_values, attention_mask
        # Two separate passes, as in the authors' loss: the projector's BatchNorm normalises each view on its own.
        view0 = self.forward_view(input_values, 0, attention_mask, output_hidden_states, output_attentions)
        view1 = self.forward_view(input_values_view1, 1, attention_mask_view1, output_hidden_states, output_attentions)
        loss = accuracy = logits = labels = None
        if return_loss:
            loss, logits, labels, accuracy = contrastive_loss(
                view0.projection, view1.projection, self.config.temperature, self.config.contrastive_negatives
            )
        output = AudioMosaicForPreTrainingOutput(
            loss=loss,
            contrastive_accuracy=accuracy,
            logits=logits,
            labels=labels,
            projection_view0=view0.projection,
            projection_view1=view1.projection,
            pooler_output_view0=view0.pooler_output,
            pooler_output_view1=view1.pooler_output,
            hidden_states=view0.hidden_states,
            attentions=view0.attentions,
            hidden_states_view1=view1.hidden_states,
            attentions_view1=view1.attentions,
        )
        return output if return_dict else output.to_tuple()


# ----------------------------------------------------------------------------------------------------------------------
# Classification heads
# ----------------------------------------------------------------------------------------------------------------------


def pooled_blocks(encoder: AudioMosaicModel, encoded: AudioMosaicModelOutput) -> torch.Tensor:
    """(B, depth, D): `encoder.pool` of every block output (`encoded` needs `hidden_states`)."""
    return torch.stack([encoder.pool(hidden, encoded.token_mask) for hidden in encoded.hidden_states[1:]], dim=1)


def standardized_block_means(encoder: AudioMosaicModel, encoded: AudioMosaicModelOutput) -> torch.Tensor:
    """(B, depth, D): token mean (padding excluded) of every block output standardised per token, i.e. passed through
    a LayerNorm without its affine map (`encoded` needs `hidden_states`)."""
    eps = encoder.config.layer_norm_eps
    return torch.stack(
        [masked_mean(F.layer_norm(hidden, hidden.shape[-1:], eps=eps), encoded.token_mask)
         for hidden in encoded.hidden_states[1:]],
        dim=1,
    )


# What a head reads (its `reads`), computed from the encoder output. The per-block inputs are all a probe over layers
# needs, so a frozen encoder's features can be cached once and fed to the same head modules (training/probe.py).
HEAD_INPUTS: dict[str, Callable[[AudioMosaicModel, AudioMosaicModelOutput], torch.Tensor]] = {
    "pooled": lambda encoder, encoded: encoder.pool(encoded.last_hidden_state, encoded.token_mask),  # (B, D)
    "pooled_blocks": pooled_blocks,  # (B, depth, D)
    "standardized_block_means": standardized_block_means,  # (B, depth, D)
    "tokens": lambda encoder, encoded: encoded.last_hidden_state,  # (B, 1 + L, D), cls first
}
BLOCK_HEAD_INPUTS = ("pooled_blocks", "standardized_block_means")


def with_final_output(blocks: torch.Tensor) -> torch.Tensor:
    """(B, depth, D) -> the (B, depth + 1, D) entries the authors' probes read: every block plus the final output,
    which is the last block again because the released encoder has no final norm (kept for checkpoint
    compatibility)."""
    return torch.cat([blocks, blocks[:, -1:]], dim=1)


class AudioMosaicHead(nn.Module):
    """Base of the classification heads. `reads` names the [`HEAD_INPUTS`] entry the head takes; a head returns the
    feature that `fc_norm` -> dropout -> `classifier` turn into logits, unless it sets `num_outputs` (it then returns
    the logits itself). `training_patch_masking`: the fine-tuning patch masking (`mask_time_prob`, `mask_freq_prob`)
    applies, as in the authors' classifier; their probes and AASIST never mask."""

    reads: str = "pooled"
    num_outputs: int | None = None
    training_patch_masking: bool = False

    def __init__(self, config: AudioMosaicConfig):
        super().__init__()


class AudioMosaicPooledHead(AudioMosaicHead):
    """`classifier_type="linear"`, the authors' fine-tuning classifier: takes the pooled last block (B, D) as it is."""

    training_patch_masking = True

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled


class AudioMosaicLayerProbe(AudioMosaicHead):
    """`classifier_type="layer_probe"`: takes every block pooled (B, depth, D), returns block `config.probe_layer`."""

    reads = "pooled_blocks"

    def __init__(self, config: AudioMosaicConfig):
        super().__init__(config)
        self.config = config

    def forward(self, pooled_blocks: torch.Tensor) -> torch.Tensor:
        return pooled_blocks[:, self.config.probe_layer]


class AudioMosaicWeightedSumProbe(AudioMosaicHead):
    """`classifier_type="weighted_sum_probe"`: takes every block pooled (B, depth, D) and the mixing logits
    `layer_weights` (depth + 1,), returns the softmax-weighted sum of the depth + 1 entries (pooling is linear, so
    this is the pooled weighted sum of the blocks). The logits are a parameter of the model, not of this module: the
    authors' checkpoints store them at the root as `layer_weights` (like Wav2Vec2's weighted layer sum)."""

    reads = "pooled_blocks"

    def forward(self, pooled_blocks: torch.Tensor, layer_weights: torch.Tensor) -> torch.Tensor:
        return (with_final_output(pooled_blocks) * layer_weights.softmax(dim=0)[:, None]).sum(dim=1)


class AudioMosaicAttentiveProbe(AudioMosaicHead):
    """`classifier_type="attentive_probe"`, the authors' attentive probe: every layer entry gets its own LayerNorm
    and is token-averaged; a learned query attends over the layers (keys and values are bias-free linear maps).

    Takes every block's standardised token mean (B, depth, D) (`standardized_block_means`) and applies each
    LayerNorm's affine map after the mean: mean_t(LN_k(h_t)) = gamma_k * mean_t(standardise(h_t)) + beta_k, since
    only the affine map is learned. The full model and cached features therefore run the same code."""

    reads = "standardized_block_means"

    def __init__(self, config: AudioMosaicConfig):
        super().__init__(config)
        self.num_heads = config.attentive_probe_heads
        self.head_dim = config.hidden_size // self.num_heads
        num_entries = config.num_hidden_layers + 1
        self.layer_norms = nn.ModuleList(
            [nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) for _ in range(num_entries)]
        )
        self.query = nn.Parameter(torch.zeros(1, self.num_heads, 1, self.head_dim))
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, standardized_block_means: torch.Tensor) -> torch.Tensor:
        gamma = torch.stack([norm.weight for norm in self.layer_norms])
        beta = torch.stack([norm.bias for norm in self.layer_norms])
        layer_means = with_final_output(standardized_block_means) * gamma + beta  # (B, layers, D)
        batch_size, num_layers, _ = layer_means.shape
        keys = self.key(layer_means).view(batch_size, num_layers, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.value(layer_means).view(batch_size, num_layers, self.num_heads, self.head_dim).transpose(1, 2)
        weights = (self.query @ keys.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)
        return (weights @ values).reshape(batch_size, -1)


# `config.classifier_type` -> head. The model registers the head under that name, which is its checkpoint prefix
# (`attentive_probe.*`, `aasist.*`; the others have no parameters of their own).
CLASSIFIER_HEADS: dict[str, type[nn.Module]] = {
    "linear": AudioMosaicPooledHead,
    "layer_probe": AudioMosaicLayerProbe,
    "weighted_sum_probe": AudioMosaicWeightedSumProbe,
    "attentive_probe": AudioMosaicAttentiveProbe,
    "aasist": AudioMosaicAASISTHead,
}


class AudioMosaicForAudioClassification(AudioMosaicPreTrainedModel):
    """AudioMosaic with a classification head chosen by `config.classifier_type` from [`CLASSIFIER_HEADS`]: the
    authors' fine-tuning head (pool -> `fc_norm` -> dropout -> linear), their three probes (one layer,
    softmax-weighted sum of layers, attentive over layers) or the AASIST back-end for deepfake detection. With
    `config.freeze_encoder` only the head (and `fc_norm`, as in the authors' probes) trains and the encoder stays in
    eval mode."""

    def __init__(self, config: AudioMosaicConfig):
        super().__init__(config)
        if config.classifier_type not in CLASSIFIER_HEADS:
            raise ValueError(
                f"Unknown classifier_type {config.classifier_type!r}; choose from {sorted(CLASSIFIER_HEADS)}."
            )
        head_class = CLASSIFIER_HEADS[config.classifier_type]
        if head_class.num_outputs is not None and config.num_labels != head_class.num_outputs:
            raise ValueError(
                f"The {config.classifier_type!r} head has exactly {head_class.num_outputs} outputs; got "
                f"`num_labels={config.num_labels}`."
            )
        self.audiomosaic = AudioMosaicModel(config)
        self.head_name = config.classifier_type
        self.add_module(self.head_name, head_class(config))
        # The weighted-sum probe's mixing logits sit at the root, under the authors' checkpoint key.
        self.layer_weights = (
            nn.Parameter(torch.zeros(config.num_hidden_layers + 1))
            if head_class is AudioMosaicWeightedSumProbe
            else None
        )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = (
            nn.Linear(config.hidden_size, config.num_labels) if head_class.num_outputs is None else None
        )
        if config.freeze_encoder:
            self.freeze_encoder()
        self.post_init()

    @property
    def head(self) -> nn.Module:
        """The classification head, registered under its `classifier_type`."""
        return getattr(self, self.head_name)

    def freeze_encoder(self) -> None:
        """Train only the head and `fc_norm` (the authors' linear probe); the encoder is kept in eval mode."""
        for name, parameter in self.audiomosaic.named_parameters():
            parameter.requires_grad_(name.startswith("fc_norm."))
        self.config.freeze_encoder = True
        self.audiomosaic.eval()

    def train(self, mode: bool = True) -> "AudioMosaicForAudioClassification":
        super().train(mode)
        if self.config.freeze_encoder:
            self.audiomosaic.eval()
        return self

    def _training_keep_indices(self, input_values: torch.Tensor) -> torch.Tensor | None:
        """Fine-tuning patch masking (the authors' `random_masking_2d`) on the true (time, frequency) grid, for any
        input length: drop a fraction of time rows, then of frequency columns."""
        config = self.config
        if not (self.training and not config.freeze_encoder and self.head.training_patch_masking):
            return None
        if config.mask_time_prob == 0 and config.mask_freq_prob == 0:
            return None
        input_values = self.audiomosaic._check_input(input_values)
        num_time_patches, num_freq_patches = self.audiomosaic.patch_grid(input_values.shape[1])
        return patch_keep_indices("time_frequency", input_values.shape[0], num_time_patches, num_freq_patches,
                                  config.mask_time_prob, config.mask_freq_prob, 0, input_values.device)

    def head_input(self, encoded: AudioMosaicModelOutput) -> torch.Tensor:
        """What the head reads (`self.head.reads`, see [`HEAD_INPUTS`]), from the encoder output."""
        return HEAD_INPUTS[self.head.reads](self.audiomosaic, encoded)

    def head_output(self, head_input: torch.Tensor) -> torch.Tensor:
        """The head applied to its input: a feature for `fc_norm`, or the logits of a head with `num_outputs`."""
        if self.layer_weights is not None:
            return self.head(head_input, self.layer_weights)
        return self.head(head_input)

    def head_features(self, encoded: AudioMosaicModelOutput) -> torch.Tensor:
        """`fc_norm` of the head's feature: what the linear classifier reads (heads without `num_outputs`)."""
        return self.audiomosaic.fc_norm(self.head_output(self.head_input(encoded)))

    def head_logits(self, head_input: torch.Tensor) -> torch.Tensor:
        """Logits from the head's input: from `head_input(encoder output)` in `forward`, or from features cached
        for a frozen encoder (training/probe.py), through the same modules."""
        output = self.head_output(head_input)
        if self.classifier is None:
            return output
        return self.classifier(self.dropout(self.audiomosaic.fc_norm(output)))

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of `logits`: cross-entropy weighted by `config.class_weights` for class indices, else
        transformers' loss for `config.problem_type` (binary cross-entropy for multi-hot targets)."""
        if self.config.class_weights is not None and labels.ndim == 1:
            weight = torch.tensor(self.config.class_weights, dtype=logits.dtype, device=logits.device)
            return F.cross_entropy(logits, labels.long(), weight=weight)
        return self.loss_function(labels, logits, self.config)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, frames, num_mel_bins)`): normalised log-Mel features
        from [`AudioMosaicFeatureExtractor`]. attention_mask (`torch.LongTensor` of shape `(batch_size, frames)`,
        *optional*): 1 for real frames. labels (*optional*): class indices `(batch_size,)` for single-label
        cross-entropy, or multi-hot floats `(batch_size, num_labels)` for multi-label BCE (`config.problem_type`).
        """
        output_hidden_states, output_attentions, return_dict = self.resolve_output_flags(
            output_hidden_states, output_attentions, return_dict
        )
        encoded = self.audiomosaic(
            input_values,
            attention_mask=attention_mask,
            keep_patch_indices=self._training_keep_indices(input_values),
            output_hidden_states=self.head.reads in BLOCK_HEAD_INPUTS or output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.head_logits(self.head_input(encoded))

        loss = self.classification_loss(logits, labels) if labels is not None else None

        output = SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
            attentions=encoded.attentions,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "AudioMosaicForAudioClassification",
    "AudioMosaicForPreTraining",
    "AudioMosaicModel",
    "AudioMosaicPreTrainedModel",
    "contrastive_loss",
    "resize_position_embeddings",
]
