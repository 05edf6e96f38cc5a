"""Per-head attention outputs and per-layer hidden states of an AudioMosaic encoder, collected in one batched pass
with forward pre-hooks and cached on disk.

Index conventions (0-based everywhere): head activations are indexed by block (0 = first transformer block) and
head; pooled hidden states by position in the model's `hidden_states` output (0 = embedding output, i = output of
block i - 1).

The hook point is the input of each block's attention output projection (`layers[i].attention.o_proj`): the
concatenated per-head attention outputs before W_O, the quantity SAVs and CALM read at an LLM's last token.
transformers 5 removed `head_mask`, and fused SDPA kernels expose no attention weights, so hooks on this
projection are the one place where heads can be read and edited. Plain `torch` hooks are used: nnsight and pyvene
would add a tracing layer (and, for pyvene, an IPython/plotnine dependency tree) for what is one pre-hook per block.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..caching import atomic_write, fingerprint, model_fingerprint
from ..validation import check_value, corrupt_file, integer


POOLINGS = ("mean", "mean_patches", "cls", "cls+mean")
CACHE_VERSION = 1


def pool_tokens(tokens: torch.Tensor, pooling: str, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pool (batch, tokens, ...) over the token axis (token 0 is cls): "mean" over all real tokens (cls included,
    as AudioMosaic's readout does), "mean_patches" over the real patch tokens, "cls", or "cls+mean" concatenated on
    the last axis. `token_mask` (batch, tokens), 1 for real tokens, excludes padded patch rows from the means."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {POOLINGS}.")
    if pooling == "cls":
        return tokens[:, 0]
    if pooling == "cls+mean":
        return torch.cat([tokens[:, 0], pool_tokens(tokens, "mean", token_mask)], dim=-1)
    if token_mask is None:
        token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    weights = token_mask.to(tokens.dtype)
    if pooling == "mean_patches":
        weights = weights.clone()
        weights[:, 0] = 0
    weights = weights.reshape(*weights.shape, *([1] * (tokens.ndim - 2)))
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def attention_output_projections(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The attention output projection of every block of an `AudioMosaicModel` (or a model wrapping one)."""
    encoder = getattr(model, "audiomosaic", model)
    layers = getattr(encoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no AudioMosaic blocks (`layers`); pass an AudioMosaicModel.")
    return [layer.attention.o_proj for layer in layers]


class HeadOutputCollector:
    """Context manager that records the input of each block's attention output projection.

        >>> with HeadOutputCollector(model) as collector:
        ...     output = model(input_values)
        >>> heads = collector.pooled("mean", output.token_mask)  # (batch, layers, heads, head_dim)

    `outputs[i]` is block `layers[i]`'s (batch, tokens, hidden) projection input of the last forward pass;
    `head_index_` lists the (block, head) pair of each flattened head.
    """

    def __init__(self, model: torch.nn.Module, layers: list[int] | None = None):
        projections = attention_output_projections(model)
        config = getattr(model, "config")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.layers = list(range(len(projections))) if layers is None else list(layers)
        for layer in self.layers:
            if not 0 <= layer < len(projections):
                raise ValueError(f"Block {layer} does not exist; the model has blocks 0..{len(projections) - 1}.")
        self._projections = projections
        self._handles: list = []
        self.outputs: dict[int, torch.Tensor] = {}

    @property
    def head_index_(self) -> list[tuple[int, int]]:
        return [(layer, head) for layer in self.layers for head in range(self.num_heads)]

    def _hook(self, layer: int):
        def record(module, args):
            self.outputs[layer] = args[0].detach()

        return record

    def __enter__(self) -> "HeadOutputCollector":
        self._handles = [self._projections[i].register_forward_pre_hook(self._hook(i)) for i in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def pooled(self, pooling: str = "mean", token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, layers, heads, head_dim) pooled per-head outputs of the last forward pass ("cls+mean" doubles
        head_dim)."""
        if not self.outputs:
            raise RuntimeError("No forward pass was recorded; run the model inside the `with` block first.")
        per_layer = []
        for layer in self.layers:
            tokens = self.outputs[layer]
            heads = tokens.reshape(*tokens.shape[:2], self.num_heads, self.head_dim)
            per_layer.append(pool_tokens(heads, pooling, token_mask))
        return torch.stack(per_layer, dim=1)


@dataclass
class Activations:
    """Cached activations of a dataset (row i = clip i).

    heads: (clips, blocks, heads, head_dim) pooled attention-head outputs (pre W_O).
    hidden: (clips, blocks + 1, hidden) pooled hidden states; index 0 is the embedding output.
    tokens: optional (clips, patches, hidden) patch tokens of `hidden_states[token_layer]` (cls excluded),
        time-major on the (time_patches, freq_patches) grid.
    """

    heads: torch.Tensor
    hidden: torch.Tensor
    tokens: torch.Tensor | None = None
    token_layer: int | None = None
    grid: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    def head_features(self) -> np.ndarray:
        """(clips, blocks * heads, head_dim) float32 array for the few-shot classifiers."""
        heads = self.heads.float()
        return heads.reshape(heads.shape[0], -1, heads.shape[-1]).numpy()

    def save(self, path: str | Path) -> None:
        tensors = {"heads": self.heads.half().contiguous(), "hidden": self.hidden.half().contiguous()}
        if self.tokens is not None:
            tensors["tokens"] = self.tokens.half().contiguous()
        meta = {**self.meta, "token_layer": self.token_layer, "grid": self.grid, "version": CACHE_VERSION}
        with atomic_write(path) as partial:
            save_file(tensors, str(partial), metadata={"meta": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> "Activations":
        """Read a file written by `save`; a truncated or foreign file is a `ValueError` naming it."""
        from safetensors import SafetensorError, safe_open

        if not Path(path).is_file():
            raise FileNotFoundError(f"Activation cache {path} does not exist.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads(handle.metadata()["meta"])
            tensors = load_file(str(path))
            grid = meta.pop("grid")
            return cls(
                heads=tensors["heads"].float(),
                hidden=tensors["hidden"].float(),
                tokens=tensors["tokens"].float() if "tokens" in tensors else None,
                token_layer=meta.pop("token_layer"),
                grid=tuple(grid) if grid else None,
                meta=meta,
            )
        except (SafetensorError, OSError, KeyError, TypeError, AttributeError, ValueError) as error:
            reason = repr(error) if isinstance(error, KeyError) else error  # a KeyError's text is only the key
            raise corrupt_file(path, "safetensors activation cache", reason) from None


def cache_key(model: torch.nn.Module, files: list[str], options: dict) -> str:
    """Hash of (model weights, audio files with their size and modification time, extraction options)."""
    stats = [(str(Path(name).resolve()), (stat := Path(name).stat()).st_size, stat.st_mtime_ns) for name in files]
    return fingerprint(model_fingerprint(model), stats, options)


@torch.no_grad()
def collect_activations(
    model: torch.nn.Module,
    feature_extractor,
    files: list[str],
    pooling: str = "mean",
    token_layer: int | None = None,
    mask_padding: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> Activations:
    """Run `model` (an `AudioMosaicModel`) once over audio `files` and pool every block's per-head attention
    outputs and every hidden state. `token_layer` (a `hidden_states` index) also keeps that layer's patch tokens,
    for token-level sparse autoencoders and patch-grid maps. `mask_padding` excludes padded frames of short clips
    from attention and pooling (the released checkpoints were trained with the padding included)."""
    from tqdm.auto import tqdm

    from ..feature_extraction_audiomosaic import load_audio

    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {POOLINGS}.")
    if not files:
        raise ValueError("collect_activations needs at least one audio file.")
    batch_size = check_value("batch_size", batch_size, integer(minimum=1))
    missing = next((name for name in files if not Path(name).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"Audio file {missing} does not exist.")
    num_states = model.config.num_hidden_layers + 1
    if token_layer is not None and not 0 <= token_layer < num_states:
        raise ValueError(f"token_layer {token_layer} is out of range 0..{num_states - 1} (0 = embedding output).")
    model.eval()
    device = next(model.parameters()).device
    heads, hidden, tokens = [], [], []
    grid = None
    with HeadOutputCollector(model) as collector:
        starts = range(0, len(files), batch_size)
        for start in tqdm(starts, desc="activations", unit="batch", disable=not progress):
            waveforms = [load_audio(name, feature_extractor.sampling_rate) for name in files[start: start + batch_size]]
            batch = feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt",
                                      return_attention_mask=mask_padding)
            output = model(batch["input_values"].to(device),
                           attention_mask=batch["attention_mask"].to(device) if mask_padding else None,
                           output_hidden_states=True)
            heads.append(collector.pooled(pooling, output.token_mask).half().cpu())
            hidden.append(torch.stack([pool_tokens(state, "mean", output.token_mask)
                                       for state in output.hidden_states], dim=1).half().cpu())
            if token_layer is not None:
                tokens.append(output.hidden_states[token_layer][:, 1:].half().cpu())
            grid = (batch["input_values"].shape[1] // model.config.patch_size,
                    model.config.num_mel_bins // model.config.patch_size)
    return Activations(
        heads=torch.cat(heads).float(),
        hidden=torch.cat(hidden).float(),
        tokens=torch.cat(tokens).float() if tokens else None,
        token_layer=token_layer,
        grid=grid,
        meta={"files": list(files), "pooling": pooling, "mask_padding": mask_padding},
    )


def load_or_collect_activations(
    model: torch.nn.Module,
    feature_extractor,
    files: list[str],
    cache_dir: str | Path | None,
    pooling: str = "mean",
    token_layer: int | None = None,
    mask_padding: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[Activations, Path | None, bool]:
    """`collect_activations` behind an on-disk cache keyed by (model weights, files, options). Returns
    (activations, cache path or None, whether it came from the cache). A cache file that cannot be read (truncated,
    foreign) is only a cache: it is recomputed and replaced, with a note on stderr."""
    options = {"pooling": pooling, "token_layer": token_layer, "mask_padding": mask_padding,
               "feature_extractor": feature_extractor.to_json_string(), "version": CACHE_VERSION}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"activations-{cache_key(model, files, options)}.safetensors"
        if path.is_file():
            try:
                return Activations.load(path), path, True
            except ValueError as error:
                print(f"{error}; recomputing it.", file=sys.stderr)
    activations = collect_activations(model, feature_extractor, files, pooling=pooling, token_layer=token_layer,
                                      mask_padding=mask_padding, batch_size=batch_size, progress=progress)
    if path is not None:
        activations.save(path)
    return activations, path, False
