"""What a trained network learned: SVCCA against its start (``compare``, ``svcca``), Grad-CAM maps
(``gradcam``), a linear-probe ranking of truncation points (``probe``), and their run-dir commands (``runs``).

Modules import JAX only when used, so ``import ttlx.analysis`` stays cheap.
"""
