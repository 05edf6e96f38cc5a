"""AudioMosaic model configuration."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


PRETRAINING_MASKING_STRATEGIES = ("official", "paper", "time", "frequency", "unstructured", "none")
CONTRASTIVE_NEGATIVES = ("all", "cross_view")
POOLING_MODES = ("mean", "cls")
CLASSIFIER_TYPES = ("linear", "layer_probe", "weighted_sum_probe", "attentive_probe", "aasist")
PROJECTOR_NORMS = ("batch_norm", "none")
POSITION_EMBEDDING_INITS = ("official", "grid")


@strict
class AudioMosaicConfig(PreTrainedConfig):
    r"""
    Configuration of an AudioMosaic encoder (a ViT over 16x16 patches of 128-bin Kaldi log-Mel spectrograms) and of
    its pretraining and classification heads. The defaults reproduce the released ViT-B/16 pretraining configuration
    of the authors' code (`HanxunH/AudioMosaic`, `configs/.../pretrain.yaml`).

    Args:
        hidden_size (`int`, defaults to 768): width of the encoder.
        num_hidden_layers (`int`, defaults to 12): number of transformer blocks.
        num_attention_heads (`int`, defaults to 12): attention heads per block.
        intermediate_size (`int`, defaults to 3072): width of the MLP.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact erf GELU, as the authors' `nn.GELU`).
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and MLP.
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on attention probabilities.
        drop_path_rate (`float`, defaults to 0.1): stochastic depth of the last block; block `i` uses
            `drop_path_rate * i / (num_hidden_layers - 1)` (timm's linear schedule).
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal init of linear/conv weights.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm.
        qkv_bias (`bool`, defaults to `True`): bias on the fused query/key/value projection.
        proj_bias (`bool`, defaults to `True`): bias on the attention output projection and the MLP layers.
        patch_size (`int`, defaults to 16): side of the square, non-overlapping patches.
        num_mel_bins (`int`, defaults to 128): mel bins of the input spectrogram.
        max_length (`int`, defaults to 1024): longest input in frames; sets the number of positional embeddings.
            Shorter inputs use the first `ceil(T / patch_size)` time rows.
        position_embedding_init (`str`, defaults to `"official"`): `"official"` reproduces the authors' 2-D sin-cos
            initialisation on their frequency-first `patch_hw` grid; `"grid"` initialises on the true (time,
            frequency) grid. Only matters when training from scratch.
        pooling (`str`, defaults to `"mean"`): `"mean"` averages all tokens including cls (padding excluded),
            `"cls"` takes the cls token; either is followed by `fc_norm`.
        projection_hidden_size (`int`, defaults to 512): hidden width of the pretraining projector.
        projection_dim (`int`, defaults to 128): output width of the pretraining projector.
        projector_norm (`str`, defaults to `"batch_norm"`): `"batch_norm"` is the authors' projector (BatchNorm1d
            after the first linear, bias-free BatchNorm1d after the second); `"none"` drops both norms, which makes
            the loss of a data-parallel run independent of how the batch is split.
        temperature (`float`, defaults to 0.1): NT-Xent temperature.
        contrastive_negatives (`str`, defaults to `"all"`): `"all"` is the released loss (cross-view and same-view
            negatives, logits of shape (2n, 2m-1)); `"cross_view"` is the paper's Eq. 4 (cross-view negatives only).
        pretraining_masking (`str`, defaults to `"official"`): how the two views are masked. `"official"`: view 0
            time-masked and view 1 frequency-masked on the authors' swapped `patch_hw` grid (reproduces released
            runs; for non-square inputs the units are not true time rows/frequency bands); `"paper"`: time stripes
            and frequency bands on the true grid; `"time"` / `"frequency"`: both views masked along one axis;
            `"unstructured"`: both views MAE-style random token masking with `mask_ratio_unstructured`; `"none"`.
        mask_ratio_time (`float`, defaults to 0.6): fraction of time units dropped in the time view.
        mask_ratio_freq (`float`, defaults to 0.4): fraction of frequency units dropped in the frequency view.
        mask_ratio_unstructured (`float`, defaults to 0.5): fraction of tokens dropped by unstructured masking.
        classifier_type (`str`, defaults to `"linear"`): head of [`AudioMosaicForAudioClassification`]:
            `"linear"` (pool, `fc_norm`, dropout, linear), `"layer_probe"` (the same on block `probe_layer`),
            `"weighted_sum_probe"` (softmax-weighted sum of layers), `"attentive_probe"` (learned-query attention
            over layers) or `"aasist"` (AASIST graph-attention back-end over all tokens, 2 outputs).
        probe_layer (`int`, defaults to -1): block whose output the layer probe reads (0-based, negative counts
            from the end).
        attentive_probe_heads (`int`, defaults to 1): heads of the attentive probe.
        freeze_encoder (`bool`, defaults to `False`): train only the head (linear probing); the encoder then also
            stays in eval mode (no drop path, no patch masking), as in the authors' probes.
        classifier_dropout (`float`, defaults to 0.0): dropout before the linear head.
        mask_time_prob (`float`, defaults to 0.0): fine-tuning patch masking, fraction of time rows dropped in
            training (0.2 in the authors' recipes).
        mask_freq_prob (`float`, defaults to 0.0): fine-tuning patch masking, fraction of frequency columns dropped.
        class_weights (`list[float]`, *optional*): per-class weights of the single-label cross-entropy (EnvSDD).

    Example:

    ```python
    >>> from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicModel

    >>> config = AudioMosaicConfig()  # the released ViT-B/16
    >>> model = AudioMosaicModel(config)
    ```"""

    model_type = "audiomosaic"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    proj_bias: bool = True
    patch_size: int = 16
    num_mel_bins: int = 128
    max_length: int = 1024
    position_embedding_init: str = "official"
    pooling: str = "mean"
    projection_hidden_size: int = 512
    projection_dim: int = 128
    projector_norm: str = "batch_norm"
    temperature: float = 0.1
    contrastive_negatives: str = "all"
    pretraining_masking: str = "official"
    mask_ratio_time: float | int = 0.6
    mask_ratio_freq: float | int = 0.4
    mask_ratio_unstructured: float | int = 0.5
    classifier_type: str = "linear"
    probe_layer: int = -1
    attentive_probe_heads: int = 1
    freeze_encoder: bool = False
    classifier_dropout: float | int = 0.0
    mask_time_prob: float | int = 0.0
    mask_freq_prob: float | int = 0.0
    class_weights: list[float] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_values()

    def validate_values(self) -> None:
        """Raise a `ValueError` naming the field for values the model cannot be built with. Runs on construction;
        call it again after setting fields (e.g. overrides applied to a loaded config)."""

        def one_of(field: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, field) not in allowed:
                raise ValueError(f"`{field}` must be one of {allowed}, got {getattr(self, field)!r}.")

        for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"`{field}` must be a positive integer, got {getattr(self, field)}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.hidden_size % 4 != 0:
            raise ValueError(f"`hidden_size` must be a multiple of 4 for the 2-D sin-cos init, got {self.hidden_size}.")
        if self.patch_size > self.num_mel_bins or self.num_mel_bins % self.patch_size != 0:
            raise ValueError(
                f"`patch_size` ({self.patch_size}) must divide `num_mel_bins` ({self.num_mel_bins}) and not exceed it."
            )
        if self.patch_size > self.max_length:
            raise ValueError(f"`patch_size` ({self.patch_size}) is larger than `max_length` ({self.max_length}).")
        for field in ("mask_ratio_time", "mask_ratio_freq", "mask_ratio_unstructured", "mask_time_prob",
                      "mask_freq_prob", "drop_path_rate", "hidden_dropout_prob", "attention_probs_dropout_prob",
                      "classifier_dropout"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{field}` must be in [0, 1), got {value}.")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be positive, got {self.temperature}.")
        one_of("pooling", POOLING_MODES)
        one_of("pretraining_masking", PRETRAINING_MASKING_STRATEGIES)
        one_of("contrastive_negatives", CONTRASTIVE_NEGATIVES)
        one_of("classifier_type", CLASSIFIER_TYPES)
        one_of("projector_norm", PROJECTOR_NORMS)
        one_of("position_embedding_init", POSITION_EMBEDDING_INITS)
        if not -self.num_hidden_layers <= self.probe_layer < self.num_hidden_layers:
            raise ValueError(
                f"`probe_layer` must index one of the {self.num_hidden_layers} blocks, got {self.probe_layer}."
            )
        if self.hidden_size % self.attentive_probe_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `attentive_probe_heads` "
                f"({self.attentive_probe_heads})."
            )
        if self.class_weights is not None and len(self.class_weights) != self.num_labels:
            raise ValueError(
                f"`class_weights` has {len(self.class_weights)} entries but the model has {self.num_labels} labels."
            )


__all__ = ["AudioMosaicConfig"]
