"""Sparse autoencoders on cached encoder activations: TopK (Gao et al. 2024: unit-norm decoder, tied init, AuxK
dead-latent loss) and ReLU + L1 for comparison, with their evaluation metrics and a per-class latent report.

Why not SAELens or dictionary-learning: SAELens' trainer is driven by `LanguageModelSAERunnerConfig` (a
TransformerLens model name, a hook name and a token dataset) and pulls transformer-lens, wandb and ~45 other
packages; dictionary-learning trains through nnsight on a language model's token stream. Neither trains on a plain
(N, d) tensor of cached audio activations without that harness, so this module keeps a compact implementation with
SAELens' parameter names (W_enc (d_in, d_sae), W_dec (d_sae, d_in), b_enc, b_dec) and encode/decode methods.

    >>> sae, history = train_sae(features, d_sae=768, k=32)
    >>> evaluate_sae(sae, held_out)  # {"fvu": ..., "l0": ..., "dead_fraction": ...}
    >>> sae.save_pretrained("runs/sae"); SparseAutoencoder.from_pretrained("runs/sae")
"""

import argparse
import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..validation import check_value, integer, number, read_model_config, read_safetensors


ACTIVATIONS = ("topk", "relu")


@dataclass
class SparseAutoencoderOutput:
    reconstruction: torch.Tensor
    latents: torch.Tensor
    loss: torch.Tensor
    fvu: torch.Tensor
    auxiliary_loss: torch.Tensor


class SparseAutoencoder(nn.Module, PyTorchModelHubMixin, library_name="audiomosaic"):
    """latents = ReLU(TopK(W_enc^T (x' - b_dec) + b_enc)); x'_hat = W_dec^T latents + b_dec; x' = (x - mean) * scale.

    Args:
        d_in: input width. d_sae: number of latents.
        activation: "topk" (keeps the k largest pre-activations) or "relu" (ReLU + L1 penalty `l1_coefficient`,
            weighted by decoder row norms).
        k: active latents per input for "topk". k_aux / auxk_coefficient: AuxK loss (reconstruct the residual
            from the k_aux largest pre-activations of dead latents), weight 1/32 as in Gao et al.
        The input normalisation (mean, scale so that E||x'||^2 = d_in) is fitted by `train_sae` and saved as
        buffers, so `encode` takes raw activations.
    """

    def __init__(self, d_in: int, d_sae: int, activation: str = "topk", k: int = 32, k_aux: int = 256,
                 auxk_coefficient: float = 1 / 32, l1_coefficient: float = 1e-3):
        super().__init__()
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (d_in, d_sae)):
            raise ValueError(f"SparseAutoencoder needs positive integer widths, got d_in={d_in!r}, d_sae={d_sae!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; expected one of {ACTIVATIONS}.")
        if activation == "topk" and not 0 < k <= d_sae:
            raise ValueError(f"k must be in 1..d_sae ({d_sae}), got {k}.")
        self.d_in, self.d_sae, self.activation = d_in, d_sae, activation
        self.k, self.k_aux, self.auxk_coefficient, self.l1_coefficient = k, k_aux, auxk_coefficient, l1_coefficient
        decoder = torch.randn(d_sae, d_in)
        decoder /= decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        self.W_enc = nn.Parameter(decoder.T.clone())  # tied initialisation
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_mean", torch.zeros(d_in))
        self.register_buffer("input_scale", torch.ones(()))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "SparseAutoencoder":
        """Load a folder (or Hub id) written by `save_pretrained`: a missing path, a folder of another kind, or a
        truncated / foreign `model.safetensors` is a `ValueError` naming it (the Hub mixin's loader would report the
        path as a malformed repo id, or keep random weights for missing tensors)."""
        try:
            read_model_config(str(pretrained_model_name_or_path), ("sae",))
        except argparse.ArgumentTypeError as error:
            raise ValueError(str(error)) from None
        # The mixin prints "Loading weights from local directory" on stdout, where the commands write their JSON
        # results; it tells the caller nothing it does not know.
        with contextlib.redirect_stdout(io.StringIO()):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model: "SparseAutoencoder", model_file: str, map_location: str,
                            strict: bool) -> "SparseAutoencoder":
        state_dict = read_safetensors(model_file, "sparse-autoencoder weights")
        expected = model.state_dict()
        problems = sorted(set(expected) ^ set(state_dict))
        problems += [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
                     for key, value in expected.items() if key in state_dict and state_dict[key].shape != value.shape]
        if problems:
            raise ValueError(f"{model_file} is corrupt or not a sparse-autoencoder weights file (tensors that do "
                             f"not fit its config.json: {', '.join(problems[:5])})")
        model.load_state_dict(state_dict)
        return model.to(map_location).eval()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) * self.input_scale

    def pre_activations(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return (x_normalized - self.b_dec) @ self.W_enc + self.b_enc

    def _sparsify(self, pre: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(pre)
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw activations (..., d_in) -> latents (..., d_sae)."""
        return self._sparsify(self.pre_activations(self.normalize(x)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (..., d_sae) -> reconstruction in the raw activation space (..., d_in)."""
        return (latents @ self.W_dec + self.b_dec) / self.input_scale + self.input_mean

    def forward(self, x: torch.Tensor, dead_latents: torch.Tensor | None = None) -> SparseAutoencoderOutput:
        """Loss in the normalised space: FVU of the batch + AuxK (topk, when `dead_latents` has any) or the L1
        penalty (relu)."""
        target = self.normalize(x)
        pre = self.pre_activations(target)
        latents = self._sparsify(pre)
        reconstruction = latents @ self.W_dec + self.b_dec
        variance = (target - target.mean(dim=0)).pow(2).sum(-1).mean().clamp(min=1e-8)
        fvu = (reconstruction - target).pow(2).sum(-1).mean() / variance
        auxiliary = torch.zeros((), device=x.device)
        if self.activation == "relu":
            auxiliary = self.l1_coefficient * (latents * self.W_dec.norm(dim=1)).sum(-1).mean()
        elif dead_latents is not None and dead_latents.any():
            residual = (target - reconstruction).detach()
            k_aux = min(self.k_aux, int(dead_latents.sum()))
            dead_pre = pre.masked_fill(~dead_latents, float("-inf"))
            values, indices = dead_pre.topk(k_aux, dim=-1)
            aux_latents = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
            residual_variance = (residual - residual.mean(dim=0)).pow(2).sum(-1).mean().clamp(min=1e-8)
            auxk = (aux_latents @ self.W_dec - residual).pow(2).sum(-1).mean() / residual_variance
            auxiliary = self.auxk_coefficient * torch.nan_to_num(auxk)
        return SparseAutoencoderOutput(reconstruction=reconstruction / self.input_scale + self.input_mean,
                                       latents=latents, loss=fvu + auxiliary, fvu=fvu, auxiliary_loss=auxiliary)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the gradient component along each decoder row, so the unit-norm constraint holds to first order."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad -= parallel * self.W_dec


@torch.no_grad()
def _initialise(sae: SparseAutoencoder, sample: torch.Tensor) -> None:
    """Input normalisation, b_dec at the (normalised) data mean, and an encoder scale that makes the initial
    reconstruction norm match the input norm."""
    sae.input_mean.copy_(sample.mean(dim=0))
    centred = sample - sae.input_mean
    sae.input_scale.fill_(math.sqrt(sae.d_in / centred.pow(2).sum(-1).mean().clamp(min=1e-12).item()))
    normalized = sae.normalize(sample)
    sae.b_dec.copy_(normalized.mean(dim=0))
    latents = sae._sparsify(sae.pre_activations(normalized))
    reconstruction_norm = (latents @ sae.W_dec).norm(dim=-1).mean()
    sae.W_enc *= (normalized - sae.b_dec).norm(dim=-1).mean() / reconstruction_norm.clamp(min=1e-8)


def train_sae(
    activations: torch.Tensor | np.ndarray,
    d_sae: int,
    activation: str = "topk",
    k: int = 32,
    k_aux: int | None = None,
    l1_coefficient: float = 1e-3,
    epochs: int = 50,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    dead_after_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[SparseAutoencoder, list[dict]]:
    """Train a sparse autoencoder on an (N, d_in) activation matrix with Adam. A latent is dead (and takes part in
    the AuxK loss) after `dead_after_samples` training inputs without firing (default: one pass, N).
    k_aux defaults to d_in // 2 (Gao et al.: a power of two around d_in / 2). Returns (sae, per-epoch history)."""
    from tqdm.auto import tqdm

    data = torch.as_tensor(np.asarray(activations, dtype=np.float32))
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"train_sae needs an (examples >= 2, d_in) matrix, got shape {tuple(data.shape)}.")
    epochs = check_value("epochs", epochs, integer(minimum=1))
    batch_size = check_value("batch_size", batch_size, integer(minimum=1))
    learning_rate = check_value("learning_rate", learning_rate, number(above=0))
    check_value("l1_coefficient", l1_coefficient, number(minimum=0))
    if not torch.isfinite(data).all():
        raise ValueError("train_sae: the activations contain NaN or Inf.")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sae = SparseAutoencoder(data.shape[1], d_sae, activation=activation, k=k,
                            k_aux=k_aux if k_aux is not None else max(data.shape[1] // 2, 1),
                            l1_coefficient=l1_coefficient)
    _initialise(sae, data[torch.randperm(len(data), generator=generator)[:4096]])
    optimizer = torch.optim.Adam(sae.parameters(), lr=learning_rate)
    dead_after = dead_after_samples if dead_after_samples is not None else len(data)
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    history = []
    for epoch in tqdm(range(epochs), desc="sae", unit="epoch", disable=not progress):
        order = torch.randperm(len(data), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(data), batch_size):
            batch = data[order[start: start + batch_size]]
            output = sae(batch, dead_latents=since_fired >= dead_after)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            sae.remove_parallel_gradient()
            optimizer.step()
            sae.normalize_decoder()
            fired = (output.latents > 0).any(dim=0)
            since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + len(batch))
            total += output.fvu.item()
            batches += 1
        history.append({"epoch": epoch + 1, "fvu": total / batches,
                        "dead_fraction": float((since_fired >= dead_after).float().mean())})
    sae.eval()
    return sae, history


def _check_width(sae: SparseAutoencoder, data: torch.Tensor) -> torch.Tensor:
    if data.ndim != 2 or data.shape[1] != sae.d_in:
        raise ValueError(f"The sparse autoencoder takes (examples, {sae.d_in}) activations, got shape "
                         f"{tuple(data.shape)}: was it trained on another layer width?")
    return data


@torch.no_grad()
def encode_batched(sae: SparseAutoencoder, activations: torch.Tensor | np.ndarray, batch_size: int = 4096):
    data = _check_width(sae, torch.as_tensor(np.asarray(activations, dtype=np.float32)))
    return torch.cat([sae.encode(data[i: i + batch_size]) for i in range(0, len(data), batch_size)])


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, activations: torch.Tensor | np.ndarray,
                 dense_threshold: float = 0.5) -> dict:
    """Reconstruction and sparsity metrics on held-out activations (N, d_in), in the raw activation space:
    fvu = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 and explained_variance = 1 - fvu; nmse (OpenAI's normalised
    MSE, uncentred: mean of ||x - x_hat||^2 / ||x||^2); cosine (mean cosine of x and x_hat); l0 (mean non-zero
    latents); dead_fraction (latents that never fire); dense_fraction (latents firing on more than
    `dense_threshold` of the inputs)."""
    data = _check_width(sae, torch.as_tensor(np.asarray(activations, dtype=np.float32)))
    if len(data) == 0:
        raise ValueError("evaluate_sae needs at least one held-out activation vector.")
    latents = encode_batched(sae, data)
    reconstruction = sae.decode(latents)
    error = (data - reconstruction).pow(2).sum(-1)
    fvu = float(error.sum() / (data - data.mean(dim=0)).pow(2).sum().clamp(min=1e-12))
    firing = (latents > 0).float().mean(dim=0)
    return {
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "nmse": float((error / data.pow(2).sum(-1).clamp(min=1e-12)).mean()),
        "cosine": float(torch.nn.functional.cosine_similarity(data, reconstruction, dim=-1).mean()),
        "l0": float((latents > 0).sum(-1).float().mean()),
        "dead_fraction": float((firing == 0).float().mean()),
        "dense_fraction": float((firing > dense_threshold).float().mean()),
        "dense_threshold": dense_threshold,
    }


def one_vs_rest_auroc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every column of `scores` (N, M) for the boolean labels `positive` (N,), ties averaged
    (Mann-Whitney U): 0.5 for a column that does not separate the class."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("one_vs_rest_auroc needs both positive and negative examples.")
    return (ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def latent_class_report(codes: np.ndarray, labels: np.ndarray, classes: list | None = None, top_latents: int = 5,
                        top_clips: int = 10, min_in_class_rate: float = 0.05) -> list[dict]:
    """For each class, its `top_latents` most selective latents ranked by one-vs-rest AUROC of the latent's
    activation, among latents firing on at least `min_in_class_rate` of the class's clips. Each record: class,
    latent, auroc, in/out-of-class firing rates, mean activation in class, and purity (share of the latent's
    `top_clips` most activating clips that belong to the class) with their row indices."""
    codes = np.asarray(codes, dtype=np.float32)
    labels = np.asarray(labels)
    if codes.ndim != 2 or len(codes) != len(labels):
        raise ValueError(f"latent_class_report needs (clips, latents) codes and one label per clip, got codes of shape "
                         f"{codes.shape} and {len(labels)} labels.")
    top_latents = check_value("top_latents", top_latents, integer(minimum=1))
    top_clips = check_value("top_clips", top_clips, integer(minimum=1))
    classes = list(np.unique(labels)) if classes is None else list(classes)
    firing = codes > 0
    records = []
    for name in classes:
        positive = labels == name
        auroc = one_vs_rest_auroc(codes, positive)
        in_rate = firing[positive].mean(axis=0)
        candidates = np.flatnonzero(in_rate >= min_in_class_rate)
        for latent in candidates[np.argsort(-auroc[candidates], kind="stable")][:top_latents]:
            top = np.argsort(-codes[:, latent], kind="stable")[:top_clips]
            records.append({
                "class": str(name), "latent": int(latent), "auroc": float(auroc[latent]),
                "in_class_rate": float(in_rate[latent]), "out_class_rate": float(firing[~positive, latent].mean()),
                "mean_in_class": float(codes[positive, latent].mean()),
                "top_clip_purity": float((labels[top] == name).mean()), "top_clips": [int(i) for i in top],
            })
    return records
