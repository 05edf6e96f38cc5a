"""PNG figures of the interpretability tools (matplotlib, Agg backend)."""

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(matrix: np.ndarray, path: str | Path, title: str, xlabel: str, ylabel: str,
                 xticklabels: list | None = None, yticklabels: list | None = None, cmap: str = "viridis",
                 annotate: bool = False) -> Path:
    """A labelled heatmap of `matrix` (rows on the y axis) written to `path`."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=float)
    height = min(max(3.0, 0.28 * matrix.shape[0] + 1.5), 30.0)
    width = min(max(4.0, 0.35 * matrix.shape[1] + 2.5), 30.0)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, interpolation="nearest")
    fig.colorbar(image, ax=ax)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), [str(t) for t in xticklabels], rotation=90, fontsize=7)
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), [str(t) for t in yticklabels], fontsize=7)
    if annotate:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_dose_response(rows: list[dict], path: str | Path, title: str) -> Path:
    """Target-class and other-class recall against the head scale."""
    plt = _pyplot()
    scales = [r["scale"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(scales, [r["target_recall"] for r in rows], "o-", label="targeted class")
    ax.plot(scales, [r["other_recall"] for r in rows], "s--", label="other classes")
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="scale of the class's top heads (1 = clean)", ylabel="recall (frozen linear readout)", title=title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_latent_on_spectrograms(spectrograms: list[np.ndarray], activation_maps: list[np.ndarray], titles: list[str],
                                path: str | Path, suptitle: str) -> Path:
    """Each clip's log-Mel (frames, mel bins) with the latent's activation on the (time, frequency) patch grid
    drawn over it."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(spectrograms), figsize=(3 * len(spectrograms), 3), squeeze=False)
    for ax, spectrogram, activation, title in zip(axes[0], spectrograms, activation_maps, titles):
        frames, bins = spectrogram.shape
        extent = (0, frames, 0, bins)  # the patch grid covers the same frames x bins as the spectrogram
        ax.imshow(spectrogram.T, origin="lower", aspect="auto", cmap="gray", extent=extent)
        ax.imshow(np.asarray(activation).T, origin="lower", aspect="auto", cmap="magma", alpha=0.55, extent=extent,
                  interpolation="nearest")
        ax.set(title=title, xlabel="frame", ylabel="Mel bin")
        ax.title.set_fontsize(8)
    fig.suptitle(suptitle)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
