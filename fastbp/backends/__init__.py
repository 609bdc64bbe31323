"""Backend implementations: ``numpy`` (the reference), ``numba`` (CPU), ``cupy`` (GPU)."""
