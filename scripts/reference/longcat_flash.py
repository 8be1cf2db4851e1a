#!/usr/bin/env python3
"""An independent PyTorch implementation of the Hugging Face `longcat_flash` model's math, for
checking moecat against it (spec/interop/hfParity.spec.ts). Written from the modeling file's
equations; needs only PyTorch (Debian's python3-torch 1.13 is enough), no transformers.

    python3 scripts/reference/longcat_flash.py logits DIR IDS.json OUT.json
    python3 scripts/reference/longcat_flash.py train  DIR BATCHES.json OUT.json

DIR is a directory written by `moecat export --format hf` (or any float32 longcat_flash
directory with default RoPE). `logits` reads {"ids": [[...], ...]} and writes {"logits":
[B][S][V]}. `train` reads the batches and optimizer settings that moecat dumped and writes the
loss of every step: {"losses": [...]}.

The model (per layer l, x the residual stream):
    h1 = x + MLA0(RMS(x));  u = RMS(h1);  m = MoE(u)
    h2 = h1 + FFN0(u);  h3 = h2 + MLA1(RMS(h2));  y = h3 + FFN1(RMS(h3)) + m
MLA: q = q_b(RMS_1e-6(q_a(h))) * sqrt(d/q_lora); latent = RMS_1e-6(kv_a(h)[:kv_lora]) * sqrt(d/kv_lora);
     k = [kv_b(latent)_nope, rope(kv_a(h)[kv_lora:])], v = kv_b(latent)_v; RoPE on interleaved
     pairs (2i, 2i+1), output de-interleaved; scores scaled by (nope + rope)^-0.5; causal.
MoE: s = softmax(u W_r^T) in float32; idx = topk(s + e_score_correction_bias); g = s[idx] * routed
     scaling factor (no renormalisation); experts >= n_routed_experts are identities.
Training (the objective moecat optimises): masked token cross-entropy / global target tokens
+ the device-level balance loss with zero experts as an extra group; after each AdamW step the
aux-loss-free bias update b_i += mu (K_e/K/N - T_i/(K T)) for FFN experts, 0 for zero experts.
"""
import json
import math
import os
import re
import struct
import sys

import torch

torch.set_num_threads(int(os.environ.get("REF_THREADS", "1")))

LATENT_NORM_EPS = 1e-6  # transformers' longcat_flash builds q_a_layernorm / kv_a_layernorm with eps 1e-6


# ----------------------------------------------------------------------------- loading

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"error: {path}: {name} is {info['dtype']} (this reference reads F32 only)")
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(raw[base + b : base + e]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def load_dir(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        for fn in files:
            tensors.update(read_safetensors(os.path.join(d, fn)))
    else:
        tensors = read_safetensors(os.path.join(d, "model.safetensors"))
    rp = cfg.get("rope_parameters") or {}
    if rp.get("rope_type", "default") != "default":
        raise SystemExit("error: config.json: rope_parameters.rope_type: only default RoPE is implemented here")
    cfg["_theta"] = rp.get("rope_theta", cfg.get("rope_theta", 10000000.0))
    return cfg, tensors


# ----------------------------------------------------------------------------- the model

def rms(x, w, eps):
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


def linear(x, w):  # w is [out, in], as HF stores it
    return x @ w.t()


def rope_tables(cfg, S):
    dim = cfg["head_dim"]  # transformers sizes the rotary table by head_dim
    inv_freq = 1.0 / (cfg["_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    pos = torch.arange(S, dtype=torch.float)
    freqs = pos[:, None] * inv_freq[None, :]
    return freqs.cos(), freqs.sin()  # [S, dim/2]: the per-pair angle


def rope_interleaved(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def mla(cfg, P, p, h, cos, sin, mask):
    B, S, d = h.shape
    H = cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    ql, kl = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    q = linear(rms(linear(h, P[p + "q_a_proj.weight"]), P[p + "q_a_layernorm.weight"], LATENT_NORM_EPS), P[p + "q_b_proj.weight"])
    q = q.view(B, S, H, dn + dr).transpose(1, 2)
    q_pass, q_rot = q[..., :dn], q[..., dn:]
    ckv = linear(h, P[p + "kv_a_proj_with_mqa.weight"])
    k_pass = rms(ckv[..., :kl], P[p + "kv_a_layernorm.weight"], LATENT_NORM_EPS)
    k_rot = ckv[..., kl:].view(B, 1, S, dr)
    sq, skv = math.sqrt(d / ql), math.sqrt(d / kl)
    q_pass, q_rot, k_pass = q_pass * sq, q_rot * sq, k_pass * skv
    q_rot = rope_interleaved(q_rot, cos, sin)
    k_rot = rope_interleaved(k_rot, cos, sin)
    kv = linear(k_pass, P[p + "kv_b_proj.weight"]).view(B, S, H, dn + dv).transpose(1, 2)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    k = torch.cat([k_nope, k_rot.expand(B, H, S, dr)], dim=-1)
    qf = torch.cat([q_pass, q_rot], dim=-1)
    scores = (qf @ k.transpose(2, 3)) * (dn + dr) ** -0.5 + mask
    attn = torch.softmax(scores.float(), dim=-1) @ v
    return linear(attn.transpose(1, 2).reshape(B, S, H * dv), P[p + "o_proj.weight"])


def mlp(P, p, x):
    return linear(torch.nn.functional.silu(linear(x, P[p + "gate_proj.weight"])) * linear(x, P[p + "up_proj.weight"]), P[p + "down_proj.weight"])


def moe(cfg, P, bias, p, u):
    B, S, d = u.shape
    N, Z, K = cfg["n_routed_experts"], cfg.get("zero_expert_num") or 0, cfg["moe_topk"]
    x = u.reshape(-1, d)
    probs = torch.softmax(linear(x.float(), P[p + "router.classifier.weight"].float()), dim=-1)
    with torch.no_grad():
        idx = torch.topk(probs + bias[None, :], K, dim=-1).indices  # [T, K]
    gates = probs.gather(1, idx) * cfg["routed_scaling_factor"]
    out = torch.zeros_like(x)
    for e in range(N + Z):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        y = x[tok] if e >= N else mlp(P, f"{p}experts.{e}.", x[tok])
        out = out.index_add(0, tok, y * gates[tok, slot][:, None])
    return out.view(B, S, d), probs, idx


def forward(cfg, P, biases, ids):
    B, S = ids.shape
    cos, sin = rope_tables(cfg, S)
    mask = torch.full((S, S), float("-inf")).triu(1)
    eps = cfg["rms_norm_eps"]
    x = P["model.embed_tokens.weight"][ids]
    routing = []
    for l in range(cfg["num_layers"]):
        p = f"model.layers.{l}."
        h1 = x + mla(cfg, P, p + "self_attn.0.", rms(x, P[p + "input_layernorm.0.weight"], eps), cos, sin, mask)
        u = rms(h1, P[p + "post_attention_layernorm.0.weight"], eps)
        m, probs, idx = moe(cfg, P, biases[l], p + "mlp.", u)
        routing.append((probs, idx))
        h2 = h1 + mlp(P, p + "mlps.0.", u)
        h3 = h2 + mla(cfg, P, p + "self_attn.1.", rms(h2, P[p + "input_layernorm.1.weight"], eps), cos, sin, mask)
        x = h3 + mlp(P, p + "mlps.1.", rms(h3, P[p + "post_attention_layernorm.1.weight"], eps)) + m
    logits = linear(rms(x, P["model.norm.weight"], eps), P["lm_head.weight"])
    return logits, routing


# ----------------------------------------------------------------------------- training

def split_params(cfg, tensors):
    biases = [tensors.pop(f"model.layers.{l}.mlp.router.e_score_correction_bias") for l in range(cfg["num_layers"])]
    return tensors, biases


def balance_loss(cfg, mo, probs, idx, B, S):
    """Sum over sequences of alpha * sum_j f_j P_j / tau_j (zero experts = group D)."""
    N, Z, K = cfg["n_routed_experts"], cfg.get("zero_expert_num") or 0, cfg["moe_topk"]
    D, alpha = mo["expertGroups"], mo["balanceAlpha"]
    ke = mo["targetFfnPerToken"] if mo.get("targetFfnPerToken") is not None else min(K, N)
    group = torch.tensor([e // (N // D) if e < N else D for e in range(N + Z)])
    tau = [ke / (K * D)] * D + [(K - ke) / K]
    onehot = torch.nn.functional.one_hot(group, D + 1).float()  # [E, D+1]
    P = probs.view(B, S, -1).mean(1) @ onehot  # [B, D+1]
    counts = torch.nn.functional.one_hot(group[idx.view(B, S * K)], D + 1).sum(1).double()  # [B, D+1]
    w = torch.zeros(B, D + 1, dtype=torch.float64)
    for j in range(D + 1):
        if tau[j] > 0:
            w[:, j] = alpha * (counts[:, j] / (K * S)) / tau[j]
    return (P * w.float()).sum()


def no_decay(name):
    """moecat decays matrices only: not the embedding, not the RMSNorm weights."""
    return name == "model.embed_tokens.weight" or re.search(r"norm(\.\d+)?\.weight$", name) is not None


def train(cfg, tensors, dump):
    mo = cfg["moecat"]["model"]
    N, K = cfg["n_routed_experts"], cfg["moe_topk"]
    ke = mo["targetFfnPerToken"] if mo.get("targetFfnPerToken") is not None else min(K, N)
    P, biases = split_params(cfg, tensors)
    for t in P.values():
        t.requires_grad_(True)
    o = dump["optim"]
    b1, b2, eps, wd, clip_norm = o["beta1"], o["beta2"], o["eps"], o["weightDecay"], o["clipNorm"]
    m = {k: torch.zeros_like(v) for k, v in P.items()}
    v2 = {k: torch.zeros_like(v) for k, v in P.items()}
    losses = []
    for t, step in enumerate(dump["steps"], start=1):
        mbs = step["microbatches"]
        S = mbs[0]["seqLen"]
        ids = torch.tensor([r for mb in mbs for r in mb["inputs"]], dtype=torch.long).view(-1, S)
        tgt = torch.tensor([r for mb in mbs for r in mb["targets"]], dtype=torch.long).view(-1)
        mask = torch.tensor([r for mb in mbs for r in mb["lossMask"]], dtype=torch.float32)
        B = ids.shape[0]
        logits, routing = forward(cfg, P, biases, ids)
        ce = torch.nn.functional.cross_entropy(logits.view(B * S, -1), tgt, reduction="none")
        loss = (ce * mask).sum() / mask.sum()
        if mo["balanceAlpha"] > 0:
            loss = loss + sum(balance_loss(cfg, mo, pr, ix, B, S) for pr, ix in routing) / B
        for p in P.values():
            p.grad = None
        loss.backward()
        losses.append(loss.item())
        with torch.no_grad():
            norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in P.values()))
            scale = clip_norm / norm if clip_norm > 0 and norm > clip_norm else 1.0
            lr = step["lr"]
            c1, c2 = 1 - b1 ** t, 1 - b2 ** t
            for name, p in P.items():
                g = p.grad.double() * scale
                mi = b1 * m[name].double() + (1 - b1) * g
                vi = b2 * v2[name].double() + (1 - b2) * g * g
                decay = 0.0 if no_decay(name) else wd
                p64 = p.double()
                p.copy_((p64 - lr * ((mi / c1) / ((vi / c2).sqrt() + eps) + decay * p64)).float())
                m[name], v2[name] = mi.float(), vi.float()
            mu = mo["biasUpdateRate"]
            if mu > 0:
                for l, (_, ix) in enumerate(routing):
                    counts = torch.bincount(ix.view(-1), minlength=len(biases[l])).double()
                    b = biases[l].double()
                    b[:N] = b[:N] + mu * (ke / K / N - counts[:N] / (K * B * S))
                    b[N:] = 0
                    biases[l] = b.float()
    return losses


def main(argv):
    if len(argv) != 5 or argv[1] not in ("logits", "train"):
        raise SystemExit(__doc__)
    mode, d, inp, out = argv[1:]
    cfg, tensors = load_dir(d)
    with open(inp) as f:
        data = json.load(f)
    if mode == "logits":
        P, biases = split_params(cfg, tensors)
        with torch.no_grad():
            logits, _ = forward(cfg, P, biases, torch.tensor(data["ids"], dtype=torch.long))
        result = {"logits": logits.tolist()}
    else:
        result = {"losses": train(cfg, tensors, data)}
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv)
