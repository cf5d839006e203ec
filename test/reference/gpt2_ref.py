#!/usr/bin/env python3
"""Independent eval-mode GPT-2 reference (numpy, float64) for checking the Fact Lens engine.

Semantics follow Hugging Face `GPT2LMHeadModel` in eval mode (no dropout):

    h_0 = wte[ids] + wpe[pos]
    for each block l:  a = attn(ln_1(h));  h = h + a;  m = mlp(ln_2(h));  h = h + m
    logits = ln_f(h) @ wte.T          (tied head; an explicit lm_head.weight is used if stored)

Hooks used by causal tracing (../shared/docs/rome-spec.md §1):
  * `embed_add`: an array [B, T, d] added to the TOKEN embeddings, before the position embeddings.
  * `restore`:   {kind: bool array [L, B, T]} with kind in {"hidden", "mlp", "attn"}.  Where
                 restore[kind][l, r, t] is True, the value at site (kind, layer l) for row r,
                 position t is overwritten with ROW 0's value at the same site and position
                 (row 0 = the clean run in the batch).  Sites: "hidden" = block-l output
                 (residual after block l); "mlp" = MLP c_proj output incl. bias; "attn" =
                 attention c_proj output incl. bias (both before the residual add).

  The trace mode packs many restoration runs into one batch: row 0 is the clean run and each run
  owns its own group of `n` corrupted rows (the same noise in every group), which is numerically
  the same as running each restoration as its own batch of n+1 rows.

CLI:  python3 gpt2_ref.py forward|trace  < request.json  > response.json
  forward: {model_dir, cases: [{ids}]} ->
           {cases: [{top10_ids, top10_logprobs, last_logits_first8,
                     hidden_last_token_norms, hidden_last_token_first8}]}
           hidden entries: 0 = token+position embedding, i = output of block i-1 (i = 1..L-1),
           L = ln_f(output of the last block)  (as transformers' `hidden_states`).
  trace:   {model_dir, ids, subject_range: [a, b], noise: [n][b-a][d], noise_scale, window,
            answer_id?: int, kinds?: ["hidden","mlp","attn"], naive?: bool} ->
           {answer_id, clean_prob, corrupted_prob, scores: {kind: [T][L]}}
           rome-spec.md §1.2-1.7/§1.12: the answer is the clean greedy token unless answer_id is
           given; noise*noise_scale goes on the subject tokens' token embeddings of rows 1..n;
           every probability is the mean over rows 1..n of softmax(last logits)[answer].
           naive=true runs one full batch per restoration (the spec literally; slow) instead of
           the exact fast path (resume from a recorded batch); tests check they agree.
"""
import json
import math
import os
import struct
import sys

# Small matrices: multi-threaded BLAS only adds overhead (and contends on busy machines).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

DTYPE = np.float64
KINDS = ("hidden", "mlp", "attn")


# ----------------------------------------------------------------------------------------------
# Checkpoint reading
# ----------------------------------------------------------------------------------------------

def read_safetensors(path):
    """Returns {name: float64 ndarray}. Supports F32, F16, BF16 and F64 tensors."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = buf[base + start:base + end]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2")
        elif dt == "F64":
            arr = np.frombuffer(raw, dtype="<f8")
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue  # integer/bool buffers (e.g. old attn.bias masks) are not needed
        out[name] = arr.astype(DTYPE).reshape(info["shape"])
    return out


class GPT2:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        raw = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        w = {}
        for k, v in raw.items():
            w[k[len("transformer."):] if k.startswith("transformer.") else k] = v
        self.cfg = cfg
        self.eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        self.n_layer = int(cfg["n_layer"])
        self.n_head = int(cfg["n_head"])
        self.wte = w["wte.weight"]
        self.wpe = w["wpe.weight"]
        self.d = self.wte.shape[1]
        self.head = w.get("lm_head.weight", self.wte)  # tied by default
        self.scale_attn = bool(cfg.get("scale_attn_weights", True))
        self.scale_by_layer = bool(cfg.get("scale_attn_by_inverse_layer_idx", False))
        self.ln_f = (w["ln_f.weight"], w["ln_f.bias"])
        self.blocks_w = []
        for l in range(self.n_layer):
            p = "h.%d." % l
            self.blocks_w.append({
                "ln_1": (w[p + "ln_1.weight"], w[p + "ln_1.bias"]),
                "c_attn": (w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]),  # Conv1D: [d, 3d]
                "attn_proj": (w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"]),  # [d, d]
                "ln_2": (w[p + "ln_2.weight"], w[p + "ln_2.bias"]),
                "c_fc": (w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]),  # [d, f]
                "mlp_proj": (w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"]),  # [f, d]
            })

    # ------------------------------------------------------------------------------------------
    # Building blocks
    # ------------------------------------------------------------------------------------------

    def layer_norm(self, x, wb):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance, as torch
        return (x - mu) / np.sqrt(var + self.eps) * wb[0] + wb[1]

    @staticmethod
    def gelu_new(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))))

    @staticmethod
    def linear(x, wb):
        """Conv1D: y = x @ W + b with W stored [in, out]; x [..., in] (matmul done in 2-D)."""
        shape = x.shape
        y = x.reshape(-1, shape[-1]) @ wb[0] + wb[1]
        return y.reshape(shape[:-1] + (y.shape[-1],))

    def attention(self, x, blk, layer, past=None):
        """Causal self-attention on x [B, Tn, d] holding positions t0..t0+Tn-1.

        past: (k, v) [B, H, t0, hd] of positions < t0 (None when t0 = 0).
        Returns (c_proj output incl. bias [B, Tn, d], (k, v) of all positions)."""
        B, Tn, d = x.shape
        H = self.n_head
        hd = d // H
        q, k, v = np.split(self.linear(x, blk["c_attn"]), 3, axis=-1)
        q, k, v = (z.reshape(B, Tn, H, hd).transpose(0, 2, 1, 3) for z in (q, k, v))  # [B,H,Tn,hd]
        if past is not None:
            k = np.concatenate([past[0], k], axis=2)
            v = np.concatenate([past[1], v], axis=2)
        t0 = k.shape[2] - Tn
        s = q @ k.transpose(0, 1, 3, 2)  # [B, H, Tn, Tk]
        if self.scale_attn:
            s = s / math.sqrt(hd)
        if self.scale_by_layer:
            s = s / float(layer + 1)
        causal = np.arange(k.shape[2])[None, :] <= (t0 + np.arange(Tn))[:, None]
        s = np.where(causal, s, -np.inf)
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p = p / p.sum(-1, keepdims=True)
        o = (p @ v).transpose(0, 2, 1, 3).reshape(B, Tn, d)
        return self.linear(o, blk["attn_proj"]), (k, v)

    def mlp(self, x, blk):
        return self.linear(self.gelu_new(self.linear(x, blk["c_fc"])), blk["mlp_proj"])

    # ------------------------------------------------------------------------------------------
    # Forward pass with hooks
    # ------------------------------------------------------------------------------------------

    def blocks(self, h, restore=None, l0=0, t0=0, past=None, record=None, want_hidden=False):
        """Runs blocks l0..L-1 on the residual stream h [B, T-t0, d] (positions t0..T-1).

        restore: {kind: bool [L, B, T]} (absolute positions): True = take row 0's value there.
        past:    {layer: (k, v)} of positions < t0 (needed when t0 > 0).
        record:  if a list, receives per layer (block input, k, v) -- used to resume later.
        Returns (ln_f output [B, T-t0, d], hidden list (see run) or None)."""
        restore = restore or {}

        def patch(x, kind, layer):
            mask = restore.get(kind)
            if mask is None or not mask[layer, :, t0:].any():
                return x
            return np.where(mask[layer, :, t0:, None], x[0:1], x)

        hidden = [h] if want_hidden else None
        for l in range(l0, self.n_layer):
            blk = self.blocks_w[l]
            a, kv = self.attention(self.layer_norm(h, blk["ln_1"]), blk, l, past and past.get(l))
            if record is not None:
                record.append((h, kv[0], kv[1]))
            h = h + patch(a, "attn", l)
            m = patch(self.mlp(self.layer_norm(h, blk["ln_2"]), blk), "mlp", l)
            h = patch(h + m, "hidden", l)
            if want_hidden and l < self.n_layer - 1:
                hidden.append(h)
        hf = self.layer_norm(h, self.ln_f)
        if want_hidden:
            hidden.append(hf)
        return hf, hidden

    def run(self, ids, embed_add=None, restore=None, want_hidden=False, record=None):
        """Full forward.  ids: int array [B, T].  Returns (last-position logits [B, V], hidden).

        embed_add: [B, T, d] added to the token embeddings (before the position embeddings).
        hidden (if want_hidden) follows transformers' `hidden_states`: entry 0 = token + position
        embedding, entry i = output of block i-1 (i = 1..L-1), entry L = ln_f(last block output)."""
        ids = np.asarray(ids)
        T = ids.shape[1]
        tok = self.wte[ids]  # [B, T, d]
        if embed_add is not None:
            tok = tok + embed_add
        h = tok + self.wpe[np.arange(T)][None]
        hf, hidden = self.blocks(h, restore, record=record, want_hidden=want_hidden)
        return self.logits(hf[:, -1]), hidden

    def resume(self, record, rows, t0, l0, restore):
        """Re-runs a recorded batch from block l0 and position t0 on: exactly what a full run
        would compute when nothing at layers < l0 or positions < t0 differs from the recorded
        run (causal attention: positions < t0 never see later ones).  rows: indices of the
        recorded rows forming the new batch (row 0 must be the clean row).  Returns logits."""
        h = record[l0][0][rows, t0:]
        past = None
        if t0 > 0:
            past = {l: (record[l][1][rows, :, :t0], record[l][2][rows, :, :t0])
                    for l in range(l0, self.n_layer)}
        hf, _ = self.blocks(h, restore, l0=l0, t0=t0, past=past)
        return self.logits(hf[:, -1])

    def logits(self, x):
        return x @ self.head.T  # tied head: ln_f(h) . wte^T, no bias


def log_softmax(x):
    m = x.max(-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# CLI modes
# ----------------------------------------------------------------------------------------------

def do_forward(req):
    model = GPT2(req["model_dir"])
    out = []
    for case in req["cases"]:
        ids = np.asarray(case["ids"], dtype=np.int64)[None]
        logits, hidden = model.run(ids, want_hidden=True)
        lp = log_softmax(logits[0])
        top = np.argsort(-lp, kind="stable")[:10]
        last = [hs[0, -1] for hs in hidden]
        out.append({
            "top10_ids": [int(i) for i in top],
            "top10_logprobs": [float(lp[i]) for i in top],
            "last_logits_first8": [float(v) for v in logits[0, :8]],
            "hidden_last_token_norms": [float(np.linalg.norm(v)) for v in last],
            "hidden_last_token_first8": [[float(x) for x in v[:8]] for v in last],
        })
    return {"cases": out}


def window_layers(l, window, L):
    """Layers restored for a windowed (mlp/attn) score centred at l: [max(0,l-w//2), min(L,l-w//2+w))."""
    lo = l - window // 2
    return range(max(0, lo), min(L, lo + window))


def do_trace(req):
    """Causal trace per rome-spec.md §1.2-1.7 / §1.12 (window rule: see window_layers)."""
    model = GPT2(req["model_dir"])
    L, d = model.n_layer, model.d
    ids = np.asarray(req["ids"], dtype=np.int64)
    T = ids.shape[0]
    a, b = (int(x) for x in req["subject_range"])
    noise = np.asarray(req["noise"], dtype=DTYPE)  # [n, b-a, d], standard normal
    n = noise.shape[0]
    if noise.shape != (n, b - a, d):
        raise ValueError("noise shape %s, expected (n, %d, %d)" % (noise.shape, b - a, d))
    scale = float(req["noise_scale"])
    window = int(req.get("window", 10))
    kinds = req.get("kinds") or list(KINDS)
    naive = bool(req.get("naive", False))  # full forward per restoration (slow; for checking)

    # The batch of the spec: n+1 copies, row 0 clean, rows 1..n get noise*scale added to the
    # token embeddings of the subject tokens.  Run once with nothing restored, recording every
    # block's input and attention keys/values so restoration runs can resume from it.
    batch = np.repeat(ids[None], n + 1, axis=0)
    embed_add = np.zeros((n + 1, T, d), dtype=DTYPE)
    embed_add[1:, a:b] = noise * scale
    record = []
    base_logits, _ = model.run(batch, embed_add=embed_add, record=record)
    clean_p = softmax(base_logits[0])
    answer = int(req["answer_id"]) if req.get("answer_id") is not None else int(np.argmax(clean_p))

    def p_corrupted(logits_rows):
        """mean over the n corrupted rows of softmax(last-position logits)[answer]."""
        return float(softmax(logits_rows)[:, answer].mean())

    # All restoration runs: {kind: [(t, l), ...]} per (kind, t, l) cell.
    cells = {}
    for kind in kinds:
        for t in range(T):
            for l in range(L):
                layers = [l] if kind == "hidden" else list(window_layers(l, window, L))
                cells[(kind, t, l)] = (kind, tuple((t, j) for j in layers))

    results = {}  # restore set -> p(answer)
    todo = sorted(set(cells.values()))
    if naive:
        for kind, sites in todo:
            mask = np.zeros((L, n + 1, T), dtype=bool)
            for t, l in sites:
                mask[l, 1:, t] = True
            logits, _ = model.run(batch, embed_add=embed_add, restore={kind: mask})
            results[(kind, sites)] = p_corrupted(logits[1:])
    else:
        # Exact shortcuts: (1) a site at the last layer and an earlier token cannot reach the
        # last position, so it is dropped (a run left with no site is the corrupted baseline);
        # (2) identical restore sets are run once; (3) runs are grouped by their first affected
        # (position, layer) and resume the recorded batch from there, each run with its own n
        # corrupted rows, all sharing the clean row 0.
        base = p_corrupted(base_logits[1:])
        pruned = {}
        for kind, sites in todo:
            kept = tuple((t, l) for t, l in sites if not (l == L - 1 and t < T - 1))
            pruned.setdefault((kind, kept), []).append((kind, sites))
        groups = {}
        for key in pruned:
            sites = key[1]
            if not sites:
                for orig in pruned[key]:
                    results[orig] = base
                continue
            start = (min(t for t, _ in sites), min(l for _, l in sites))
            groups.setdefault(start, []).append(key)
        per_batch = max(1, int(req.get("runs_per_batch", 32)))
        for (t0, l0), keys in sorted(groups.items()):
            for i in range(0, len(keys), per_batch):
                chunk = keys[i:i + per_batch]
                K = len(chunk)
                rows = np.concatenate([[0]] + [np.arange(1, n + 1)] * K)
                masks = {kind: np.zeros((L, 1 + K * n, T), dtype=bool) for kind in KINDS}
                for k, (kind, sites) in enumerate(chunk):
                    for t, l in sites:
                        masks[kind][l, 1 + k * n:1 + (k + 1) * n, t] = True
                logits = model.resume(record, rows, t0, l0, masks)
                for k, key in enumerate(chunk):
                    p = p_corrupted(logits[1 + k * n:1 + (k + 1) * n])
                    for orig in pruned[key]:
                        results[orig] = p

    return {
        "answer_id": answer,
        "clean_prob": float(clean_p[answer]),
        "corrupted_prob": p_corrupted(base_logits[1:]),
        "scores": {kind: [[results[cells[(kind, t, l)]] for l in range(L)] for t in range(T)]
                   for kind in kinds},
    }


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("forward", "trace"):
        sys.stderr.write("usage: gpt2_ref.py forward|trace < request.json\n")
        return 2
    req = json.load(sys.stdin)
    res = do_forward(req) if sys.argv[1] == "forward" else do_trace(req)
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
