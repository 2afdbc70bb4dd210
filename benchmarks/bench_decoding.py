"""Decoding cost of the tiny world against its compute bound, under transformers' own speed options.

Issue #26 asks whether sampling, about 40% of a tiny-world GRPO step, can be made
several times faster through the libraries' machinery. This benchmark measures,
side by side in one process, every option transformers offers for it:

* ``dynamic``: today's path, ``generate`` with the default dynamic KV cache;
* ``static``: ``cache_implementation="static"`` (a preallocated cache, no ``torch.cat``);
* ``static+compile``: the static cache with transformers' auto-compiled forward
  (``compile_config`` with ``_compile_all_devices``, inductor, fixed shapes), which
  ``generate`` otherwise only turns on for accelerators;
* ``static+compile+cpp_wrapper``: the same with inductor's ``cpp_wrapper`` (the
  Python wrapper around the generated kernels replaced by C++, the CPU option
  against per-call overhead). Inductor's ``freezing`` (weights folded and
  prepacked for oneDNN) was tried too: with the static cache the compiled
  decoding step fails inside a generated kernel (index out of bounds, torch
  2.13), so it is not an option here.

Each configuration decodes exactly ``--new-tokens`` tokens (``min_new_tokens``), so
every one does the same work, and reports milliseconds per decoding step (the
whole ``generate`` call divided by the tokens it produced per sequence, prefill
included). The bound is what the step's matrix products cost as bare
``torch.nn.functional.linear`` calls of the same shapes on this machine (the
model's attention, norms and sampling cost extra, so the true floor is higher).
``x bound`` is a configuration's step time over that bound.

Two sizes: notebook 01's ``ci`` GRPO step (4 prompts x 16 completions) and
notebook 04's evaluation batches (512 sequences, ``rlnb.rollout.sample``'s
default ``batch_size``).

    OMP_NUM_THREADS=1 python benchmarks/bench_decoding.py
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import CompileConfig

from rlnb.experiments import zero_rl_config
from rlnb.models import load_model
from rlnb.train import world_dataset

SIZES = {"01 ci GRPO step": 64, "04 evaluation batch": 512}
OPTIONS = ("dynamic", "static", "static+compile", "static+compile+cpp_wrapper")


def generation_config(option: str, tokenizer, new_tokens: int) -> GenerationConfig:
    """Sampling at temperature 1 for exactly ``new_tokens`` tokens, with ``option``'s cache and compilation."""
    kwargs = dict(do_sample=True, temperature=1.0, top_k=0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if option != "dynamic":
        kwargs["cache_implementation"] = "static"
    if "compile" in option:
        compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
        compile_config._compile_all_devices = True  # transformers compiles only on accelerators unless told
        kwargs["compile_config"] = compile_config
    return GenerationConfig(**kwargs)


def linear_bound_ms(model, batch: int, reps: int = 50) -> float:
    """Milliseconds of one decoding step's matrix products as bare linear calls of the model's own shapes."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(batch, w.shape[1]) for w in weights]
    with torch.inference_mode():
        for _ in range(5):
            for x, w in zip(inputs, weights):
                torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        for _ in range(reps):
            for x, w in zip(inputs, weights):
                torch.nn.functional.linear(x, w)
    return 1e3 * (time.perf_counter() - start) / reps


def step_ms(model, tokenizer, prompts: list[str], option: str, new_tokens: int, reps: int) -> tuple[float, float]:
    """Median milliseconds per decoding step over ``reps`` calls, and the first (compiling) call's seconds."""
    import torch._dynamo
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    inductor.cpp_wrapper = option.endswith("cpp_wrapper")
    config = generation_config(option, tokenizer, new_tokens)
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    times = []
    for rep in range(reps + 2):
        torch.manual_seed(rep)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        times.append(time.perf_counter() - start)
        assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
    return 1e3 * statistics.median(times[2:]) / new_tokens, times[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per sequence (notebook 01's runs "
                        "write about 31 once they use worked steps)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here as CSV")
    args = parser.parse_args(argv)

    cfg = zero_rl_config("ci")
    model, tokenizer = load_model(cfg.model, device="cpu")
    model.eval()
    tokenizer.padding_side = "left"
    problems = world_dataset(cfg.levels, cfg.prompts_per_step, 0)["prompt"]
    rows = []
    for size, batch in SIZES.items():
        prompts = [problems[i % len(problems)] for i in range(batch)]
        bound = linear_bound_ms(model, batch)
        for option in args.options:
            ms, first_s = step_ms(model, tokenizer, prompts, option, args.new_tokens, args.reps)
            rows.append({"size": size, "sequences": batch, "option": option, "ms_per_step": round(ms, 2),
                         "first_call_s": round(first_s, 1), "linear_bound_ms": round(bound, 2),
                         "x_bound": round(ms / bound, 2), "threads": torch.get_num_threads()})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["speedup_vs_dynamic"] = (table.groupby("size")["ms_per_step"].transform("first") / table["ms_per_step"]).round(2)
    if args.out is not None:
        args.out.write_text(table.to_csv(index=False))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}, {platform.node()}, torch {torch.__version__}\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
