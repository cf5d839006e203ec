"""numpy float32 matmul throughput for the shapes a benchmark names: the machine's practical
matmul limit, measured in the same run as the engine.

stdin: {"shapes": [{"key": str, "batch": int, "m": int, "k": int, "n": int, "transB": bool}],
        "minTimeS": float, "minReps": int, "maxReps": int}
stdout: {"numpy": ver, "python": ver, "blas": {...}, "modes": {"default": [...], "1 thread": [...]}}
Each result: {"key", "n" (repeats), "bestS", "medianS"}. Environment is left as it is
(OPENBLAS_CORETYPE etc. are recorded, not changed); "1 thread" uses OpenBLAS's own
set_num_threads when the library exposes it.
"""
import ctypes
import json
import os
import platform
import statistics
import sys
import time

import numpy as np


def openblas_lib():
    """The OpenBLAS shared library numpy loaded (found via /proc/self/maps), or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None, None
    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}get_config{suffix}"):
                    return lib, (prefix, suffix, p)
    return None, None


def blas_info(lib, names):
    info = {}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["build"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception as e:  # older numpy: no mode= argument
        info["build"] = {"error": str(e)}
    try:
        from threadpoolctl import threadpool_info  # optional

        info["threadpoolctl"] = threadpool_info()
    except Exception:
        pass
    if lib is not None:
        prefix, suffix, path = names
        info["runtimeLibrary"] = path
        for fn in ("get_corename", "get_config"):
            f = getattr(lib, f"{prefix}{fn}{suffix}", None)
            if f is not None:
                f.restype = ctypes.c_char_p
                info[fn[4:]] = f().decode()
        f = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
        if f is not None:
            f.restype = ctypes.c_int
            info["threads"] = f()
    info["env"] = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_", "GOTO"))}
    return info


def bench(shape, min_time, min_reps, max_reps):
    rng = np.random.default_rng(0)
    bt, m, k, n = shape["batch"], shape["m"], shape["k"], shape["n"]
    lead = (bt,) if bt > 1 else ()
    a = rng.standard_normal(lead + (m, k), dtype=np.float32)
    if shape.get("transB"):
        b = np.swapaxes(rng.standard_normal(lead + (n, k), dtype=np.float32), -1, -2)
    else:
        b = rng.standard_normal(lead + (k, n), dtype=np.float32)
    out = np.empty(lead + (m, n), dtype=np.float32)
    # Warm-up: at least 2 calls and 20 ms, so OpenBLAS's threads are awake.
    w0 = time.perf_counter()
    for i in range(1000):
        np.matmul(a, b, out=out)
        if i >= 1 and time.perf_counter() - w0 > 0.02:
            break
    times = []
    t0 = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - t0 < min_time):
        s = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - s)
    return {"key": shape["key"], "n": len(times), "bestS": min(times), "medianS": statistics.median(times)}


def main():
    req = json.load(sys.stdin)
    lib, names = openblas_lib()
    # numpy loads OpenBLAS on import; the maps lookup above happens after that.
    info = blas_info(lib, names)
    modes = {}
    args = (req.get("minTimeS", 0.06), req.get("minReps", 3), req.get("maxReps", 100))
    budget = req.get("modeBudgetS", 20.0)

    def run_mode():
        out, t0 = [], time.perf_counter()
        for s in req["shapes"]:
            if time.perf_counter() - t0 > budget:
                break  # the caller reports the shapes left out
            out.append(bench(s, *args))
        return out

    set_threads = None
    if lib is not None:
        prefix, suffix, _ = names
        set_threads = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
    default_threads = info.get("threads", 1)
    # 1 thread first: it is stable on a busy machine; the multi-threaded mode can collapse.
    if set_threads is not None and default_threads > 1:
        set_threads(1)
        modes["1 thread"] = run_mode()
        set_threads(default_threads)
    modes["default"] = run_mode()
    json.dump({"numpy": np.__version__, "python": platform.python_version(), "blas": info, "modes": modes}, sys.stdout)


if __name__ == "__main__":
    main()
