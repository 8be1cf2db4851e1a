#!/usr/bin/python3
"""
PyTorch reference for scripts/bench/native.ts (issue 14): training tokens/s of a model with the
same matmul shapes as configs/tiny.yaml and configs/small.yaml, on the CPU.

LABEL: an architecture-equivalent approximation, not a port. Same per-layer structure as
moecat's ScMoE layer (Attn0, FFN0, Attn1, FFN1 in sequence plus the MoE shortcut branch), the
same MLA projections and head sizes (q_a -> RMSNorm -> q_b; kv_a -> RMSNorm -> kv_b; a shared
rope key), real top-k routing over N FFN experts + Z identity (zero) experts with s[idx] gates,
SwiGLU everywhere, untied LM head, cross-entropy, AdamW. Left out (cheap element-wise work in
moecat): RoPE rotation (the rope slice is used unrotated), the balance loss, the expert-bias
controller, z-loss, gradient clipping and the stability suite. The numbers compare the compute
path, not the exact model. Shapes below mirror the YAML files; keep them in sync.

Run with Debian's python3 and its OpenBLAS tuned for this CPU:
  OPENBLAS_CORETYPE=SkylakeX OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 scripts/bench/torch_reference.py [--threads N] [--steps N]
Prints JSON lines with bench = "native-torch".
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

CONFIGS = {
    # configs/tiny.yaml: seqLen 64, microBatchSize 8, microBatches 2 (1024 tokens per step)
    "tiny": dict(vocab=512, d=64, layers=2, heads=4, q_lora=32, kv_lora=32, nope=16, rope=8, v=16,
                 ffn=128, experts=8, zero=4, topk=3, expert_hidden=64, scale=2.0,
                 seq=64, batch=8, micro=2),
    # configs/small.yaml: seqLen 128, microBatchSize 8, microBatches 1 (1024 tokens per step)
    "small": dict(vocab=2048, d=192, layers=3, heads=6, q_lora=96, kv_lora=64, nope=32, rope=16, v=32,
                  ffn=512, experts=16, zero=8, topk=4, expert_hidden=128, scale=4.0,
                  seq=128, batch=8, micro=1),
}

FLOPS = [0.0]  # forward matmul FLOPs of the last step (x3 for forward + backward)


def mm(x, w):
    FLOPS[0] += 2.0 * x.shape[0] * x.shape[1] * w.shape[1]
    return x @ w


def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        g = torch.Generator().manual_seed(1234)
        P = lambda *s: torch.nn.Parameter(torch.randn(*s, generator=g) * 0.02)
        O = lambda *s: torch.nn.Parameter(torch.ones(*s))
        d, H = c["d"], c["heads"]
        self.embed = P(c["vocab"], d)
        self.head = P(d, c["vocab"])
        self.final_norm = O(d)
        self.layers = torch.nn.ModuleList()
        for _ in range(c["layers"]):
            L = torch.nn.Module()
            for a in ("attn0", "attn1"):
                A = torch.nn.Module()
                A.norm = O(d)
                A.q_a = P(d, c["q_lora"]); A.q_a_norm = O(c["q_lora"])
                A.q_b = P(c["q_lora"], H * (c["nope"] + c["rope"]))
                A.kv_a = P(d, c["kv_lora"] + c["rope"]); A.kv_a_norm = O(c["kv_lora"])
                A.kv_b = P(c["kv_lora"], H * (c["nope"] + c["v"]))
                A.o = P(H * c["v"], d)
                setattr(L, a, A)
            for f in ("ffn0", "ffn1"):
                Fm = torch.nn.Module()
                Fm.norm = O(d)
                Fm.g = P(d, c["ffn"]); Fm.u = P(d, c["ffn"]); Fm.d = P(c["ffn"], d)
                setattr(L, f, Fm)
            L.router = P(d, c["experts"] + c["zero"])
            L.eg = P(c["experts"], d, c["expert_hidden"])
            L.eu = P(c["experts"], d, c["expert_hidden"])
            L.ed = P(c["experts"], c["expert_hidden"], d)
            self.layers.append(L)

    def attn(self, A, x, B, S):
        c = self.c
        H, dn, dr, dv = c["heads"], c["nope"], c["rope"], c["v"]
        q = mm(rms(mm(x, A.q_a), A.q_a_norm), A.q_b) * math.sqrt(c["d"] / c["q_lora"])
        q = q.view(B, S, H, dn + dr).transpose(1, 2)
        kva = mm(x, A.kv_a)
        lat = rms(kva[:, : c["kv_lora"]], A.kv_a_norm) * math.sqrt(c["d"] / c["kv_lora"])
        k_rope = kva[:, c["kv_lora"]:].view(B, S, 1, dr).expand(B, S, H, dr)
        kvb = mm(lat, A.kv_b).view(B, S, H, dn + dv)
        k = torch.cat([kvb[..., :dn], k_rope], -1).transpose(1, 2)
        v = kvb[..., dn:].transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dn + dr)
        FLOPS[0] += 2.0 * B * H * S * S * (dn + dr)
        mask = torch.full((S, S), float("-inf")).triu(1)
        o = torch.softmax(scores + mask, -1) @ v
        FLOPS[0] += 2.0 * B * H * S * S * dv
        return mm(o.transpose(1, 2).reshape(B * S, H * dv), A.o)

    def ffn(self, Fm, u):
        return mm(F.silu(mm(u, Fm.g)) * mm(u, Fm.u), Fm.d)

    def moe(self, L, u):
        c = self.c
        N, K = c["experts"], c["topk"]
        probs = torch.softmax(mm(u, L.router), -1)
        gates, idx = probs.topk(K, -1)
        gates = gates * c["scale"]
        out = torch.zeros_like(u)
        zero_mask = idx >= N
        # zero experts: identity, no matmul
        out = out + (gates * zero_mask).sum(-1, keepdim=True) * u
        for e in range(N):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            xe = u[tok]
            ye = mm(F.silu(mm(xe, L.eg[e])) * mm(xe, L.eu[e]), L.ed[e])
            out = out.index_add(0, tok, ye * gates[tok, slot].unsqueeze(-1))
        return out

    def forward(self, tokens):
        B, S = tokens.shape
        x = self.embed[tokens.reshape(-1)]
        for L in self.layers:
            h1 = x + self.attn(L.attn0, rms(x, L.attn0.norm), B, S)
            u = rms(h1, L.ffn0.norm)
            m = self.moe(L, u)
            h2 = h1 + self.ffn(L.ffn0, u)
            h3 = h2 + self.attn(L.attn1, rms(h2, L.attn1.norm), B, S)
            x = h3 + self.ffn(L.ffn1, rms(h3, L.ffn1.norm)) + m
        return mm(rms(x, self.final_norm), self.head)


def blas_info():
    """BLAS_INFO from torch's build settings (Debian: 'generic', i.e. libblas.so.3 = OpenBLAS via alternatives)."""
    show = torch.__config__.show()
    i = show.find("BLAS_INFO=")
    return show[i + 10:].split(",")[0] if i >= 0 else "unknown"


def run(name, steps, threads):
    c = CONFIGS[name]
    torch.manual_seed(0)
    model = Model(c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    B, S = c["batch"], c["seq"]
    tokens_per_step = B * S * c["micro"]
    g = torch.Generator().manual_seed(7)

    def step():
        FLOPS[0] = 0.0
        opt.zero_grad(set_to_none=True)
        for _ in range(c["micro"]):
            seq = torch.randint(0, c["vocab"], (B, S + 1), generator=g)
            logits = model(seq[:, :-1])
            loss = F.cross_entropy(logits, seq[:, 1:].reshape(-1)) / c["micro"]
            loss.backward()
        opt.step()
        return float(loss)

    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    flops = 3 * FLOPS[0]  # forward + backward (2x forward) matmul FLOPs
    print(json.dumps({
        "bench": "native-torch", "config": name, "variant": "torch (same matmul shapes, see header)",
        "torch": torch.__version__, "threads": threads, "blas": blas_info(),
        "tokens_per_step": tokens_per_step, "steps": steps, "step_ms_median": round(ms, 1),
        "tokens_per_s": round(tokens_per_step / ms * 1000, 1),
        "matmul_gflop_per_step": round(flops / 1e9, 3), "achieved_gflops": round(flops / 1e6 / ms, 2),
    }), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("configs", nargs="*", default=["tiny", "small"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name in a.configs:
        run(name, a.steps, a.threads)


if __name__ == "__main__":
    sys.exit(main())
