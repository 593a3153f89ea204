#!/usr/bin/env python3
"""Independent PyTorch reference of palm's model contract (docs/model.md).

Written from the contract, not from palm's C++: standard multi-head-shaped attention with
the single K/V head broadcast over query heads, torch's own LayerNorm, autograd for every
gradient. Used by the tests as the numerical oracle and by `palm bench train` as the
peer to beat.

  palm_ref.py grads --model M.safetensors --batch IN.json --out OUT.safetensors [--dtype float64]
      IN.json: {"tokens": [[...]], "targets": [[...]], "z_loss": 1e-4}
      OUT: logits [B*T, V], loss [1], z_loss [1], and grad.<name> for every parameter.
  palm_ref.py score --model M.safetensors --tokens "5 17 3"   (prints {"logprobs": [...], "mean_nll": x})
  palm_ref.py bench --config JSON --batch-size B --seq-len T --threads N [--steps S] [--bf16]
      prints one JSON line: {"tokens_per_s": ..., "seconds_per_step": ...}
"""
import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch

# ---------------------------------------------------------------- safetensors (by hand)

_DTYPES = {"F32": np.float32, "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(data[base + b:base + e], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[base + b:base + e], dtype=_DTYPES[info["dtype"]])
        tensors[name] = arr.reshape(info["shape"]).copy()
    return meta, tensors


def write_safetensors(path, tensors, meta=None):
    header = {}
    if meta:
        header["__metadata__"] = meta
    blobs, off = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + arr.nbytes]}
        blobs.append(arr.tobytes())
        off += arr.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- the model contract

def param_shapes(cfg):
    V, D, H, K, F = cfg["vocab_size"], cfg["d_model"], cfg["n_heads"], cfg["head_dim"], cfg["d_ff"]
    shapes = {"embed": (V, D)}
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        shapes[p + "norm"] = (D,)
        shapes[p + "attn.q"] = (H * K, D)
        shapes[p + "attn.k"] = (K, D)
        shapes[p + "attn.v"] = (K, D)
        shapes[p + "attn.o"] = (D, H * K)
        shapes[p + "mlp.gate"] = (F, D)
        shapes[p + "mlp.up"] = (F, D)
        shapes[p + "mlp.down"] = (D, F)
    shapes["final_norm"] = (D,)
    return shapes


def rope(x, base):
    """x [B, heads, T, K]; rotate-half pairs (i, i + K/2), angle t * base^(-2i/K)."""
    T, K = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, K/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(x.dtype)
    sin = torch.cat([ang.sin(), ang.sin()], -1).to(x.dtype)
    x1, x2 = x[..., : K // 2], x[..., K // 2:]
    rotated = torch.cat([-x2, x1], -1)
    return x * cos + rotated * sin


def logits_of(p, cfg, tokens):
    """tokens [B, T] -> logits [B, T, V]"""
    D, H, K = cfg["d_model"], cfg["n_heads"], cfg["head_dim"]
    eps, base = cfg.get("norm_eps", 1e-6), cfg.get("rope_base", 10000.0)
    B, T = tokens.shape
    x = p["embed"][tokens]
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    for i in range(cfg["n_layers"]):
        w = lambda n: p[f"layers.{i}.{n}"]
        h = torch.nn.functional.layer_norm(x, (D,), weight=w("norm"), bias=None, eps=eps)
        q = (h @ w("attn.q").T).view(B, T, H, K).transpose(1, 2)      # [B, H, T, K]
        k = (h @ w("attn.k").T).view(B, 1, T, K)                       # one shared head
        v = (h @ w("attn.v").T).view(B, 1, T, K)
        q, k = rope(q, base), rope(k, base)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(K)                   # [B, H, T, T]
        s = s.masked_fill(mask, float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, H * K)
        attn = o @ w("attn.o").T
        gate, up = h @ w("mlp.gate").T, h @ w("mlp.up").T
        mlp = (torch.nn.functional.silu(gate) * up) @ w("mlp.down").T
        x = x + attn + mlp
    hf = torch.nn.functional.layer_norm(x, (D,), weight=p["final_norm"], bias=None, eps=eps)
    return hf @ p["embed"].T / math.sqrt(D)


def losses(logits, targets, z_coef):
    V = logits.shape[-1]
    lg = logits.reshape(-1, V)
    ce = torch.nn.functional.cross_entropy(lg, targets.reshape(-1))
    log_z = torch.logsumexp(lg, -1)
    return ce, z_coef * (log_z ** 2).mean()


# ---------------------------------------------------------------- commands

def cmd_grads(a):
    meta, tensors = read_safetensors(a.model)
    cfg = json.loads(meta["palm.config"])
    dtype = getattr(torch, a.dtype)
    p = {n: torch.tensor(t, dtype=dtype, requires_grad=True) for n, t in tensors.items()}
    batch = json.load(open(a.batch))
    tokens = torch.tensor(batch["tokens"], dtype=torch.long)
    targets = torch.tensor(batch["targets"], dtype=torch.long)
    logits = logits_of(p, cfg, tokens)
    ce, zl = losses(logits, targets, batch.get("z_loss", 1e-4))
    (ce + zl).backward()
    out = {"logits": logits.detach().reshape(-1, cfg["vocab_size"]).numpy(),
           "loss": np.array([ce.item()]), "z_loss": np.array([zl.item()])}
    for n in param_shapes(cfg):
        out["grad." + n] = p[n].grad.numpy()
    write_safetensors(a.out, out)


def cmd_optimizer(a):
    """Optimizer steps in float64 from palm's optimizer contract (docs/training.md).
    IN: x0.<name> (parameters), g.<k>.<name> (raw gradients of step k = 1..steps).
    OUT: x.<k>.<name> after each step."""
    _, t = read_safetensors(a.inp)
    names = [n[3:] for n in t if n.startswith("x0.")]
    x = {n: torch.tensor(t["x0." + n], dtype=torch.float64) for n in names}
    out = {}
    if a.kind == "adamw":
        params = {n: torch.nn.Parameter(x[n].clone()) for n in names}
        decay = [params[n] for n in names if params[n].dim() == 2]
        no_decay = [params[n] for n in names if params[n].dim() != 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    m = {n: torch.zeros_like(x[n]) for n in names}
    v = {n: torch.zeros_like(x[n]) for n in names}
    for k in range(1, a.steps + 1):
        g = {n: torch.tensor(t[f"g.{k}.{n}"], dtype=torch.float64) for n in names}
        norm = torch.sqrt(sum((gi ** 2).sum() for gi in g.values()))
        if norm > 1.0:
            g = {n: gi / norm for n, gi in g.items()}
        if a.kind == "adamw":
            for n in names:
                params[n].grad = g[n]
            opt.step()
            for n in names:
                out[f"x.{k}.{n}"] = params[n].detach().clone().numpy()  # a copy: opt.step works in place
            continue
        lr = min(1e-2, 1 / math.sqrt(k))
        b2 = 1 - k ** (-0.8)
        for n in names:
            v[n] = b2 * v[n] + (1 - b2) * (g[n] ** 2 + 1e-30)
            u = g[n] / torch.sqrt(v[n])
            u = u / max(1.0, (u.pow(2).mean().sqrt() / 1.0).item())
            alpha = lr * max(1e-3, x[n].pow(2).mean().sqrt().item())
            m[n] = 0.9 * m[n] + 0.1 * alpha * u
            x[n] = x[n] - m[n] - lr ** 2 * x[n]
            out[f"x.{k}.{n}"] = x[n].numpy()
    write_safetensors(a.out, out)


def cmd_score(a):
    """log-probability of tokens[1:] given their prefixes, in float64"""
    meta, tensors = read_safetensors(a.model)
    cfg = json.loads(meta["palm.config"])
    p = {n: torch.tensor(t, dtype=torch.float64) for n, t in tensors.items()}
    seq = [int(t) for t in a.tokens.split()]
    logits = logits_of(p, cfg, torch.tensor([seq[:-1]]))[0]
    lp = torch.log_softmax(logits, -1)[torch.arange(len(seq) - 1), torch.tensor(seq[1:])]
    print(json.dumps({"logprobs": lp.tolist(), "mean_nll": -lp.mean().item()}))


class FusedPalm(torch.nn.Module):
    """The same contract laid out for speed, as a PyTorch user would write it for the bench:
    fused q|k|v|gate|up projection, bias-free Linear layers."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        V, D, H, K, F = cfg["vocab_size"], cfg["d_model"], cfg["n_heads"], cfg["head_dim"], cfg["d_ff"]
        self.embed = torch.nn.Parameter(torch.randn(V, D))
        self.norms = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(D)) for _ in range(cfg["n_layers"])])
        self.w_in = torch.nn.ModuleList([torch.nn.Linear(D, H * K + 2 * K + 2 * F, bias=False) for _ in range(cfg["n_layers"])])
        self.w_o = torch.nn.ModuleList([torch.nn.Linear(H * K, D, bias=False) for _ in range(cfg["n_layers"])])
        self.w_down = torch.nn.ModuleList([torch.nn.Linear(F, D, bias=False) for _ in range(cfg["n_layers"])])
        self.final_norm = torch.nn.Parameter(torch.ones(D))

    def forward(self, tokens, targets):
        c = self.cfg
        D, H, K, F = c["d_model"], c["n_heads"], c["head_dim"], c["d_ff"]
        B, T = tokens.shape
        x = self.embed[tokens]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        for i in range(c["n_layers"]):
            h = torch.nn.functional.layer_norm(x, (D,), weight=self.norms[i], bias=None, eps=c.get("norm_eps", 1e-6))
            u = self.w_in[i](h)
            q, k, v, gate, up = u.split([H * K, K, K, F, F], -1)
            q = rope(q.view(B, T, H, K).transpose(1, 2), c.get("rope_base", 10000.0))
            k = rope(k.view(B, 1, T, K), c.get("rope_base", 10000.0))
            s = (q @ k.transpose(-1, -2)) / math.sqrt(K)
            s = s.masked_fill(mask, float("-inf"))
            o = (torch.softmax(s, -1) @ v.view(B, 1, T, K)).transpose(1, 2).reshape(B, T, H * K)
            x = x + self.w_o[i](o) + self.w_down[i](torch.nn.functional.silu(gate) * up)
        hf = torch.nn.functional.layer_norm(x, (D,), weight=self.final_norm, bias=None, eps=c.get("norm_eps", 1e-6))
        logits = hf @ self.embed.T / math.sqrt(D)
        ce, zl = losses(logits, targets, 1e-4)
        return ce + zl


def check_gemm_correct():
    """The bench may run OpenBLAS without the machine's OPENBLAS_CORETYPE override (faster
    kernels); refuse to report a speed for a BLAS that computes wrong products."""
    a, b = torch.randn(301, 517), torch.randn(517, 263)
    want = a.double() @ b.double()
    err = ((a @ b).double() - want).abs().max() / want.abs().max()
    if not err < 1e-5:
        sys.exit(f"palm_ref: this BLAS computes wrong float32 products (relative error {err:.2e})")


def cmd_decode(a):
    """KV-cache decoding at batch 1 in PyTorch, as a user would write it: prefill the
    prompt, then one token at a time with cached K/V (one shared head)."""
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = json.loads(a.config)
    model = FusedPalm(cfg).eval()
    c = cfg
    D, H, K, F = c["d_model"], c["n_heads"], c["head_dim"], c["d_ff"]
    base = c.get("rope_base", 10000.0)
    eps = c.get("norm_eps", 1e-6)
    L = c["n_layers"]
    inv = base ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)

    # as a PyTorch expert would: the rotation tables computed once, the cache allocated
    # once, no autograd bookkeeping (inference_mode); tcmalloc and passive OpenMP waits
    # come from the caller's environment (bench/pytorch_reference.h)
    n = a.prompt + a.tokens
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    cos_t = torch.cat([ang.cos(), ang.cos()], -1).float()
    sin_t = torch.cat([ang.sin(), ang.sin()], -1).float()

    def rope_at(x, pos):  # x [..., K] at position pos
        return x * cos_t[pos] + torch.cat([-x[..., K // 2:], x[..., :K // 2]], -1) * sin_t[pos]

    kc = torch.zeros(L, n, K)
    vc = torch.zeros(L, n, K)

    # one token at a time the projections are matrix-vector products: torch.mv(W, h)
    # reads W once at the machine's bandwidth (measured 3x faster here than nn.Linear's
    # h @ W^T for a single row, which goes through a transposed GEMM)
    w_in = [m.weight for m in model.w_in]
    w_o = [m.weight for m in model.w_o]
    w_down = [m.weight for m in model.w_down]

    def step(tok, pos):
        x = model.embed[tok]
        for i in range(L):
            h = torch.nn.functional.layer_norm(x, (D,), weight=model.norms[i], bias=None, eps=eps)
            q, k, v, gate, up = torch.mv(w_in[i], h).split([H * K, K, K, F, F], -1)
            kc[i, pos] = rope_at(k, pos)
            vc[i, pos] = v
            q = rope_at(q.view(H, K), pos)
            p = torch.softmax(q @ kc[i, :pos + 1].T / math.sqrt(K), -1)
            o = (p @ vc[i, :pos + 1]).reshape(H * K)
            x = x + torch.mv(w_o[i], o) + torch.mv(w_down[i], torch.nn.functional.silu(gate) * up)
        hf = torch.nn.functional.layer_norm(x, (D,), weight=model.final_norm, bias=None, eps=eps)
        return torch.mv(model.embed, hf) / math.sqrt(D)

    with torch.inference_mode():
        for pos in range(a.prompt):
            step(pos % cfg["vocab_size"], pos)
        t0 = time.perf_counter()
        tok = 5
        for pos in range(a.prompt, a.prompt + a.tokens):
            tok = int(step(tok, pos).argmax())
        el = time.perf_counter() - t0
    print(json.dumps({"decode_tokens_per_s": a.tokens / el, "torch": torch.__version__}))


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    check_gemm_correct()
    cfg = json.loads(a.config)
    model = FusedPalm(cfg)
    B, T = a.batch_size, a.seq_len
    tokens = torch.randint(0, cfg["vocab_size"], (B, T))
    targets = torch.randint(0, cfg["vocab_size"], (B, T))

    def step():
        model.zero_grad(set_to_none=True)
        if a.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(tokens, targets)
        else:
            loss = model(tokens, targets)
        loss.backward()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    el = time.perf_counter() - t0
    print(json.dumps({"tokens_per_s": B * T * a.steps / el, "seconds_per_step": el / a.steps,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "bf16": a.bf16}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grads")
    g.add_argument("--model", required=True)
    g.add_argument("--batch", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    o = sub.add_parser("optimizer")
    o.add_argument("--in", dest="inp", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--kind", default="adafactor", choices=["adafactor", "adamw"])
    o.add_argument("--steps", type=int, required=True)
    o.add_argument("--lr", type=float, default=1e-3)
    s = sub.add_parser("score")
    s.add_argument("--model", required=True)
    s.add_argument("--tokens", required=True)
    d = sub.add_parser("decode")
    d.add_argument("--config", required=True)
    d.add_argument("--prompt", type=int, default=128)
    d.add_argument("--tokens", type=int, default=32)
    d.add_argument("--threads", type=int, required=True)
    b = sub.add_parser("bench")
    b.add_argument("--config", required=True)
    b.add_argument("--batch-size", type=int, required=True)
    b.add_argument("--seq-len", type=int, required=True)
    b.add_argument("--threads", type=int, required=True)
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    {"grads": cmd_grads, "score": cmd_score, "optimizer": cmd_optimizer, "decode": cmd_decode, "bench": cmd_bench}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
