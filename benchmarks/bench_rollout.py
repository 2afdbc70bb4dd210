"""Rollout throughput: generated tokens per second against batch size, and the decoding bound.

    python benchmarks/bench_rollout.py                      # tiny model, CPU, transformers backend
    python benchmarks/bench_rollout.py --arch qwen2.5-0.5b  # a real architecture, random weights (GPU)
    python benchmarks/bench_rollout.py --arch qwen2.5-0.5b --backend vllm

A real architecture is built from its configuration with random weights: no
download is needed and the compute is the same as the trained model's. Every
figure is also given as a fraction of the memory-bandwidth bound for decoding:
each decoding step reads every weight once, so one step cannot take less than
``weight_bytes / bandwidth`` and a batch of B sequences cannot exceed
``B * bandwidth / weight_bytes`` tokens per second (the KV cache is ignored, so
the bound is optimistic at long contexts).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from rlnb.models import load_model
from rlnb.rollout import require_vllm, sample

# Published Qwen2.5 shapes (config.json of the hub models), so no download is needed.
ARCHS = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def measured_bandwidth(device: str, megabytes: int = 512) -> float:
    """Bytes per second of a large on-device copy (read + write), the practical memory bandwidth."""
    x = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    for _ in range(2):
        y.copy_(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        y.copy_(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * x.numel() * 4 * reps / (time.perf_counter() - start)


def build(arch: str, device: str):
    if arch == "tiny":
        return load_model("tiny", device=device)
    if not device.startswith("cuda"):
        print(f"note: {arch} on a CPU is slow; this figure is for reference only")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**ARCHS[arch])).to(device=device, dtype=dtype).eval()
    _, tokenizer = load_model("tiny", device="cpu")  # prompts only; ids map into the large vocabulary
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", choices=["tiny", *ARCHS])
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--batch-sizes", default="1,4,16,64,256")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results")
    ns = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if ns.backend == "vllm":
        require_vllm()
    model, tokenizer = build(ns.arch, device)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = measured_bandwidth(device)
    if ns.backend == "vllm":  # vLLM loads its own weights: hand it a saved copy of the same model
        folder = tempfile.mkdtemp(prefix="rlnb-bench-")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        model = folder
    rows = []
    for batch in map(int, ns.batch_sizes.split(",")):
        prompts = ["12+34="] * batch
        sample(model, tokenizer, prompts[:1], 1, max_new_tokens=4, backend=ns.backend, progress=False)  # warm-up
        start = time.perf_counter()
        roll = sample(model, tokenizer, prompts, 1, max_new_tokens=ns.new_tokens, batch_size=batch,
                      backend=ns.backend, progress=False)
        seconds = time.perf_counter() - start
        tokens = int(roll.lengths.sum())
        bound = batch * bandwidth / weight_bytes
        rows.append({"arch": ns.arch, "backend": ns.backend, "device": device, "batch": batch,
                     "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
                     "bound_tokens_per_s": round(bound, 1), "fraction_of_bound": round(tokens / seconds / bound, 4)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\nweights {weight_bytes / 2**20:.1f} MiB, measured bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(table.to_string(index=False))
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"rollout-{ns.arch}-{ns.backend}-{device}.csv", index=False)


if __name__ == "__main__":
    main()
