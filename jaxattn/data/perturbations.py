"""Input perturbations for robustness studies (numpy, like the rest of ``jaxattn.data``).

See docs/tasks.md#perturbations and docs/ssm.md#robustness-to-fourier-mode-noise.
"""

import numpy as np


def fourier_noise(inputs: np.ndarray, mode: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """``[N, L, F]`` inputs plus one Fourier mode per example,
    ``amplitude * std(x) * sqrt(2) * sin(2 pi mode t / L + phi)`` with a random phase ``phi``:
    noise with ``amplitude^2`` times the inputs' power, all of it at frequency ``mode / L``."""
    length = inputs.shape[1]
    phase = rng.uniform(0, 2 * np.pi, (inputs.shape[0], 1, 1))
    wave = np.sqrt(2.0) * np.sin(2 * np.pi * mode * np.arange(length)[None, :, None] / length + phase)
    return (inputs + amplitude * inputs.std() * wave).astype(inputs.dtype)
