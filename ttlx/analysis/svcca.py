"""SVCCA (Raghu et al., NeurIPS 2017): how similar two sets of activations are, up to a linear map.

Each activation matrix has one row per data point and one column per neuron. SVCCA centres the columns,
keeps the top singular directions that explain ``keep`` (99%) of the variance, then computes the
canonical correlations between the two reduced matrices; their mean is the SVCCA similarity. A conv map
[N, H, W, C] is a matrix of (N * positions) rows and C columns, as the paper treats conv layers, with a
random subset of positions per image to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttlx.errors import ConfigError


@dataclass(frozen=True)
class SVCCAResult:
    """The canonical correlations (largest first) of two activation sets and what was kept."""

    coefficients: np.ndarray
    dims: tuple[int, int]  # singular directions kept for each side
    rows: int  # data points (examples x positions)

    @property
    def mean(self) -> float:
        """The SVCCA similarity; NaN when a side has no variance (a dead or constant layer)."""
        return float(np.mean(self.coefficients)) if self.coefficients.size else float("nan")

    def to_dict(self) -> dict:
        return {"mean": None if np.isnan(self.mean) else self.mean,
                "coefficients": [float(c) for c in self.coefficients],
                "dims": list(self.dims), "rows": self.rows}


def as_matrix(acts: np.ndarray) -> np.ndarray:
    """[N, C] stays; [N, H, W, C] (or any [..., C]) becomes [(N*H*W), C]: positions are data points."""
    acts = np.asarray(acts)
    if acts.ndim < 2:
        raise ValueError(f"Activations need 2 or more dimensions (points x neurons), got shape {acts.shape}.")
    return acts.reshape(-1, acts.shape[-1])


def svd_reduce(acts: np.ndarray, keep: float = 0.99) -> np.ndarray:
    """Centre the columns and project onto the fewest singular directions explaining ``keep`` of the variance.

    Returns the [rows, k] coordinates U_k * s_k. Directions with (numerically) zero variance never count,
    so a constant or rank-deficient layer keeps only what varies.
    """
    x = as_matrix(acts).astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    variance = s**2
    total = variance.sum()
    if total <= 0:
        return np.zeros((x.shape[0], 0))
    nonzero = int(np.sum(s > s[0] * max(x.shape) * np.finfo(np.float64).eps))
    k = int(np.searchsorted(np.cumsum(variance) / total, keep - 1e-12) + 1)
    k = max(1, min(k, nonzero))
    return u[:, :k] * s[:k]


def canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The canonical correlations of two [rows, p] and [rows, q] matrices, largest first.

    The cosines of the principal angles between the two centred column spaces: the singular values of
    Qx^T Qy, with Qx, Qy orthonormal bases from QR (Björck and Golub 1973). Assumes full column rank.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    _same_rows(x, y)
    qx, _ = np.linalg.qr(x - x.mean(axis=0))
    qy, _ = np.linalg.qr(y - y.mean(axis=0))
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return np.clip(rho, 0.0, 1.0)


def _same_rows(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"Both activation sets need the same rows, got {x.shape[0]} and {y.shape[0]}.")


def svcca(a: np.ndarray, b: np.ndarray, keep: float = 0.99) -> SVCCAResult:
    """SVCCA of two activation sets over the same data points (rows); the neuron counts may differ."""
    ra, rb = svd_reduce(a, keep), svd_reduce(b, keep)
    _same_rows(ra, rb)
    if min(ra.shape[1], rb.shape[1]) == 0:
        return SVCCAResult(np.zeros(0), (ra.shape[1], rb.shape[1]), ra.shape[0])
    if ra.shape[1] + rb.shape[1] >= ra.shape[0]:
        raise ConfigError(
            f"SVCCA needs more data points ({ra.shape[0]}) than kept directions ({ra.shape[1]} + "
            f"{rb.shape[1]}); use more images or positions per image."
        )
    return SVCCAResult(canonical_correlations(ra, rb), (ra.shape[1], rb.shape[1]), ra.shape[0])


def chance_level(a: np.ndarray, b: np.ndarray, keep: float = 0.99, seed: int = 0) -> float:
    """Mean SVCCA after shuffling the rows of ``b``: what unrelated activations of these sizes score.

    CCA over k directions and n points finds spurious correlation of order sqrt(k / n); this number
    says how far above chance a layer's similarity is.
    """
    b = as_matrix(b)
    rows = np.random.default_rng(seed).permutation(b.shape[0])
    return svcca(as_matrix(a), b[rows], keep).mean
