#!/usr/bin/env python3
"""Loads a directory written by `moecat export --format hf` with transformers'
LongcatFlashForCausalLM (float32, eager attention) and compares its logits with moecat's
(scripts/reference/moecatLogits.ts) and with the PyTorch reference (longcat_flash.py):

    python3 scripts/reference/compare_transformers.py HF_DIR MOECAT_LOGITS.json [--device cuda]

Prints one line per comparison (max |diff| / max |logit|) and exits 1 when transformers and
moecat differ by more than 1e-5 relative. Needs transformers with longcat_flash (5.x) and torch.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import longcat_flash as ref  # noqa: E402


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    hf_dir, moecat_file = argv[1], argv[2]
    device = argv[argv.index("--device") + 1] if "--device" in argv else ("cuda" if torch.cuda.is_available() else "cpu")
    import transformers
    from transformers import LongcatFlashForCausalLM

    with open(moecat_file) as f:
        m = json.load(f)
    ids = torch.tensor(m["ids"], dtype=torch.long)
    ours = torch.tensor(m["logits"], dtype=torch.float32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = LongcatFlashForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="eager").to(device).eval()
    with torch.no_grad():
        theirs = model(input_ids=ids.to(device)).logits.float().cpu()
    cfg, tensors = ref.load_dir(hf_dir)
    P, biases = ref.split_params(cfg, tensors)
    with torch.no_grad():
        mine, _ = ref.forward(cfg, P, biases, ids)
    r_tm = rel(ours, theirs)
    print(f"transformers {transformers.__version__} on {device}: logits {tuple(theirs.shape)}")
    print(f"moecat vs transformers: relative {r_tm:.3e}")
    print(f"reference vs transformers: relative {rel(mine, theirs):.3e}")
    print(f"moecat vs reference: relative {rel(ours, mine):.3e}")
    sys.exit(0 if r_tm <= 1e-5 else 1)


if __name__ == "__main__":
    main(sys.argv)
