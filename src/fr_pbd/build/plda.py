"""Build the PLDA score model (``fr-pbd models build plda``) from templates, and check it against the pin.

The command (:mod:`fr_pbd.cli.models`) computes the templates of LFW's half A (every image
of the identities that the split seed puts in the selection half: the same half the
operating point is chosen on, so the other half stays held out from both) with the capture
pipeline in force, and hands the acquired ones here. :func:`fit` is deterministic (closed-form
start, a fixed number of EM steps, no random draw), the parameters are written as float32 in
the format of :mod:`fr_pbd.match.plda`, and the file's sha256 must equal the manifest's.

Bit-for-bit: the templates come from onnxruntime and the fit from numpy's BLAS, and neither
promises the same last bits on another CPU or library build. (Even on one machine BLAS's thread
count changes the order of a GEMM's sums: the fit runs with one BLAS thread, as a verification
does.) So a build whose bytes differ
from the pin is compared with the manifest's ``fingerprint`` (the LLRs of seeded synthetic
attempts, :func:`fingerprint`): the error says whether the scores agree within
:data:`FINGERPRINT_TOL`, and the file is removed either way (the matcher loads only the
pinned bytes).
"""

from __future__ import annotations

import numpy as np

from fr_pbd import fileio, models
from fr_pbd.errors import ModelBuildError
from fr_pbd.match.plda import Plda, fit

__all__ = ["NAME", "build_plda", "fingerprint", "FINGERPRINT_TOL"]

NAME = "plda-dlib-resnet-v1-lfw-a"
#: Largest difference of a fingerprint LLR from the pinned one that counts as "the same model".
FINGERPRINT_TOL = 0.05


def fingerprint(plda: Plda, n: int = 6, k: int = 3) -> list[float]:
    """LLRs of ``n`` seeded synthetic attempts drawn from the model itself (a probe and ``k`` enrolled
    templates; the first half genuine, one identity, the rest impostors), to 4 decimals: a summary of
    the model that survives last-bit differences. Uniform draws of unit variance (``Generator.random``
    is stable across numpy versions; its normal sampler is not promised to be)."""
    rng = np.random.default_rng([20261205, plda.dim])
    d = plda.dim
    lb = np.linalg.cholesky((plda.B + plda.B.T) / 2)
    lw = np.linalg.cholesky((plda.W + plda.W.T) / 2)
    prep = plda.prepare()

    def z(*shape):
        return (rng.random(shape) - 0.5) * np.sqrt(12.0)

    out = []
    for i in range(n):
        y = plda.mu + lb @ z(d)
        enrolled = y + z(k, d) @ lw.T
        other = y if i < n // 2 else plda.mu + lb @ z(d)
        probe = other + lw @ z(d)
        out.append(round(prep.llr(probe, enrolled), 4))
    return out


def build_plda(x: np.ndarray, identity: np.ndarray) -> tuple[str, list[float]]:
    """Fit on ``x`` (acquired templates of half A) and ``identity``; keep the file only if it is the pinned one.

    Returns (path, fingerprint). Raises ModelBuildError (file removed) when the bytes differ.
    """
    from threadpoolctl import threadpool_limits

    spec = models.spec(NAME)
    with threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread: the sums in one order, whatever the cores
        plda = fit(x, identity)
    data = plda.to_bytes()
    digest = models.sha256_bytes(data)
    fp = fingerprint(plda)
    out = models.cache_dir() / spec.file
    if digest != spec.sha256:
        pinned = spec.extra.get("fingerprint") or []
        diff = max((abs(a - b) for a, b in zip(fp, pinned)), default=float("inf"))
        same = len(pinned) == len(fp) and diff <= FINGERPRINT_TOL
        raise ModelBuildError(
            f"the built {spec.file} has sha256 {digest}, the manifest pins {spec.sha256}; not kept. Its scores "
            + (f"agree with the pinned model's within {diff:.4f} (the difference is last bits of this machine's "
               "onnxruntime/BLAS)" if same else f"differ from the pinned model's by up to {diff:.4g}: "
               "another embedder, data or code than the pin's"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(out, data, mode=0o644)
    return str(out), fp
