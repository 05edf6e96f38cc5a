"""Representation analysis: effective rank of pooled AudioMosaic representations under inference-time masking
(paper §4 / Fig. 2: how much of the representation space a masked view still spans).

    >>> from modeling_audiomosaic.analysis import effective_rank, effective_rank_analysis
    >>> effective_rank(torch.randn(1000, 64))  # close to 64 for isotropic data
    >>> results = effective_rank_analysis(encoder, batches, maskings=("none", "unstructured", "time_frequency"))

The effective rank (Roy & Vetterli, 2007; "RankMe", Garrido et al., 2023) of an (N, D) feature matrix is
exp(entropy of its normalised singular values), p_k = s_k / sum(s) (+ eps): D for perfectly spread features, 1 for
features on a line. Maskings drop patch tokens after the patch embedding, exactly as the model's own training-time
masking does (the kept tokens and cls are encoded and mean-pooled):

* ``none``: every token;
* ``time`` / ``frequency``: a share of the true time rows / frequency columns of the patch grid;
* ``time_frequency``: both at once (the paper's view: dropping 60 % of the rows and 40 % of the columns keeps
  0.4 x 0.6 = 24 % of the tokens);
* ``unstructured``: random tokens; by default as many as ``time_frequency`` keeps, so the two differ only in structure.
"""

from collections.abc import Iterable
from pathlib import Path

import torch

from .modeling_audiomosaic import PATCH_MASKINGS, patch_keep_indices


MASKINGS = PATCH_MASKINGS


def effective_rank(features, eps: float = 1e-7, center: bool = False) -> float:
    """Effective rank exp(-sum p_k log p_k), p_k = s_k / ||s||_1 + eps, of the singular values s of `features`
    (N, D) (RankMe's eps). `center=True` removes the feature mean first (rank of the covariance's square root)."""
    x = torch.as_tensor(features).detach().to(torch.float64)
    if x.ndim != 2:
        raise ValueError(f"effective_rank needs an (examples, dim) matrix, got shape {tuple(x.shape)}.")
    if x.shape[0] < 2:
        raise ValueError(f"effective_rank needs at least 2 examples, got {x.shape[0]}.")
    if not torch.isfinite(x).all():
        raise ValueError("effective_rank: the features contain NaN or Inf.")
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    singular_values = torch.linalg.svdvals(x)
    total = singular_values.sum()
    if total <= 0:
        return 0.0
    p = singular_values / total + eps
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))  # 0 log 0 = 0


def kept_token_count(masking: str, num_time_patches: int, num_freq_patches: int, time_ratio: float = 0.6,
                     freq_ratio: float = 0.4, unstructured_ratio: float | None = None) -> int:
    """Number of patch tokens `masking` keeps on a (num_time_patches, num_freq_patches) grid."""
    rows, cols = num_time_patches, num_freq_patches
    if masking == "none":
        return rows * cols
    if masking == "time":
        return int(rows * (1 - time_ratio)) * cols
    if masking == "frequency":
        return rows * int(cols * (1 - freq_ratio))
    if masking == "time_frequency":
        return int(rows * (1 - time_ratio)) * int(cols * (1 - freq_ratio))
    if masking == "unstructured":
        if unstructured_ratio is None:
            return max(int(rows * (1 - time_ratio)) * int(cols * (1 - freq_ratio)), 1)
        return max(int(rows * cols * (1 - unstructured_ratio)), 1)
    raise ValueError(f"Unknown masking {masking!r}; choose from {MASKINGS}.")


def masking_keep_indices(
    masking: str,
    batch_size: int,
    num_time_patches: int,
    num_freq_patches: int,
    time_ratio: float = 0.6,
    freq_ratio: float = 0.4,
    unstructured_ratio: float | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """Time-major indices (t * Fp + f) of the patch tokens a `masking` keeps; `None` keeps all. Draws from the
    global torch RNG (seed it for reproducible masks)."""
    num_unstructured = kept_token_count(masking, num_time_patches, num_freq_patches, time_ratio, freq_ratio,
                                        unstructured_ratio)
    return patch_keep_indices(masking, batch_size, num_time_patches, num_freq_patches, time_ratio, freq_ratio,
                              num_unstructured, torch.device(device))


def _encoder(model):
    return getattr(model, "audiomosaic", model)


@torch.no_grad()
def pooled_representations(model, input_values: torch.Tensor, masking: str = "none", use_fc_norm: bool = True,
                           **masking_kwargs) -> torch.Tensor:
    """Pooled representation (B, D) of a batch of features under `masking`: `fc_norm`(mean over cls + kept
    tokens) (the encoder's `pooler_output`), or the un-normalised mean with `use_fc_norm=False`."""
    encoder = _encoder(model)
    encoder.eval()
    if input_values.ndim == 4:
        input_values = input_values.squeeze(1)
    keep = masking_keep_indices(masking, input_values.shape[0], *encoder.patch_grid(input_values.shape[1]),
                                device=input_values.device, **masking_kwargs)
    out = encoder(input_values, keep_patch_indices=keep)
    if use_fc_norm:
        return out.pooler_output
    return encoder.pool(out.last_hidden_state, out.token_mask)


def effective_rank_analysis(
    model,
    batches: Iterable[torch.Tensor],
    maskings: Iterable[str] = ("none", "unstructured", "time_frequency"),
    time_ratio: float = 0.6,
    freq_ratio: float = 0.4,
    unstructured_ratio: float | None = None,
    use_fc_norm: bool = True,
    center: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict:
    """Effective rank of the pooled representations of every clip in `batches` (an iterable of (B, T, F) feature
    tensors, read once) under each masking. Returns {"maskings": {name: {"effective_rank", "num_clips", "dim",
    "kept_tokens"}}, "settings": {...}}."""
    maskings = list(maskings)
    unknown = [m for m in maskings if m not in MASKINGS]
    if unknown:
        raise ValueError(f"Unknown masking(s) {unknown}; choose from {MASKINGS}.")
    encoder = _encoder(model)
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    features = {m: [] for m in maskings}
    kept = {}
    try:
        for batch in batches:
            batch = batch.to(device)
            num_time_patches, num_freq_patches = encoder.patch_grid(batch.shape[1])
            for masking in maskings:
                kwargs = {"time_ratio": time_ratio, "freq_ratio": freq_ratio, "unstructured_ratio": unstructured_ratio}
                features[masking].append(
                    pooled_representations(encoder, batch, masking, use_fc_norm, **kwargs).cpu()
                )
                kept[masking] = kept_token_count(masking, num_time_patches, num_freq_patches, **kwargs)
    finally:
        torch.random.set_rng_state(generator_state)
    results = {}
    for masking in maskings:
        if not features[masking]:
            raise ValueError("effective_rank_analysis: no batches were given.")
        matrix = torch.cat(features[masking])
        results[masking] = {
            "effective_rank": effective_rank(matrix, center=center),
            "num_clips": int(matrix.shape[0]),
            "dim": int(matrix.shape[1]),
            "kept_tokens": int(kept[masking]),
        }
    return {
        "maskings": results,
        "settings": {"time_ratio": time_ratio, "freq_ratio": freq_ratio, "unstructured_ratio": unstructured_ratio,
                     "use_fc_norm": use_fc_norm, "center": center, "seed": seed},
    }


def plot_effective_rank(results: dict, path: str | Path, title: str | None = None) -> Path:
    """Bar chart (PNG) of the effective rank per masking, with the kept-token count under each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maskings = list(results["maskings"])
    values = [results["maskings"][m]["effective_rank"] for m in maskings]
    labels = [f"{m}\n({results['maskings'][m]['kept_tokens']} tokens)" for m in maskings]
    fig, ax = plt.subplots(figsize=(1.6 * len(maskings) + 2, 3.6), dpi=120)
    bars = ax.bar(labels, values, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"][: len(maskings)])
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{value:.1f}", ha="center", va="bottom")
    dim = next(iter(results["maskings"].values()))["dim"]
    ax.set_ylabel(f"effective rank (of {dim} dims)")
    ax.set_title(title or "Effective rank of pooled representations")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["MASKINGS", "effective_rank", "effective_rank_analysis", "kept_token_count", "masking_keep_indices", "plot_effective_rank",
           "pooled_representations"]
