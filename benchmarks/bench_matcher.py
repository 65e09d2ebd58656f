"""Matcher benchmark: fr_pbd.match.Gallery vs a Python loop vs face_recognition's style.

Two ways to run it::

    pytest benchmarks/bench_matcher.py --benchmark-enable        # pytest-benchmark suites
    .venv/bin/python benchmarks/bench_matcher.py [--quick]                 # a table + the two ratios

Sizes: N = 10, 1,000, 100,000, 1,000,000 templates of D = 128 float32 (5 per
user), B = 1 and B = 64 probes. Beside the matcher:

(i)  ``python-loop``: a Python ``for`` loop over the templates, one numpy dot per
     template (``P @ v``), per-user max kept in a dict;
(ii) ``fr-norm``: face_recognition's ``face_distance``, i.e.
     ``np.linalg.norm(known - probe, axis=1)`` once per probe (distances to every
     template; no per-user reduction, so it does *less* work than the others).

References measured in the same run:

* memory read bandwidth: the fastest of several streaming reads of a 1 GiB
  float32 array from numpy: ``a.sum()`` and ``a.max()`` (numpy's own SIMD
  loops, one thread) and ``a.reshape(-1, 128) @ ones(128)`` (OpenBLAS sgemv,
  all threads). Each reads every byte once and writes almost nothing, so the
  fastest is the best estimate of what numpy can stream from DRAM here.
* GEMM rate: ``x @ x`` for a 4096 x 4096 float32 ``x`` (2 * 4096**3 flop).
* kernel ceilings: raw OpenBLAS sgemv / blocked sgemm over the same gallery
  without the per-user max, to separate fr-pbd's overhead from the kernels'.

The two headline ratios are measured in *interleaved* rounds (every reference
and the matcher back to back, repeated, medians), so that the load of other
processes on a shared machine affects numerator and denominator alike.

Ratios reported: N = 10**6, B = 1: achieved GB/s (gallery bytes / time) over
the bandwidth (target >= 0.85); B = 64: achieved GFLOP/s (2 N D B / time) over
the GEMM rate (target >= 0.7). Threads: OpenBLAS is set to ``os.cpu_count()``
threads (override with FR_PBD_BENCH_THREADS) for every measurement; numpy ufuncs
are single-threaded. Timings are medians.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

try:
    from fr_pbd.match import Gallery
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from fr_pbd.match import Gallery

D = 128
PER_USER = 5
SIZES = (10, 1_000, 100_000, 1_000_000)
BATCHES = (1, 64)
PY_LOOP_BUDGET_S = 20.0
BANDWIDTH_BYTES = 1 << 30


# ------------------------------------------------------------------------------ threads
def _openblas():
    pattern = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*")
    for path in glob.glob(pattern):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def set_blas_threads() -> str:
    """Pin OpenBLAS to a consistent thread count; return a description for the report."""
    n = int(os.environ.get("FR_PBD_BENCH_THREADS", os.cpu_count() or 1))
    lib = _openblas()
    desc = "unknown BLAS (threads not set)"
    if lib is not None:
        for setter, getter in (
            ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("openblas_set_num_threads", "openblas_get_num_threads"),
        ):
            if hasattr(lib, setter):
                getattr(lib, setter)(n)
                desc = f"OpenBLAS ({os.path.basename(lib._name)}), {getattr(lib, getter)()} threads"
                cfg = getattr(lib, "scipy_openblas_get_config64_", None)
                if cfg is not None:
                    cfg.restype = ctypes.c_char_p
                    desc += f"; {cfg().decode()}"
                break
    return desc


# ------------------------------------------------------------------------------ data
_cache: dict[tuple, object] = {}


def unit_rows(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def data(n: int):
    key = ("data", n)
    if key not in _cache:
        rng = np.random.default_rng(n)
        vec = unit_rows(rng, n)
        n_users = -(-n // PER_USER)
        counts = [PER_USER] * (n // PER_USER) + ([n % PER_USER] if n % PER_USER else [])
        users = [f"user{k}" for k in range(n_users)]
        labels = np.repeat(np.arange(n_users), counts)
        _cache[key] = (vec, users, counts, labels)
    return _cache[key]


def gallery(n: int) -> Gallery:
    key = ("gallery", n)
    if key not in _cache:
        vec, users, counts, _ = data(n)
        _cache[key] = Gallery.from_counts(vec, users, counts)
    return _cache[key]


def probes(b: int) -> np.ndarray:
    return unit_rows(np.random.default_rng(1000 + b), b)


# ------------------------------------------------------------------------------ implementations
def run_gallery(n: int, p: np.ndarray):
    g = gallery(n)
    return lambda: g.best_per_user(p)


def run_python_loop(n: int, p: np.ndarray):
    vec, _, _, labels = data(n)
    rows = list(vec)  # row views, made once
    labs = labels.tolist()

    def f():
        best: dict[int, np.ndarray] = {}
        for v, u in zip(rows, labs):
            s = p @ v
            cur = best.get(u)
            best[u] = s if cur is None else np.maximum(cur, s)
        return best

    return f


def run_fr_norm(n: int, p: np.ndarray):
    vec = data(n)[0]

    def f():
        return [np.linalg.norm(vec - q, axis=1) for q in p]

    return f


IMPLS: dict[str, Callable] = {"fr-pbd": run_gallery, "python-loop": run_python_loop, "fr-norm": run_fr_norm}


# ------------------------------------------------------------------------------ timing
def median_time(f: Callable[[], object], *, min_rounds: int = 5, budget_s: float = 3.0, max_rounds: int = 200) -> float:
    f()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_rounds and (len(times) < min_rounds or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
        if times[0] > budget_s and len(times) >= 1:
            break
    return statistics.median(times)


def memory_bandwidth() -> tuple[float, dict[str, float]]:
    """Fastest streaming read of a 1 GiB float32 array, in GB/s (1e9 bytes/s)."""
    a = np.random.default_rng(0).standard_normal(BANDWIDTH_BYTES // 4, dtype=np.float32)
    a2 = a.reshape(-1, D)
    ones = np.ones(D, dtype=np.float32)
    cands = {
        "a.sum() [numpy, 1 thread]": lambda: a.sum(),
        "a.max() [numpy, 1 thread]": lambda: a.max(),
        "a.reshape(-1,128) @ ones [sgemv, all threads]": lambda: a2 @ ones,
    }
    rates = {k: a.nbytes / median_time(f, min_rounds=7, budget_s=2.0) / 1e9 for k, f in cands.items()}
    del a, a2
    return max(rates.values()), rates


def gemm_rate(n: int = 4096) -> float:
    x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / median_time(lambda: x @ x, min_rounds=3, budget_s=2.0) / 1e9


def load_baseline(path: str):
    """Another version's ``gallery.py`` (e.g. from ``git show REV:src/fr_pbd/match/gallery.py``), as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_gallery", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Gallery


def headline(rounds: int = 9, n: int = 1_000_000, baseline=None) -> dict[str, float]:
    """The two ratios, from *interleaved* rounds: each round times every reference and the matcher
    back to back, so a change in machine load affects all of them alike. Medians over rounds.
    ``baseline``: another Gallery class, timed in the same rounds ("baseline B=1", "baseline B=64")."""
    g = gallery(n)
    q, p64 = probes(1), probes(64)
    a = np.random.default_rng(0).standard_normal(BANDWIDTH_BYTES // 4, dtype=np.float32)
    a2 = a.reshape(-1, D)
    ones = np.ones(D, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((4096, 4096), dtype=np.float32)
    vec = g._vectors
    out = np.empty((64, 4096), dtype=np.float32)

    def raw_gemm():
        for s in range(0, n - 4096 + 1, 4096):
            np.matmul(p64, vec[s : s + 4096].T, out=out)

    work = {
        "read a.sum()": (lambda: a.sum(), a.nbytes),
        "read a.max()": (lambda: a.max(), a.nbytes),
        "read sgemv(a, ones)": (lambda: a2 @ ones, a.nbytes),
        "matcher B=1": (lambda: g.best_per_user(q), vec.nbytes),
        "raw sgemv, same gallery": (lambda: [vec[s : s + 65536] @ q[0] for s in range(0, n, 65536)], vec.nbytes),
        "gemm 4096^2": (lambda: x @ x, 2 * 4096**3),
        "matcher B=64": (lambda: g.best_per_user(p64), 2 * n * D * 64),
        "raw blocked sgemm, same gallery": (raw_gemm, 2 * (n // 4096) * 4096 * D * 64),
    }
    if baseline is not None:
        v0, users, counts, _ = data(n)
        gb = baseline.from_counts(v0, users, counts)
        assert np.array_equal(gb.best_per_user(p64), g.best_per_user(p64)), "baseline and matcher disagree"
        work["baseline B=1"] = (lambda: gb.best_per_user(q), vec.nbytes)
        work["baseline B=64"] = (lambda: gb.best_per_user(p64), 2 * n * D * 64)
    times: dict[str, list[float]] = {k: [] for k in work}
    for f, _ in work.values():
        f()
    for _ in range(rounds):
        for k, (f, _) in work.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: work[k][1] / statistics.median(v) / 1e9 for k, v in times.items()}


def estimate_python_loop_s(n: int, b: int) -> float:
    small = 2_000
    t = median_time(run_python_loop(small, probes(b)), min_rounds=3, budget_s=0.5)
    return t * n / small


# ------------------------------------------------------------------------------ pytest-benchmark
try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module", autouse=True)
    def _threads():
        return set_blas_threads()

    @pytest.mark.parametrize("b", BATCHES)
    @pytest.mark.parametrize("n", SIZES)
    @pytest.mark.parametrize("impl", list(IMPLS))
    def test_matcher(benchmark, impl, n, b):
        if impl == "python-loop" and n >= 1_000_000:
            est = estimate_python_loop_s(n, b)
            if est > PY_LOOP_BUDGET_S:
                pytest.skip(f"python loop at N={n}, B={b} would take ~{est:.0f} s per call")
        f = IMPLS[impl](n, probes(b))
        slow = n >= 100_000 and impl != "fr-pbd"
        if slow:
            benchmark.pedantic(f, rounds=3, iterations=1, warmup_rounds=0)
        else:
            benchmark(f)
        t = benchmark.stats.stats.median
        benchmark.extra_info.update(
            gb_per_s=n * D * 4 / t / 1e9, gflop_per_s=2 * n * D * b / t / 1e9, n=n, b=b, impl=impl
        )

    def test_memory_bandwidth(benchmark):
        bw, rates = benchmark.pedantic(memory_bandwidth, rounds=1, iterations=1)
        benchmark.extra_info.update(best_gb_per_s=bw, **rates)

    def test_headline_ratios(benchmark):
        """N = 10**6: matcher vs bandwidth (B=1) and vs GEMM (B=64), interleaved; see extra_info."""
        h = benchmark.pedantic(headline, kwargs={"rounds": 5}, rounds=1, iterations=1)
        bw = max(h["read a.sum()"], h["read a.max()"], h["read sgemv(a, ones)"])
        benchmark.extra_info.update(
            h, ratio_b1_vs_bandwidth=h["matcher B=1"] / bw, ratio_b64_vs_gemm=h["matcher B=64"] / h["gemm 4096^2"]
        )

    def test_gemm_reference(benchmark):
        rate = benchmark.pedantic(gemm_rate, rounds=1, iterations=1)
        benchmark.extra_info.update(gflop_per_s=rate)


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip N = 10**6 (smoke run)")
    ap.add_argument("--headline-only", action="store_true", help="only the interleaved N = 10**6 ratios")
    ap.add_argument("--baseline", help="another version's gallery.py, timed in the same interleaved rounds")
    ap.add_argument("--out", help="write the headline figures and ratios here (JSON)")
    args = ap.parse_args(argv)
    if args.headline_only:
        return _headline_only(args)
    sizes = SIZES[:-1] if args.quick else SIZES
    threads = set_blas_threads()
    print(f"# fr-pbd matcher benchmark: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print(f"# BLAS: {threads}")
    print("# load average at start (other processes on this machine): %.2f %.2f %.2f" % os.getloadavg())
    bw, rates = memory_bandwidth()
    for k, v in rates.items():
        print(f"# read bandwidth {k}: {v:.1f} GB/s")
    gemm = gemm_rate()
    print(f"# memory read bandwidth (best): {bw:.1f} GB/s; numpy 4096^2 float32 GEMM: {gemm:.1f} GFLOP/s")
    print()
    print(f"| {'N':>9} | {'B':>3} | {'impl':<11} | {'median ms':>10} | {'GB/s':>7} | {'GFLOP/s':>8} | {'x slower':>8} |")
    print(f"|{'-' * 11}|{'-' * 5}|{'-' * 13}|{'-' * 12}|{'-' * 9}|{'-' * 10}|{'-' * 10}|")
    ours: dict[tuple[int, int], float] = {}
    notes = []
    for n in sizes:
        for b in BATCHES:
            p = probes(b)
            for impl, make in IMPLS.items():
                if impl == "python-loop" and n >= 1_000_000:
                    est = estimate_python_loop_s(n, b)
                    if est > PY_LOOP_BUDGET_S:
                        notes.append(f"python-loop skipped at N={n}, B={b}: estimated {est:.0f} s per call")
                        print(f"| {n:>9} | {b:>3} | {impl:<11} | {'skipped':>10} | {'':>7} | {'':>8} | {'~%.0fx' % (est / ours[(n, b)]):>8} |")
                        continue
                budget = 3.0 if impl == "fr-pbd" else 1.0
                t = median_time(make(n, p), min_rounds=7 if impl == "fr-pbd" else 3, budget_s=budget)
                if impl == "fr-pbd":
                    ours[(n, b)] = t
                rel = t / ours[(n, b)]
                print(
                    f"| {n:>9} | {b:>3} | {impl:<11} | {t * 1e3:>10.3f} | {n * D * 4 / t / 1e9:>7.2f} | "
                    f"{2 * n * D * b / t / 1e9:>8.2f} | {rel:>8.1f} |"
                )
        if n < 1_000_000:
            for k in [k for k in _cache if k[1] == n]:
                del _cache[k]
    print()
    for note in notes:
        print(f"# {note}")
    print("# load average at end: %.2f %.2f %.2f" % os.getloadavg())
    if (1_000_000, 1) in ours:
        print()
        print("# Headline, interleaved rounds (GB/s for reads and B=1, GFLOP/s for GEMMs and B=64):")
        h = headline()
        for k, v in h.items():
            print(f"#   {k:<32} {v:8.1f}")
        bw_h = max(h["read a.sum()"], h["read a.max()"], h["read sgemv(a, ones)"])
        r1, r64 = h["matcher B=1"] / bw_h, h["matcher B=64"] / h["gemm 4096^2"]
        print(f"# N=10^6, B=1 : {h['matcher B=1']:.1f} GB/s = {r1:.2f} of the best read bandwidth "
              f"{bw_h:.1f} GB/s (target >= 0.85); {h['matcher B=1'] / h['raw sgemv, same gallery']:.2f} of raw sgemv")
        print(f"# N=10^6, B=64: {h['matcher B=64']:.1f} GFLOP/s = {r64:.2f} of numpy's 4096^2 GEMM "
              f"{h['gemm 4096^2']:.1f} GFLOP/s (target >= 0.70); "
              f"{h['matcher B=64'] / h['raw blocked sgemm, same gallery']:.2f} of raw blocked sgemm")
        print("# load average after headline: %.2f %.2f %.2f" % os.getloadavg())
    return 0


def _headline_only(args) -> int:
    import json

    threads = set_blas_threads()
    load_before = [round(x, 2) for x in os.getloadavg()]
    h = headline(baseline=load_baseline(args.baseline) if args.baseline else None)
    load_after = [round(x, 2) for x in os.getloadavg()]
    bw = max(h["read a.sum()"], h["read a.max()"], h["read sgemv(a, ones)"])
    ratios = {"b1_over_bandwidth": h["matcher B=1"] / bw, "b64_over_gemm": h["matcher B=64"] / h["gemm 4096^2"]}
    if args.baseline:
        ratios["baseline_b1_over_bandwidth"] = h["baseline B=1"] / bw
        ratios["baseline_b64_over_gemm"] = h["baseline B=64"] / h["gemm 4096^2"]
    for k, v in h.items():
        print(f"#   {k:<32} {v:8.1f}")
    for k, v in ratios.items():
        print(f"# {k}: {v:.2f}")
    if args.out:
        doc = {"benchmark": "bench_matcher --headline-only", "n": 1_000_000, "d": D, "per_user": PER_USER,
               "rates": {k: round(v, 2) for k, v in h.items()},
               "rate_units": "GB/s for reads and B=1, GFLOP/s for GEMMs and B=64",
               "ratios": {k: round(v, 3) for k, v in ratios.items()},
               "targets": {"b1_over_bandwidth": 0.85, "b64_over_gemm": 0.70},
               "baseline": args.baseline, "config": {"blas": threads, "precision": "fp32", "liveness": False},
               "load": {"loadavg_before": load_before, "loadavg_after": load_after}}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
