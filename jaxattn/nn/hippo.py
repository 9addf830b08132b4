"""HiPPO-LegS and its normal-plus-low-rank (NPLR) and diagonal forms, in float64 NumPy.

docs/ssm.md#hippo. float32 loses accuracy in the eigendecomposition for N >= 64, so every
matrix here is built and diagonalised in float64; modules cast the results when they create
parameters.
"""

import numpy as np
import scipy.linalg


def hippo_legs(n: int) -> np.ndarray:
    """HiPPO-LegS state matrix ``A`` ``[N, N]``.

    ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)`` for ``n > k``, ``A[n, n] = -(n+1)``, zero above the diagonal.
    """
    if n < 1:
        raise ValueError(f"hippo_legs: state size must be >= 1, got {n}")
    root = np.sqrt(2.0 * np.arange(n) + 1.0)
    a = np.tril(root[:, None] * root[None, :], k=-1) + np.diag(np.arange(n) + 1.0)
    return -a


def hippo_legs_nplr(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, P, B)`` with ``A + P P^T = -1/2 I + skew-symmetric``.

    ``P[n] = sqrt(n + 1/2)`` ``[N]``, ``B[n] = sqrt(2n + 1)`` ``[N]``.
    """
    a = hippo_legs(n)
    p = np.sqrt(np.arange(n) + 0.5)
    b = np.sqrt(2.0 * np.arange(n) + 1.0)
    return a, p, b


def hippo_legs_diagonal(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal form of the normal part ``S = A + P P^T`` of HiPPO-LegS.

    Returns:
      ``(Lambda, V)``: eigenvalues ``Lambda = -1/2 + i eigvalsh(-i S)`` ``[N]`` complex128, sorted
      by imaginary part, and the unitary eigenvectors ``V`` ``[N, N]`` with ``S = V diag(Lambda) V^*``.
    """
    a, p, _ = hippo_legs_nplr(n)
    s = a + p[:, None] * p[None, :]
    # S is -1/2 I plus a skew-symmetric matrix, so -i S = 1/2 i I + (Hermitian): eigh is exact.
    real_part = np.mean(np.diagonal(s))
    imag_part, v = np.linalg.eigh(-1j * s)
    return real_part + 1j * imag_part, v


def block_diagonal_hippo(
    state_size: int, blocks: int, conj_sym: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S5's initial spectrum: ``blocks`` copies of the HiPPO-N spectrum of size ``state_size // blocks``.

    Args:
      state_size: N, the total (real-matrix) state size; divisible by ``blocks``.
      blocks: J, the number of diagonal blocks.
      conj_sym: keep one eigenvalue of each conjugate pair (P = N/2 stored states).

    Returns:
      ``(Lambda [P], V [N, P], V_inv [P, N])`` complex128, with ``V`` block diagonal and
      ``V_inv = V^*`` (the eigenvectors are unitary).
    """
    if blocks < 1 or state_size % blocks:
        raise ValueError(
            f"block_diagonal_hippo: state_size={state_size} must be a positive multiple of blocks={blocks}"
        )
    block_size = state_size // blocks
    if conj_sym and block_size % 2:
        raise ValueError(
            f"block_diagonal_hippo: with conj_sym the block size state_size/blocks={block_size} must be even"
        )
    lam, v = hippo_legs_diagonal(block_size)
    if conj_sym:
        keep = block_size // 2
        lam, v = lam[:keep], v[:, :keep]
    lam_all = np.tile(lam, blocks)
    v_all = scipy.linalg.block_diag(*([v] * blocks))
    return lam_all, v_all, v_all.conj().T


def hippo_legs_dplr(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """S4's diagonal-plus-low-rank form of HiPPO-LegS in the eigenbasis of its normal part.

    With ``S = A + P P^T = V diag(Lambda) V^*``: ``V^* A V = diag(Lambda) - p p^*`` and
    ``V^* B = b``, where ``p = V^* P``. The matrix is real, so its modes come in conjugate pairs;
    one of each is returned (positive imaginary part), the other is its conjugate.

    Returns:
      ``(Lambda [N/2], p [N/2], b [N/2], V [N, N/2])`` complex128, for even N.
    """
    if n % 2:
        raise ValueError(f"hippo_legs_dplr: the state size must be even (conjugate pairs), got {n}")
    _, p_real, b_real = hippo_legs_nplr(n)
    lam, v = hippo_legs_diagonal(n)
    keep = lam.imag > 0
    v = v[:, keep]
    return lam[keep], v.conj().T @ p_real, v.conj().T @ b_real, v
