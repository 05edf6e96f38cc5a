"""Which heads carry which class: per-head probes, inference-time interventions on heads, and targeted-vs-random
ablation measurements (docs section C, seed-extensions.md).

Heads are (block, head) pairs, 0-based. Interventions are forward pre-hooks on each block's attention output
projection that rewrite the head slices of its input, at every token position (or the cls token only); the
projection's bias is added after the hook and is not touched.

    >>> probe = probe_heads(heads, labels)                     # accuracy_ (blocks, heads), per_class_auroc_
    >>> with HeadIntervention(model, [(3, 1), (3, 2)], mode="zero"):
    ...     output = model(input_values)
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..validation import check_value, integer
from .activations import attention_output_projections


MODES = ("zero", "mean", "scale", "steer")


@dataclass
class HeadProbeResult:
    """accuracy_: (blocks, heads) cross-validated accuracy; per_class_auroc_: (blocks, heads, classes)
    one-vs-rest AUROC of the out-of-fold probabilities; classes_."""

    accuracy_: np.ndarray
    per_class_auroc_: np.ndarray
    classes_: np.ndarray


def probe_heads(heads: np.ndarray, labels, cv: int = 5, C: float = 1.0, seed: int = 0,
                progress: bool = True) -> HeadProbeResult:
    """One standardised multinomial logistic-regression probe per head on pooled head vectors
    `heads` (clips, blocks, heads, head_dim), with stratified `cv`-fold cross-validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from tqdm.auto import tqdm

    from .sae import one_vs_rest_auroc

    heads = np.asarray(heads, dtype=np.float32)
    if heads.ndim != 4:
        raise ValueError(f"probe_heads needs (clips, blocks, heads, head_dim) features, got shape {heads.shape}.")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    cv = check_value("cv", cv, integer(minimum=2))
    if len(labels) != len(heads) or len(classes) < 2 or counts.min() < cv:
        raise ValueError(f"probe_heads needs one label per clip, two or more classes and at least cv={cv} clips per "
                         f"class; got {len(heads)} clips, {len(labels)} labels, class counts "
                         f"{dict(zip(map(str, classes), map(int, counts)))}.")
    splitter = StratifiedKFold(cv, shuffle=True, random_state=seed)
    blocks, n_heads = heads.shape[1:3]
    accuracy = np.zeros((blocks, n_heads))
    auroc = np.zeros((blocks, n_heads, len(classes)))
    pairs = [(b, h) for b in range(blocks) for h in range(n_heads)]
    for block, head in tqdm(pairs, desc="head probes", disable=not progress):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500))
        probabilities = cross_val_predict(probe, heads[:, block, head], labels, cv=splitter, method="predict_proba")
        accuracy[block, head] = (classes[probabilities.argmax(axis=1)] == labels).mean()
        for c, name in enumerate(classes):
            auroc[block, head, c] = one_vs_rest_auroc(probabilities[:, c:c + 1], labels == name)[0]
    return HeadProbeResult(accuracy, auroc, classes)


def steering_directions(heads: np.ndarray, labels, target) -> tuple[np.ndarray, np.ndarray]:
    """Unit class-mean-difference direction (target minus rest) per head and the std of the clips' projections on
    it: ((blocks, heads, dim), (blocks, heads))."""
    heads = np.asarray(heads, dtype=np.float32)
    positive = np.asarray(labels) == target
    direction = heads[positive].mean(axis=0) - heads[~positive].mean(axis=0)
    direction /= np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-12)
    sigma = np.einsum("nbhd,bhd->nbh", heads, direction).std(axis=0)
    return direction, sigma


class HeadIntervention:
    """Context manager that edits chosen heads' attention outputs during every forward pass of `model`.

    mode: "zero" (slice set to 0), "mean" (slice replaced by `values[block, head]`, e.g. the dataset-mean pooled
    head vector), "scale" (multiplied by `scale`; > 1 emphasises), "steer" (adds `alpha * sigma[block, head] *
    directions[block, head]`). positions: "all" tokens or "cls" only.
    """

    def __init__(self, model: torch.nn.Module, heads: list[tuple[int, int]], mode: str = "zero", scale: float = 0.0,
                 values: np.ndarray | torch.Tensor | None = None, directions: np.ndarray | torch.Tensor | None = None,
                 sigma: np.ndarray | torch.Tensor | None = None, alpha: float = 5.0, positions: str = "all"):
        if mode not in MODES:
            raise ValueError(f"Unknown intervention mode {mode!r}; expected one of {MODES}.")
        if positions not in ("all", "cls"):
            raise ValueError(f"positions must be 'all' or 'cls', got {positions!r}.")
        if mode == "mean" and values is None:
            raise ValueError("mode='mean' needs `values` (blocks, heads, head_dim).")
        if mode == "steer" and (directions is None or sigma is None):
            raise ValueError("mode='steer' needs `directions` (blocks, heads, head_dim) and `sigma` (blocks, heads).")
        self._projections = attention_output_projections(model)
        config = model.config
        self.num_heads, self.head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        for block, head in heads:
            if not (0 <= block < len(self._projections) and 0 <= head < self.num_heads):
                raise ValueError(f"Head ({block}, {head}) does not exist: the model has {len(self._projections)} "
                                 f"blocks of {self.num_heads} heads.")
        self.heads, self.mode, self.scale, self.alpha, self.positions = list(heads), mode, scale, alpha, positions
        as_tensor = lambda value: None if value is None else torch.as_tensor(np.asarray(value), dtype=torch.float32)
        self.values, self.directions, self.sigma = as_tensor(values), as_tensor(directions), as_tensor(sigma)
        self._handles = []

    def _hook(self, block: int, heads: list[int]):
        def edit(module, args):
            hidden = args[0]
            split = hidden.reshape(*hidden.shape[:-1], self.num_heads, self.head_dim).clone()
            rows = slice(0, 1) if self.positions == "cls" else slice(None)
            for head in heads:
                target = split[:, rows, head]
                if self.mode == "zero":
                    target = torch.zeros_like(target)
                elif self.mode == "scale":
                    target = target * self.scale
                elif self.mode == "mean":
                    target = self.values[block, head].to(target).expand_as(target)
                else:
                    target = target + self.alpha * self.sigma[block, head] * self.directions[block, head].to(target)
                split[:, rows, head] = target
            return (split.reshape(hidden.shape), *args[1:])

        return edit

    def __enter__(self) -> "HeadIntervention":
        by_block: dict[int, list[int]] = {}
        for block, head in self.heads:
            by_block.setdefault(block, []).append(head)
        self._handles = [self._projections[b].register_forward_pre_hook(self._hook(b, h)) for b, h in by_block.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def ablate_heads(model, heads, **kwargs) -> HeadIntervention:
    return HeadIntervention(model, heads, mode="zero", **kwargs)


def scale_heads(model, heads, scale: float, **kwargs) -> HeadIntervention:
    return HeadIntervention(model, heads, mode="scale", scale=scale, **kwargs)


def matched_random_heads(heads: list[tuple[int, int]], num_heads: int, rng: np.random.Generator,
                         exclude: set | None = None) -> list[tuple[int, int]]:
    """As many random heads per block as `heads` has in that block, avoiding `heads` (and `exclude`)."""
    avoid = set(heads) | (exclude or set())
    chosen = []
    for block in sorted({b for b, _ in heads}):
        count = sum(1 for b, _ in heads if b == block)
        free = [h for h in range(num_heads) if (block, h) not in avoid]
        if len(free) < count:
            free = [h for h in range(num_heads) if (block, h) not in set(heads)]
        chosen += [(block, int(h)) for h in rng.choice(free, min(count, len(free)), replace=False)]
    return chosen


@torch.no_grad()
def pooled_outputs(model, input_values: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """fc_norm pooled output (the encoder's readout) of every clip."""
    model.eval()
    return torch.cat([model(input_values[i: i + batch_size]).pooler_output
                      for i in range(0, len(input_values), batch_size)]).numpy()


class BlockInputCache:
    """The clean hidden states entering chosen blocks of `model` for fixed `input_values`, so that a forward pass
    with heads edited from block b on reruns only blocks b, b + 1, ...: an edit of block b's attention output cannot
    change what enters block b, so the blocks before it would only recompute the cached states.

    The states are recorded by forward pre-hooks on the blocks during one clean pass (with the attention bias and the
    token mask the model computed), in the same batches as `pooled_outputs`, so `pooled_outputs(b)` under any
    `HeadIntervention` whose heads lie in blocks >= b returns exactly what the full forward pass returns.
    `blocks` limits the cached states (memory: clips x tokens x hidden floats per block); default: every block.

        >>> cache = BlockInputCache(model, input_values, blocks=[2])
        >>> with HeadIntervention(model, [(2, 0), (3, 1)], mode="zero"):
        ...     edited = cache.pooled_outputs(first_block=2)
    """

    def __init__(self, model: torch.nn.Module, input_values: torch.Tensor, blocks: list[int] | None = None,
                 batch_size: int = 64):
        self.model = model.eval()
        layers = model.layers
        self.blocks = sorted(set(range(len(layers)) if blocks is None else blocks))
        for block in self.blocks:
            if not 0 <= block < len(layers):
                raise ValueError(f"Block {block} does not exist; the model has blocks 0..{len(layers) - 1}.")
        self.states: dict[int, list[torch.Tensor]] = {block: [] for block in self.blocks}
        self.attention_bias: list[torch.Tensor | None] = []
        self.token_masks: list[torch.Tensor | None] = []
        pooled = []

        def record(block: int):
            def hook(module, args):
                self.states[block].append(args[0])
                if block == self.blocks[0]:
                    self.attention_bias.append(args[1] if len(args) > 1 else None)

            return hook

        handles = [layers[block].register_forward_pre_hook(record(block)) for block in self.blocks]
        try:
            with torch.no_grad():
                for start in range(0, len(input_values), batch_size):
                    output = model(input_values[start: start + batch_size])
                    pooled.append(output.pooler_output)
                    self.token_masks.append(output.token_mask)
        finally:
            for handle in handles:
                handle.remove()
        self.clean_pooled_outputs = torch.cat(pooled).numpy()

    @torch.no_grad()
    def pooled_outputs(self, first_block: int) -> np.ndarray:
        """fc_norm pooled output of every clip, running only blocks `first_block`.. from the cached state (any
        hooks on those blocks, e.g. a `HeadIntervention`, act as in a full pass)."""
        if first_block not in self.states:
            raise ValueError(f"Block {first_block} was not cached; cached blocks: {self.blocks}.")
        layers = self.model.layers[first_block:]
        pooled = []
        for hidden, bias, token_mask in zip(self.states[first_block], self.attention_bias, self.token_masks):
            for layer in layers:
                hidden = layer(hidden, bias)[0]
            pooled.append(self.model.fc_norm(self.model.pool(hidden, token_mask)))
        return torch.cat(pooled).numpy()


def class_recalls(readout, features: np.ndarray, labels: np.ndarray, classes) -> np.ndarray:
    predicted = readout.predict(features)
    return np.array([(predicted[labels == c] == c).mean() for c in classes])


def _forward_runner(model, input_values: torch.Tensor, head_sets, cache_block_inputs: bool):
    """(clean pooled outputs, run(heads) -> pooled outputs under the active interventions). With
    `cache_block_inputs`, the states entering the first block of each head set are cached once (`BlockInputCache`)
    and a run starts there; otherwise every run is a full forward pass."""
    if not cache_block_inputs:
        return pooled_outputs(model, input_values), lambda heads: pooled_outputs(model, input_values)
    cache = BlockInputCache(model, input_values,
                            blocks=sorted({min(b for b, _ in heads) for heads in head_sets if heads}))

    def run(heads):  # no head edited (e.g. no free random head in a full block): the clean pass
        return cache.pooled_outputs(min(b for b, _ in heads)) if heads else cache.clean_pooled_outputs

    return cache.clean_pooled_outputs, run


def evaluate_head_intervention(model, input_values: torch.Tensor, labels, readout, heads_by_class: dict,
                               mode: str = "zero", n_random: int = 10, seed: int = 0, progress: bool = True,
                               targets: list | None = None, cache_block_inputs: bool = True,
                               **intervention) -> list[dict]:
    """For each target class, intervene on its heads (`heads_by_class[c]`) and on `n_random` draws of random
    heads matched per block, and measure per-class recall of a frozen `readout` (fitted on clean pooled outputs).
    Records: class, drop of the target's recall, mean drop on the other classes, selectivity (target drop minus
    other drop), the random heads' selectivities (mean, std) and a permutation p-value (share of random draws at
    least as selective, with the +1 correction). `targets` restricts the target classes (default: all).
    `cache_block_inputs` reruns only the blocks from the first intervened one (same results, less time)."""
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    classes = list(heads_by_class)
    n_random = check_value("n_random", n_random, integer(minimum=0))
    if len(classes) < 2 or any(not heads for heads in heads_by_class.values()):
        raise ValueError(f"evaluate_head_intervention compares two or more classes, each with at least one head; got "
                         f"{ {str(name): len(heads) for name, heads in heads_by_class.items()} } heads per class.")
    clean_pooled, run = _forward_runner(model, input_values, heads_by_class.values(), cache_block_inputs)
    clean = class_recalls(readout, clean_pooled, labels, classes)
    num_heads = model.config.num_attention_heads
    rng = np.random.default_rng(seed)

    def selectivity(heads, index):
        with HeadIntervention(model, heads, mode=mode, **intervention):
            recalls = class_recalls(readout, run(heads), labels, classes)
        drop = clean - recalls
        return drop[index], np.delete(drop, index).mean()

    records = []
    for name in tqdm(classes if targets is None else targets, desc=f"{mode} interventions", disable=not progress):
        index, heads = classes.index(name), heads_by_class[name]
        target_drop, other_drop = selectivity(heads, index)
        random_selectivity = []
        for _ in range(n_random):
            t, o = selectivity(matched_random_heads(heads, num_heads, rng), index)
            random_selectivity.append(t - o)
        random_selectivity = np.array(random_selectivity)
        observed = target_drop - other_drop
        records.append({
            "class": str(name), "heads": [list(h) for h in heads], "clean_recall": float(clean[index]),
            "target_drop": float(target_drop), "other_drop": float(other_drop), "selectivity": float(observed),
            "random_selectivity_mean": float(random_selectivity.mean()) if n_random else None,
            "random_selectivity_std": float(random_selectivity.std()) if n_random else None,
            "p_value": float(((random_selectivity >= observed).sum() + 1) / (n_random + 1)) if n_random else None,
        })
    return records


def dose_response(model, input_values: torch.Tensor, labels, readout, heads_by_class: dict,
                  scales=(0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0), progress: bool = True,
                  cache_block_inputs: bool = True) -> list[dict]:
    """Scale each class's heads by s and record the target class's recall and the other classes' mean recall
    (averaged over target classes) per scale: s < 1 ablates, s > 1 emphasises. `cache_block_inputs` as in
    `evaluate_head_intervention`."""
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    classes = list(heads_by_class)
    _, run = _forward_runner(model, input_values, heads_by_class.values(), cache_block_inputs)
    rows = []
    for scale in tqdm(scales, desc="dose-response", disable=not progress):
        target, other = [], []
        for index, name in enumerate(classes):
            with HeadIntervention(model, heads_by_class[name], mode="scale", scale=scale):
                recalls = class_recalls(readout, run(heads_by_class[name]), labels, classes)
            target.append(recalls[index])
            other.append(np.delete(recalls, index).mean())
        rows.append({"scale": float(scale), "target_recall": float(np.mean(target)),
                     "other_recall": float(np.mean(other))})
    return rows
