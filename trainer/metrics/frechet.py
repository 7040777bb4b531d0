"""Fréchet distance between two Gaussians fitted to feature sets (FID on Inception features, FVD on I3D).

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), computed as pytorch-fid does (scipy's sqrtm,
eps * I added to both covariances when the product is near-singular; tiny imaginary parts dropped).
"""

from __future__ import annotations

import numpy as np


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] -> (mean [D], covariance [D, D]) in float64. Needs N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(max(0.0, diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)))


def feature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between feature sets a [N, D] and b [M, D].

    With fewer samples than dimensions (an evaluation of a few hundred frames against 2048-d
    Inception features) the D x D square root is replaced by its exact low-rank form: with
    S1 = A^T A, S2 = B^T B (A, B the centred features / sqrt(n - 1)), the non-zero eigenvalues of
    S1 S2 are those of (A B^T)(A B^T)^T, so Tr (S1 S2)^(1/2) is the nuclear norm of A B^T.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*gaussian(a), *gaussian(b))
    if min(len(a), len(b)) < 2:
        raise ValueError("need at least 2 feature vectors on each side")
    mu1, mu2 = a.mean(0), b.mean(0)
    A = (a - mu1) / np.sqrt(len(a) - 1)
    B = (b - mu2) / np.sqrt(len(b) - 1)
    nuclear = np.linalg.svd(A @ B.T, compute_uv=False).sum()
    d = mu1 - mu2
    return float(max(0.0, d @ d + (A * A).sum() + (B * B).sum() - 2 * nuclear))
