"""Optimisation shared by the training scripts: AdamW parameter groups (weight-decay exclusions, layer-wise
learning-rate decay), the authors' learning-rate scaling and the warm-up + cosine schedule (transformers')."""

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup


NO_WEIGHT_DECAY = ("cls_token", "position_embeddings")


def layer_id(name: str, num_layers: int) -> int:
    """The authors' `get_layer_id_for_vit` on our parameter names (`num_layers` = depth + 1): embeddings 0, block i
    i + 1, everything else (pre-norm, fc_norm, heads, projector) `num_layers`."""
    name = name.removeprefix("audiomosaic.")
    if name in ("embeddings.cls_token", "embeddings.position_embeddings") or name.startswith(
        "embeddings.patch_embeddings."
    ):
        return 0
    if name.startswith("layers."):
        return int(name.split(".")[1]) + 1
    return num_layers


def parameter_groups(
    model: torch.nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    weight_decay_on_all_params: bool = False,
) -> list[dict]:
    """AdamW groups of the trainable parameters (frozen ones, like the projector's last BatchNorm bias, are left out).

    No weight decay for 1-D tensors (biases, norms), the cls token and the positional embeddings (timm's
    `param_groups_weight_decay`), unless `weight_decay_on_all_params` (the authors' probe classes pass no groups).
    Layer-wise decay (the authors' `param_groups_lrd`): `lr_scale` = layer_decay^(depth + 1 - layer_id). Parameters
    sharing an (lr_scale, weight_decay) pair share a group; groups carry `param_names` for inspection.
    """
    depth = model.config.num_hidden_layers
    groups: dict[tuple[float, float], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = not weight_decay_on_all_params and (parameter.ndim <= 1 or name.split(".")[-1] in NO_WEIGHT_DECAY)
        scale = layer_decay ** (depth + 1 - layer_id(name, depth + 1))
        decay = 0.0 if no_decay else weight_decay
        group = groups.setdefault((scale, decay), {"params": [], "param_names": [], "weight_decay": decay,
                                                   "lr_scale": scale})
        group["params"].append(parameter)
        group["param_names"].append(name)
    if not groups:
        raise ValueError("The model has no trainable parameters.")
    return list(groups.values())


def optimizer_kwargs(model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float = 1.0,
                     weight_decay_on_all_params: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                     eps: float = 1e-8) -> dict:
    """Keyword arguments of `torch.optim.AdamW` over `parameter_groups` (what Trainer's `optimizer_cls_and_kwargs`
    takes): each group's `lr` = learning_rate x lr_scale, and `lr` = learning_rate so that a min-lr schedule's floor
    applies at scale 1."""
    groups = parameter_groups(model, weight_decay, layer_decay, weight_decay_on_all_params)
    for group in groups:
        group["lr"] = learning_rate * group["lr_scale"]
    return {"params": groups, "lr": learning_rate, "betas": betas, "eps": eps}


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float = 1.0,
                    weight_decay_on_all_params: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with the keyword arguments of `optimizer_kwargs`."""
    return torch.optim.AdamW(**optimizer_kwargs(model, learning_rate, weight_decay, layer_decay,
                                                weight_decay_on_all_params, betas, eps))


def scaled_learning_rate(blr: float, effective_batch_size: int) -> float:
    """The authors' rule: learning rate = base learning rate x effective batch size / 256."""
    return blr * effective_batch_size / 256


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                           min_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0, then a half-cycle cosine to `min_lr` (each group keeps its lr_scale): transformers'
    `cosine_with_min_lr`, the authors' per-iteration `adjust_learning_rate`."""
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup_steps, total_steps, min_lr=min_lr)
