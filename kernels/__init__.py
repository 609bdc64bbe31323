"""Swappable compute kernels for fastbp (installed as ``fastbp.kernels``).

``reference`` is the executable spec in NumPy; ``cpu`` (Numba, parallel loops) and ``gpu``
(Numba CUDA) implement the same fused passes over the per-element math of ``scalar``.
Activations and losses are passed to kernels as the small integer codes of ``codes``.
"""

from .cache import use_user_cache_dir

use_user_cache_dir()
