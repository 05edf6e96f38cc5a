"""Peak memory of a pretraining step, estimated without running it, and the gradient checkpointing that fits a budget.

`estimate_peak_memory_gib` runs one step of `AudioMosaicForPreTraining` (both views, backward, AdamW) under torch's
`FakeTensorMode` with `MemTracker` on CPU: tensors have shapes and no data, so the estimate takes seconds of CPU and no
accelerator, and it counts what the step keeps alive (parameters, gradients, AdamW state, saved activations,
temporaries) as `torch.cuda.max_memory_allocated` does. With bf16 autocast it follows CPU autocast's casting rules,
close enough to CUDA's for this encoder, as the comparison shows. Checked against an H200 (ViT-B/16, 1024 frames, batch 256, bf16):
20.2 / 10.2 / 43.7 GiB estimated for 70 % / all / no blocks checkpointed against 20.7 / 10.6 / 44.3 GiB measured
(`benchmarks/RESULTS.md`, "Pretraining memory").

The step is traced at the batch size asked for: the time a fake step takes hardly depends on it, and the peak does not
scale linearly from small batches (there the optimizer's state, not the activations, sets it, and where the peak falls
moves with the checkpointing). Memory falls monotonically as blocks are checkpointed, so
`checkpointed_blocks_for_memory` bisects over their number (about log2(depth) + 1 traces).
"""

import functools
import json
import logging
from collections.abc import Callable

import torch

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicForPreTraining

from .optim import build_optimizer


logger = logging.getLogger("audiomosaic.memory")

def checkpoint_blocks(model: AudioMosaicForPreTraining, num_checkpointed: int) -> list[bool]:
    """Recompute the activations of the first `num_checkpointed` encoder blocks in backward (non-reentrant
    `torch.utils.checkpoint`, through transformers' gradient-checkpointing switch); returns the per-block flags."""
    layers = model.audiomosaic.layers
    if not 0 <= num_checkpointed <= len(layers):
        raise ValueError(f"Can checkpoint 0 to {len(layers)} blocks, got {num_checkpointed}.")
    if num_checkpointed == 0:
        return [False] * len(layers)
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index < num_checkpointed
    return [layer.gradient_checkpointing for layer in layers]


def traced_peak_gib(config: AudioMosaicConfig, batch_size: int, prepare: Callable[[AudioMosaicForPreTraining], None],
                    bf16: bool = True, autocast_cache: bool = True) -> float:
    """Peak memory (GiB) of a pretraining step of `batch_size` clips traced under `FakeTensorMode` (see the module
    docstring), after `prepare(model)` set up its checkpointing. `autocast_cache=False` traces autocast without its
    weight-cast cache (each use casts its weights), which selective checkpointing of blocks that see both views needs
    (pytorch/pytorch#193338)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    with torch.device("meta"):
        model = AudioMosaicForPreTraining(config)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device="cpu").train()
        # MemTracker hooks every parameter's gradient; the projector's frozen BatchNorm bias (2 x 512 values) is
        # counted as trainable, a few KiB too many.
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        prepare(model)
        optimizer = build_optimizer(model, 1e-3, 0.05)
        views = [torch.empty(batch_size, config.max_length, config.num_mel_bins) for _ in range(2)]
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            for step in range(2):  # the second step has the AdamW state from the first, as every later one
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16, cache_enabled=autocast_cache):
                    output = model(input_values=views[0], input_values_view1=views[1], return_loss=False)
                    # The loss's own memory is negligible; a stand-in that reads both projections keeps the graph.
                    loss = (output.projection_view0.float() * output.projection_view1.float()).sum()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step == 0:
                    tracker.reset_mod_stats()
        peak = tracker.get_tracker_snapshot("peak")
    return sum(device_stats.get("Total", 0) for device_stats in peak.values()) / 2**30


@functools.lru_cache(maxsize=64)
def _traced_peak_gib(config_json: str, batch_size: int, num_checkpointed: int, bf16: bool) -> float:
    config = AudioMosaicConfig.from_dict(json.loads(config_json))
    return traced_peak_gib(config, batch_size, lambda model: checkpoint_blocks(model, num_checkpointed), bf16)


def estimate_peak_memory_gib(config: AudioMosaicConfig, batch_size: int, num_checkpointed: int,
                             mixed_precision: str = "bf16") -> float:
    """Estimated peak memory (GiB) of one pretraining step per device: `batch_size` clips of `config.max_length`
    frames, the first `num_checkpointed` blocks checkpointed, attention as `config` says."""
    return _traced_peak_gib(config.to_json_string(use_diff=False), batch_size, num_checkpointed,
                            mixed_precision == "bf16")


def checkpointed_blocks_for_memory(config: AudioMosaicConfig, batch_size: int, memory_gib: float,
                                   mixed_precision: str = "bf16") -> tuple[int, float]:
    """The fewest checkpointed blocks (the fastest step) whose estimated peak fits `memory_gib` per device, and that
    estimate. Raises a ValueError naming the smallest peak if even checkpointing every block does not fit."""
    def estimate(blocks: int) -> float:
        return estimate_peak_memory_gib(config, batch_size, blocks, mixed_precision)

    depth = config.num_hidden_layers
    if estimate(depth) > memory_gib:
        raise ValueError(
            f"--gradient_checkpointing_memory_gib {memory_gib:g}: a step of {batch_size} clips needs about "
            f"{estimate(depth):.1f} GiB even with all {depth} blocks checkpointed; lower "
            "--per_device_train_batch_size or raise the budget.")
    low, high = 0, depth  # the answer lies in [low, high]; memory falls as blocks are checkpointed
    while low < high:
        middle = (low + high) // 2
        if estimate(middle) <= memory_gib:
            high = middle
        else:
            low = middle + 1
    return low, estimate(low)


__all__ = ["checkpoint_blocks", "checkpointed_blocks_for_memory", "estimate_peak_memory_gib", "traced_peak_gib"]
