"""Disentanglement of a set of codes against ground-truth factors (docs/algorithms.md, "Disentanglement scores").

Codes are one number per image and direction (N, K); factors are the true generative factors (N, F),
discretised where continuous (`discretise`). Two scores, as the disentanglement literature computes them
for encoders:

- DCI (Eastwood & Williams 2018): gradient-boosted trees predict each factor from all codes; their feature
  importances form R (K x F). Disentanglement: each code's importances should go to one factor,
  D = sum_k rho_k (1 - H_F(R_k. / sum_j R_kj)), rho_k the code's share of all importance. Completeness:
  each factor should be predicted by one code, C = mean_j (1 - H_K(R_.j / sum_k R_kj)). Informativeness:
  the trees' mean accuracy on held-out images (chance is 1 / classes).
- MIG (Chen et al. 2018): per factor, the gap between the two codes with the highest mutual information
  with it, over the factor's entropy, averaged over factors (codes discretised into `code_bins` bins).

Entropies H_F and H_K use base F and K, so every score lies in [0, 1]. A score with nothing to measure is NaN
(null in metrics.json), not a number that reads as a result: completeness and MIG of a single code (one code
is trivially complete and has no second code to gap), D and C when the trees gave no code any importance.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import mutual_info_score


def discretise(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over the range of each column of (N, C) values: integer labels 0..bins-1."""
    values = np.asarray(values, dtype=np.float64)
    labels = np.zeros(values.shape, dtype=np.int64)
    for c in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, c], bins=bins)
        labels[:, c] = np.clip(np.digitize(values[:, c], edges[1:-1]), 0, bins - 1)
    return labels


def normalised_entropy(p: np.ndarray, base: int) -> float:
    """Entropy of a probability vector in base `base` (0 for a point mass, 1 for uniform over `base` values)."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(base)) if base > 1 else 0.0


def importance_matrix(
    codes: np.ndarray, factors: np.ndarray, train: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """R (K, F): the trees' feature importances of each code for each factor, and each factor's held-out accuracy."""
    k, f = codes.shape[1], factors.shape[1]
    importance, accuracy = np.zeros((k, f)), np.zeros(f)
    for j in range(f):
        trees = GradientBoostingClassifier(random_state=seed).fit(codes[train], factors[train, j])
        importance[:, j] = np.abs(trees.feature_importances_)
        accuracy[j] = trees.score(codes[~train], factors[~train, j])
    return importance, accuracy


def dci(codes: np.ndarray, factors: np.ndarray, train_fraction: float = 0.75, seed: int = 0) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness of codes (N, K) for discrete factors (N, F). A factor
    with one value among the training images has nothing to predict and is left out; with none left, all three
    are NaN."""
    n = len(codes)
    train = np.zeros(n, dtype=bool)
    train[np.random.default_rng(seed).permutation(n)[: int(round(train_fraction * n))]] = True
    varied = [j for j in range(factors.shape[1]) if len(np.unique(factors[train, j])) > 1]
    if not varied:
        return {"dci_d": float("nan"), "dci_c": float("nan"), "dci_i": float("nan")}
    importance, accuracy = importance_matrix(codes, factors[:, varied], train, seed)
    return dci_scores(importance, accuracy)


def dci_scores(importance: np.ndarray, accuracy: np.ndarray) -> dict[str, float]:
    """D, C and I from an importance matrix (K codes, F factors) and the per-factor held-out accuracies:
    D weights each code's 1 - entropy (base F) of its row by the code's share of the importance, C averages
    each factor's 1 - entropy (base K) of its column."""
    k, f = importance.shape
    total = importance.sum()
    if total == 0:  # no code predicts anything: nothing to be disentangled or complete about
        return {"dci_d": float("nan"), "dci_c": float("nan"), "dci_i": float(accuracy.mean())}
    code_weight = importance.sum(axis=1) / total
    per_code = [1 - normalised_entropy(row / row.sum(), f) if row.sum() > 0 else 0.0 for row in importance]
    per_factor = [1 - normalised_entropy(col / col.sum(), k) if col.sum() > 0 else 0.0 for col in importance.T]
    return {
        "dci_d": float(np.dot(code_weight, per_code)),
        "dci_c": float(np.mean(per_factor)) if k > 1 else float("nan"),  # one code is complete by definition
        "dci_i": float(accuracy.mean()),
    }


def mig(codes: np.ndarray, factors: np.ndarray, code_bins: int = 20) -> float:
    """Mutual information gap of codes (N, K) for discrete factors (N, F), averaged over the factors that vary;
    NaN with fewer than two codes or no factor that varies."""
    if codes.shape[1] < 2:
        return float("nan")
    binned = discretise(codes, code_bins)
    gaps = []
    for j in range(factors.shape[1]):
        entropy = mutual_info_score(factors[:, j], factors[:, j])
        if entropy == 0:
            continue
        information = sorted(
            (mutual_info_score(binned[:, k], factors[:, j]) for k in range(codes.shape[1])), reverse=True
        )
        gaps.append((information[0] - information[1]) / entropy)
    return float(np.mean(gaps)) if gaps else float("nan")


def disentanglement_scores(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> dict[str, float]:
    """DCI and MIG of codes (N, K) for discrete factors (N, F)."""
    return dci(codes, factors, seed=seed) | {"mig": mig(codes, factors)}
