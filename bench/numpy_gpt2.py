"""A plain float32 numpy GPT-2 forward (no framework): the baseline the engine's whole forward
and its trace are compared with, measured in the same run as the engine.

It reads the same checkpoint folder the engine loads (config.json + model.safetensors, F32 or
F16 upcast to float32), runs B rows of T tokens through every block (tanh-GELU, pre-LayerNorm,
tied unembedding) and unembeds the last position of each row, as the engine's forward does.

stdin:  {"dir": str, "cases": [{"key": str, "b": int, "t": int}], "minTimeS": float,
         "minReps": int, "maxReps": int, "check": {"ids": [int], "top": int}?}
stdout: {"numpy": ver, "blas": str, "cases": [{"key", "n", "bestS", "medianS"}],
         "check": {"logits_first8": [...], "argmax": int}?}
OpenBLAS threads are left at numpy's default (both cores); the caller records the load.
"""
import json
import math
import statistics
import struct
import sys
import time

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None}


def load(dirname):
    with open(f"{dirname}/config.json") as f:
        cfg = json.load(f)
    with open(f"{dirname}/model.safetensors", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        buf = np.memmap(f"{dirname}/model.safetensors", dtype=np.uint8, mode="r")
    w = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        w[name.removeprefix("transformer.")] = np.frombuffer(buf[base + a : base + b], dtype=dt).reshape(info["shape"]).astype(np.float32)
    return cfg, w


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    return xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps) * g + b


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def forward(cfg, w, ids):
    B, T = ids.shape
    d, H, L, eps = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg.get("layer_norm_epsilon", 1e-5)
    dh = d // H
    x = w["wte.weight"][ids] + w["wpe.weight"][:T][None]
    mask = np.triu(np.full((T, T), -1e9, dtype=np.float32), 1)
    for l in range(L):
        p = f"h.{l}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps).reshape(B * T, d)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (qkv[:, i * d : (i + 1) * d].reshape(B, T, H, dh).transpose(0, 2, 1, 3) for i in range(3))
        s = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(dh)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B * T, d)
        x = x + (ctx @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]).reshape(B, T, d)
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps).reshape(B * T, d)
        m = gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]) @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = x + m.reshape(B, T, d)
    last = layer_norm(x[:, -1], w["ln_f.weight"], w["ln_f.bias"], eps)
    return last @ w["wte_T"]


def main():
    req = json.load(sys.stdin)
    cfg, w = load(req["dir"])
    w["wte_T"] = np.ascontiguousarray(w["wte.weight"].T)  # as the engine's pre-transposed unembedding
    out = {"numpy": np.__version__, "cases": []}
    try:
        out["blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:
        out["blas"] = "unknown"
    rng = np.random.default_rng(0)
    for c in req["cases"]:
        ids = rng.integers(0, cfg["vocab_size"], size=(c["b"], c["t"]))
        forward(cfg, w, ids)  # warm-up
        times, t0 = [], time.perf_counter()
        while len(times) < req.get("maxReps", 20) and (len(times) < req.get("minReps", 3) or time.perf_counter() - t0 < req.get("minTimeS", 1.0)):
            s = time.perf_counter()
            forward(cfg, w, ids)
            times.append(time.perf_counter() - s)
        out["cases"].append({"key": c["key"], "n": len(times), "bestS": min(times), "medianS": statistics.median(times)})
    if "check" in req:
        logits = forward(cfg, w, np.array([req["check"]["ids"]]))[0]
        out["check"] = {"logits_first8": logits[:8].tolist(), "argmax": int(logits.argmax())}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
