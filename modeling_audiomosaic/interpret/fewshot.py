"""Few-shot classifiers over per-head attention outputs (SAV, CALM) and their baselines, as scikit-learn estimators,
with an episode benchmark.

Head features are arrays (clips, heads, head_dim) from `Activations.head_features()`; the pooled baselines take
(clips, dim). Definitions follow docs section B (seed-extensions.md):

* `SAVClassifier` (Mitra et al.): per head, class centroids of the support vectors; heads ranked by
  leave-one-out nearest-centroid (cosine) accuracy on the support set; the top `n_heads` vote, majority wins
  (ties: the first class in `classes_` order).
* `CALMClassifier` (Mehta et al.; the arithmetic of the reference implementation mvideet/CALM `SAVs/src/calm.py`):
  L2-normalised per-head prototypes, per-head softmax over cosines / tau, reliability r[h, c] = mean over class-c
  reliability items of max(0, p_h(c) - max_{c' != c} p_h(c')) ("margin_clamped"), optionally only the `top_k`
  heads per class, weights r^(1/tau_w) normalised per class (the "*_softmax" schemes: a softmax of r / tau_w over
  heads), weighted soft vote. The reference estimates r on a separate labelled validation split (`fit(X, y, X_val,
  y_val)`); without one the reliabilities are cross-fitted inside the support set (prototypes from the other
  folds). With one shot per class and no validation split no clip can be held out, so there is no evidence of
  reliability and the weights are uniform: CALM is then the uniform soft vote, by construction.
  `global_weights=True` averages r over classes (the paper's GW ablation); `self_training=True` pseudo-labels an
  unlabelled pool and refits on support + confident pseudo-labels.
* Baselines: `HeadSoftVoteClassifier` (uniform mean of per-head posteriors, all heads or the SAV top heads),
  `CosineNearestCentroid` (pooled features), `pooled_logistic_regression()`.
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score, f1_score

from ..validation import check_value, integer, integer_list


# The reference's schemes: "margin_clamped" normalises r per class; the "*_softmax" ones take a softmax of r / tau_w
# over heads ("margin_softmax": unclamped margin, "prob_softmax": mean p_h(c), "brier_softmax": 2 p_h(c) - sum p^2).
WEIGHT_SCHEMES = ("margin_clamped", "margin_softmax", "prob_softmax", "brier_softmax")


def _check_head_features(X, n_heads: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 3:
        raise ValueError(f"Head features must have shape (clips, heads, head_dim), got {X.shape}.")
    if n_heads is not None and X.shape[1] != n_heads:
        raise ValueError(f"Expected {n_heads} heads (as in fit), got {X.shape[1]}.")
    if not np.isfinite(X).all():
        raise ValueError("Head features contain NaN or Inf.")
    return X


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


def _encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
    classes, encoded = np.unique(np.asarray(y), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"Few-shot classification needs at least 2 classes, got {len(classes)}.")
    return classes, encoded


def class_means(X: np.ndarray, y_encoded: np.ndarray, n_classes: int) -> np.ndarray:
    """(classes, *X.shape[1:]) mean of X per class."""
    return np.stack([X[y_encoded == c].mean(axis=0) for c in range(n_classes)])


def head_posteriors(X: np.ndarray, prototypes: np.ndarray, tau: float) -> np.ndarray:
    """(clips, heads, classes) softmax over classes of cosine(x_h, prototype_{c,h}) / tau."""
    logits = np.einsum("nhd,chd->nhc", _unit(X), _unit(prototypes)) / tau
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


def head_reliability(posteriors: np.ndarray, y_encoded: np.ndarray, n_classes: int,
                     scheme: str = "margin_clamped") -> np.ndarray:
    """(heads, classes) reliability of each head for each class on labelled items (CALM's weight schemes)."""
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"Unknown weight_scheme {scheme!r}; expected one of {WEIGHT_SCHEMES}.")
    rows = np.arange(len(y_encoded))
    true = posteriors[rows, :, y_encoded]  # (n, heads)
    if scheme == "prob_softmax":
        score = true
    elif scheme == "brier_softmax":
        score = 2 * true - (posteriors ** 2).sum(axis=-1)
    else:
        others = posteriors.copy()
        others[rows, :, y_encoded] = -np.inf
        score = true - others.max(axis=-1)
        if scheme == "margin_clamped":
            score = np.maximum(score, 0.0)
    reliability = np.zeros((posteriors.shape[1], n_classes))
    for c in range(n_classes):
        if (y_encoded == c).any():
            reliability[:, c] = score[y_encoded == c].mean(axis=0)
    return reliability


def nearest_centroid_head_scores(X: np.ndarray, y_encoded: np.ndarray, n_classes: int,
                                 leave_one_out: bool = True) -> np.ndarray:
    """(heads,) nearest-centroid (cosine) accuracy of each head on the support set. Leave-one-out removes each item
    from its own centroid (classes with a single item keep it: there is nothing else to compare with)."""
    sums = np.stack([X[y_encoded == c].sum(axis=0) for c in range(n_classes)])  # (C, H, D)
    counts = np.bincount(y_encoded, minlength=n_classes).astype(np.float32)
    centroids = sums / counts[:, None, None]
    similarity = np.einsum("nhd,chd->nhc", _unit(X), _unit(centroids))
    if leave_one_out:
        rows = np.arange(len(X))
        own_count = counts[y_encoded]
        loo = np.where((own_count > 1)[:, None, None],
                       (sums[y_encoded] - X) / np.maximum(own_count - 1, 1)[:, None, None], centroids[y_encoded])
        similarity[rows, :, y_encoded] = np.einsum("nhd,nhd->nh", _unit(X), _unit(loo))
    return (similarity.argmax(axis=-1) == y_encoded[:, None]).mean(axis=0)


class SAVClassifier(ClassifierMixin, BaseEstimator):
    """Sparse attention-head vectors: the `n_heads` best heads by support-set nearest-centroid accuracy vote.

    Fitted: classes_, centroids_ (classes, heads, dim), head_scores_ (heads,), selected_heads_ (n_heads,)."""

    def __init__(self, n_heads: int = 20, leave_one_out: bool = True):
        self.n_heads = n_heads
        self.leave_one_out = leave_one_out

    def fit(self, X, y):
        X = _check_head_features(X)
        self.classes_, encoded = _encode_labels(y)
        self.centroids_ = class_means(X, encoded, len(self.classes_))
        self.head_scores_ = nearest_centroid_head_scores(X, encoded, len(self.classes_), self.leave_one_out)
        self.selected_heads_ = np.argsort(-self.head_scores_, kind="stable")[: min(self.n_heads, X.shape[1])]
        return self

    def _votes(self, X) -> np.ndarray:
        X = _check_head_features(X, self.centroids_.shape[1])[:, self.selected_heads_]
        similarity = np.einsum("nhd,chd->nhc", _unit(X), _unit(self.centroids_[:, self.selected_heads_]))
        choice = similarity.argmax(axis=-1)
        return np.stack([(choice == c).sum(axis=1) for c in range(len(self.classes_))], axis=1)

    def predict_proba(self, X) -> np.ndarray:
        votes = self._votes(X)
        return votes / votes.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self._votes(X).argmax(axis=1)]


class CALMClassifier(ClassifierMixin, BaseEstimator):
    """Class-conditional sparse attention-head vectors (CALM) on precomputed head features.

    Args:
        tau: prototype softmax temperature (0.07). tau_w: weight temperature (1.0).
        weight_scheme: "margin_clamped" (default), "margin_softmax", "prob_softmax" or "brier_softmax".
        top_k: heads kept per class (None: all).
        shrinkage: alpha of r <- r n_c / (n_c + alpha) + mean(r) alpha / (n_c + alpha).
        cv: folds for cross-fitted reliabilities when `fit` gets no validation split (capped by the smallest
            class; with 1 shot the weights are uniform). global_weights: one weight per head, averaged over classes.
        self_training: pseudo-label `X_unlabeled` passed to `fit` and refit on support + items whose CALM score
            margin (top minus second normalised score) is at least `pseudo_label_margin`.

    Fitted: classes_, prototypes_ (classes, heads, dim), reliability_ (heads, classes; zeros when there was no
    evidence), weights_ (heads, classes), reliability_source_ ("validation split", "cross-fitted, k folds" or "none
    (one shot per class)"); after self-training also pseudo_label_index_ and pseudo_labels_ (rows of X_unlabeled
    kept and their labels).
    """

    def __init__(self, tau: float = 0.07, tau_w: float = 1.0, weight_scheme: str = "margin_clamped",
                 top_k: int | None = None, shrinkage: float = 0.0, cv: int = 5, global_weights: bool = False,
                 self_training: bool = False, pseudo_label_margin: float = 0.1, random_state: int = 0):
        self.tau = tau
        self.tau_w = tau_w
        self.weight_scheme = weight_scheme
        self.top_k = top_k
        self.shrinkage = shrinkage
        self.cv = cv
        self.global_weights = global_weights
        self.self_training = self_training
        self.pseudo_label_margin = pseudo_label_margin
        self.random_state = random_state

    def _cross_fitted_reliability(self, X: np.ndarray, encoded: np.ndarray, n_classes: int) -> np.ndarray | None:
        """Out-of-fold reliabilities, or None with one shot of some class: its only clip cannot be held out (an
        in-sample estimate scores every head on the clip that is its own prototype, which is no evidence)."""
        folds = min(self.cv, int(np.bincount(encoded, minlength=n_classes).min()))
        if folds < 2:
            return None
        from sklearn.model_selection import StratifiedKFold

        posteriors = np.zeros((len(X), X.shape[1], n_classes))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        for train, held_out in splitter.split(X, encoded):
            prototypes = class_means(X[train], encoded[train], n_classes)
            posteriors[held_out] = head_posteriors(X[held_out], prototypes, self.tau)
        return head_reliability(posteriors, encoded, n_classes, self.weight_scheme)

    def _weights(self, reliability: np.ndarray, counts: np.ndarray) -> np.ndarray:
        r = reliability.copy()
        if self.shrinkage > 0:
            share = counts / (counts + self.shrinkage)
            r = r * share + r.mean() * (1 - share)
        if self.global_weights:
            r = np.repeat(r.mean(axis=1, keepdims=True), r.shape[1], axis=1)
        allowed = np.ones_like(r, dtype=bool)
        if self.top_k is not None and self.top_k < r.shape[0]:
            allowed[:] = False
            top = np.argsort(-r, axis=0, kind="stable")[: self.top_k]
            np.put_along_axis(allowed, top, True, axis=0)
        if self.weight_scheme.endswith("_softmax"):  # masked softmax over heads, as the reference
            logits = np.where(allowed, r / self.tau_w, -np.inf)
            weights = np.exp(logits - logits.max(axis=0, keepdims=True))
            return weights / weights.sum(axis=0, keepdims=True)
        weights = np.where(allowed, np.maximum(r, 0.0) ** (1.0 / self.tau_w), 0.0)
        totals = weights.sum(axis=0, keepdims=True)
        uniform = allowed / allowed.sum(axis=0, keepdims=True)
        return np.where(totals > 0, weights / np.where(totals > 0, totals, 1.0), uniform)

    def _fit_labelled(self, X, encoded, X_val=None, y_val_encoded=None):
        n_classes = len(self.classes_)
        self.prototypes_ = class_means(X, encoded, n_classes)
        if X_val is not None:
            reliability = head_reliability(head_posteriors(X_val, self.prototypes_, self.tau), y_val_encoded,
                                           n_classes, self.weight_scheme)
            counts = np.bincount(y_val_encoded, minlength=n_classes)
            self.reliability_source_ = "validation split"
        else:
            reliability = self._cross_fitted_reliability(X, encoded, n_classes)
            counts = np.bincount(encoded, minlength=n_classes)
            self.reliability_source_ = (f"cross-fitted, {min(self.cv, int(counts.min()))} folds"
                                        if reliability is not None else "none (one shot per class)")
        if reliability is None:
            self.reliability_ = np.zeros((X.shape[1], n_classes))
            self.weights_ = np.full((X.shape[1], n_classes), 1.0 / X.shape[1])
        else:
            self.reliability_ = reliability
            self.weights_ = self._weights(reliability, counts)

    def fit(self, X, y, X_val=None, y_val=None, X_unlabeled=None):
        if self.tau <= 0 or self.tau_w <= 0:
            raise ValueError(f"tau and tau_w must be positive, got {self.tau} and {self.tau_w}.")
        if self.weight_scheme not in WEIGHT_SCHEMES:
            raise ValueError(f"Unknown weight_scheme {self.weight_scheme!r}; expected one of {WEIGHT_SCHEMES}.")
        X = _check_head_features(X)
        self.classes_, encoded = _encode_labels(y)
        val_encoded = None
        if X_val is not None:
            X_val = _check_head_features(X_val, X.shape[1])
            unknown = set(np.unique(y_val)) - set(self.classes_)
            if unknown:
                raise ValueError(f"y_val has classes not in y: {sorted(unknown)}.")
            val_encoded = np.searchsorted(self.classes_, np.asarray(y_val))
        self._fit_labelled(X, encoded, X_val, val_encoded)
        if self.self_training:
            if X_unlabeled is None:
                raise ValueError("self_training=True needs X_unlabeled in fit().")
            X_unlabeled = _check_head_features(X_unlabeled, X.shape[1])
            scores = self.predict_proba(X_unlabeled)
            ordered = np.sort(scores, axis=1)
            keep = np.flatnonzero(ordered[:, -1] - ordered[:, -2] >= self.pseudo_label_margin)
            self.pseudo_label_index_ = keep
            self.pseudo_labels_ = self.classes_[scores[keep].argmax(axis=1)]
            if len(keep):
                self._fit_labelled(np.concatenate([X, X_unlabeled[keep]]),
                                   np.concatenate([encoded, scores[keep].argmax(axis=1)]), X_val, val_encoded)
        return self

    def decision_function(self, X) -> np.ndarray:
        """(clips, classes) weighted soft vote sum_h w[h, c] p_h(c)."""
        posteriors = head_posteriors(_check_head_features(X, self.prototypes_.shape[1]), self.prototypes_, self.tau)
        return np.einsum("nhc,hc->nc", posteriors, self.weights_)

    def predict_proba(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-12)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


class HeadSoftVoteClassifier(ClassifierMixin, BaseEstimator):
    """Uniform soft vote: mean of per-head posteriors (softmax of cosine / tau to the class prototypes) over all
    heads (`n_heads=None`) or the SAV top `n_heads`; isolates CALM's weighting from its head selection."""

    def __init__(self, n_heads: int | None = None, tau: float = 0.07):
        self.n_heads = n_heads
        self.tau = tau

    def fit(self, X, y):
        X = _check_head_features(X)
        self.classes_, encoded = _encode_labels(y)
        self.prototypes_ = class_means(X, encoded, len(self.classes_))
        if self.n_heads is None:
            self.selected_heads_ = np.arange(X.shape[1])
        else:
            scores = nearest_centroid_head_scores(X, encoded, len(self.classes_))
            self.selected_heads_ = np.argsort(-scores, kind="stable")[: self.n_heads]
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = _check_head_features(X, self.prototypes_.shape[1])[:, self.selected_heads_]
        return head_posteriors(X, self.prototypes_[:, self.selected_heads_], self.tau).mean(axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class CosineNearestCentroid(ClassifierMixin, BaseEstimator):
    """Nearest class mean of L2-normalised pooled features by cosine: the prototype rule without heads."""

    def fit(self, X, y):
        X = _unit(np.asarray(X, dtype=np.float32))
        self.classes_, encoded = _encode_labels(y)
        self.centroids_ = _unit(class_means(X, encoded, len(self.classes_)))
        return self

    def decision_function(self, X) -> np.ndarray:
        return _unit(np.asarray(X, dtype=np.float32)) @ self.centroids_.T

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def pooled_logistic_regression(C: float = 1.0):
    """StandardScaler + multinomial LogisticRegression (lbfgs, max_iter 1000): the CALM repository's probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


def default_methods(n_heads_total: int) -> dict:
    """name -> (estimator factory, feature kind) for the benchmark: kinds are "heads" (clips, heads, dim),
    "pooled_last" and "pooled_best" (clips, dim)."""
    sav_heads = min(20, max(1, n_heads_total // 4))  # SAVs: 20 of 1,024 LLM heads; a quarter of a small encoder
    return {
        "CALM": (lambda: CALMClassifier(), "heads"),
        "CALM self-training": (lambda: CALMClassifier(self_training=True), "heads"),
        "CALM global weights": (lambda: CALMClassifier(global_weights=True), "heads"),
        f"SAV (top {sav_heads} heads)": (lambda: SAVClassifier(n_heads=sav_heads), "heads"),
        "soft vote, all heads": (lambda: HeadSoftVoteClassifier(), "heads"),
        f"soft vote, SAV top {sav_heads}": (lambda: HeadSoftVoteClassifier(n_heads=sav_heads), "heads"),
        "nearest centroid, pooled last": (CosineNearestCentroid, "pooled_last"),
        "logistic regression, pooled last": (pooled_logistic_regression, "pooled_last"),
        "nearest centroid, pooled best layer": (CosineNearestCentroid, "pooled_best"),
        "logistic regression, pooled best layer": (pooled_logistic_regression, "pooled_best"),
    }


def draw_support(labels: np.ndarray, candidates: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """`shots` random rows of `candidates` per class (every class of `labels[candidates]`)."""
    shots = check_value("shots", shots, integer(minimum=1))
    chosen = []
    for name in np.unique(labels[candidates]):
        rows = candidates[labels[candidates] == name]
        if len(rows) < shots:
            raise ValueError(f"Class {str(name)!r} has {len(rows)} training clips; {shots} shots need at least "
                             f"{shots}.")
        chosen.append(rng.choice(rows, shots, replace=False))
    return np.concatenate(chosen)


def run_fewshot_benchmark(features: dict[str, np.ndarray], labels, train_index, test_index,
                          shots=(1, 5, 20), episodes: int = 5, methods: dict | None = None, seed: int = 0,
                          progress: bool = True) -> list[dict]:
    """Draw `episodes` support sets of each shot count from `train_index` (the same draw for every method, so
    results are paired), fit every method and score it on `test_index`. `features` maps a feature kind ("heads",
    "pooled_last", "pooled_best") to an array over all clips. The self-training method gets the remaining training
    clips, unlabelled, as its pool. Returns tidy records (method, shots, episode, accuracy, macro_f1, ...)."""
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    train_index, test_index = np.asarray(train_index), np.asarray(test_index)
    shots = check_value("shots", shots, integer_list(minimum=1))
    episodes = check_value("episodes", episodes, integer(minimum=1))
    if len(test_index) == 0:
        raise ValueError("run_fewshot_benchmark needs at least one test clip (test_index is empty).")
    methods = methods if methods is not None else default_methods(features["heads"].shape[1])
    missing = {kind for _, kind in methods.values()} - set(features)
    if missing:
        raise ValueError(f"The benchmark needs feature kinds {sorted(missing)}.")
    records = []
    jobs = [(s, e) for s in shots for e in range(episodes)]
    for shot_count, episode in tqdm(jobs, desc="few-shot episodes", disable=not progress):
        rng = np.random.default_rng([seed, shot_count, episode])
        support = draw_support(labels, train_index, shot_count, rng)
        pool = np.setdiff1d(train_index, support)
        for name, (factory, kind) in methods.items():
            estimator = factory()
            X = features[kind]
            extra = {}
            if getattr(estimator, "self_training", False):
                extra["X_unlabeled"] = X[pool]
            estimator.fit(X[support], labels[support], **extra)
            predicted = estimator.predict(X[test_index])
            record = {"method": name, "shots": shot_count, "episode": episode,
                      "accuracy": float(accuracy_score(labels[test_index], predicted)),
                      "macro_f1": float(f1_score(labels[test_index], predicted, average="macro"))}
            if extra:
                kept = getattr(estimator, "pseudo_label_index_", np.array([], dtype=int))
                record["pseudo_labels_kept"] = int(len(kept))
                record["pseudo_label_accuracy"] = (float((estimator.pseudo_labels_ == labels[pool][kept]).mean())
                                                   if len(kept) else None)
            records.append(record)
    return records


def summarize_benchmark(records: list[dict], reference: str = "CALM") -> list[dict]:
    """Mean and std over episodes per (method, shots), and the paired difference to `reference` (same draws):
    mean, std and the number of episodes where the method beats it."""
    summary = []
    keys = sorted({(r["method"], r["shots"]) for r in records}, key=lambda k: (k[1], k[0]))
    by_key = {}
    for r in records:
        by_key.setdefault((r["method"], r["shots"]), {})[r["episode"]] = r
    for method, shots in keys:
        rows = by_key[(method, shots)]
        accuracy = np.array([rows[e]["accuracy"] for e in sorted(rows)])
        f1 = np.array([rows[e]["macro_f1"] for e in sorted(rows)])
        entry = {"method": method, "shots": shots, "episodes": len(rows), "accuracy_mean": float(accuracy.mean()),
                 "accuracy_std": float(accuracy.std(ddof=1)) if len(rows) > 1 else 0.0,
                 "macro_f1_mean": float(f1.mean())}
        base = by_key.get((reference, shots))
        if base is not None and method != reference:
            diff = np.array([rows[e]["accuracy"] - base[e]["accuracy"] for e in sorted(rows) if e in base])
            entry.update({f"minus_{reference}_mean": float(diff.mean()),
                          f"minus_{reference}_std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
                          f"wins_over_{reference}": int((diff > 0).sum())})
        summary.append(entry)
    return summary
