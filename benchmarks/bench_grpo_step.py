"""Cost of one GRPO step, LoRA against full fine-tuning: seconds per step, generated tokens/s, peak memory.

Two worlds:

* ``--world tiny`` (default on a CPU): the shipped 0.99M-parameter base with
  notebook 05's configuration (4 prompts x 16 completions, up to 48 tokens).
* ``--world r1-shape`` (default on a GPU): the architecture of Tina's base,
  DeepSeek-R1-Distill-Qwen-1.5B, built locally from its config with random
  weights (no download), bf16, with Tina's step shape: 6 completions per prompt,
  temperature 0.7, beta 0.04, LoRA r 32 / alpha 128 on every projection.
  Random weights would stop at random lengths, so every completion is forced
  to ``--completion-length`` tokens (``min_new_tokens``): the step costs what a
  step of that length costs, whatever the weights. The tokenizer is the tiny
  world's: the prompts are short and only the model's shape matters here.

Every configuration runs in a fresh process, so one configuration's memory does
not hide in the next one's measurement. Memory is ``torch.cuda.max_memory_allocated``
on a GPU and, on a CPU, the peak resident set size during the measured steps
above the size when they started (Linux ``VmHWM``, see :class:`rlnb.lora.StepCost`).
Generated tokens/s counts completion tokens over the time spent in generation
only (HF ``generate``; vLLM is not used here).

    OMP_NUM_THREADS=1 python benchmarks/bench_grpo_step.py                 # CPU, tiny world
    python benchmarks/bench_grpo_step.py --world r1-shape --ranks 32        # on a GPU

Writes the table to stdout and to ``--out`` as CSV and markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def _config(spec: dict, model_dir: str | None):
    """The RunConfig of one benchmarked configuration (``rank`` None is full fine-tuning)."""
    from rlnb.experiments import lora_rl_config
    from rlnb.lora import lora_options
    from rlnb.train import RunConfig

    rank = spec["rank"]
    if spec["world"] == "tiny":
        return lora_rl_config("ci", 0, rank)
    length = spec["completion_length"]
    return RunConfig(
        model=model_dir, preset=spec["preset"], levels=(3, 4), prompts_per_step=spec["prompts"],
        num_generations=6, max_completion_length=length, temperature=0.7, learning_rate=1e-6,
        loss_type="grpo", lora=None if rank is None else lora_options(rank),
        grpo={"beta": 0.04, "generation_kwargs": {"min_new_tokens": length}},
    )


def _random_r1_shaped_model(folder: Path, spec: dict) -> None:
    """Save a randomly initialised model of Tina's base shape (optionally shrunk) with the world's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlnb.lora import r1_distill_qwen_1p5b_config
    from rlnb.world import build_tokenizer

    tok = build_tokenizer()
    config = r1_distill_qwen_1p5b_config(**{**(spec.get("shape") or {}), "pad_token_id": tok.pad_token_id,
                                            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id})
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def width_shape(width: int, layers: int | None = None) -> dict:
    """Tina's base shape scaled to hidden size ``width``: its MLP ratio (8960 / 1536), head size 128 and
    6 query heads per key-value head where there are that many; the world's tiny vocabulary, so that the
    sweep scales the transformer and not a 152k-row embedding LoRA never adapts."""
    from rlnb.world import build_tokenizer

    if width < 128 or width % 128:
        raise SystemExit(f"--widths must be multiples of 128 (head size 128), got {width}")
    heads = width // 128
    shape = {"hidden_size": width, "intermediate_size": round(width * 8960 / 1536 / 64) * 64,
             "num_attention_heads": heads, "num_key_value_heads": heads // 6 if heads % 6 == 0 else 1,
             "vocab_size": len(build_tokenizer())}
    if layers is not None:
        shape["num_hidden_layers"] = layers
    return shape


def run_one(spec: dict) -> dict:
    """Measure one configuration in this process and return a table row."""
    import torch
    from transformers import AutoConfig

    from rlnb.lora import grpo_step_cost
    from rlnb.models import resolve_model_path

    with tempfile.TemporaryDirectory(prefix="rlnb-bench-") as scratch:
        model_dir = None
        if spec["world"] == "r1-shape":
            model_dir = str(Path(scratch) / "model")
            _random_r1_shaped_model(Path(model_dir), spec)
        cfg = _config(spec, model_dir)
        width = AutoConfig.from_pretrained(resolve_model_path(cfg.model)).hidden_size
        cost = grpo_step_cost(cfg, steps=spec["steps"], warmup=spec["warmup"])
    # PEFT's total includes the adapter; the base model is what remains
    base = cost.params.total - (cost.params.trainable if spec["rank"] is not None else 0)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and spec["preset"] == "gpu" else "cpu"
    return {
        "world": spec["world"], "width": width, "base_params": base,
        "method": "full" if spec["rank"] is None else f"lora r{spec['rank']}",
        "trainable_params": cost.params.trainable, "trainable_%_of_base": round(100 * cost.params.trainable / base, 2),
        "completions_per_step": cfg.prompts_per_step * cfg.num_generations,
        "s_per_step": round(cost.seconds_per_step, 3),
        "generation_s_per_step": round(cost.generation_seconds_per_step, 3),
        "generated_tokens_per_step": round(cost.generated_tokens_per_step, 1),
        "generated_tokens_per_s": round(cost.generated_tokens_per_s, 1),
        "peak_memory_MiB": round(cost.peak_memory_mb, 1), "memory": cost.memory_kind,
        "device": device, "threads": torch.get_num_threads(),
    }


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' ``to_markdown`` needs the optional ``tabulate``)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import torch

    from rlnb.experiments import LORA_RATES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    on_gpu = torch.cuda.is_available()
    parser.add_argument("--world", choices=["tiny", "r1-shape"], default="r1-shape" if on_gpu else "tiny")
    parser.add_argument("--ranks", type=int, nargs="+", default=None, help="LoRA ranks (default: notebook 05's ranks on tiny, 32 on r1-shape)")
    parser.add_argument("--no-full", action="store_true", help="skip full fine-tuning")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--completion-length", type=int, default=1024, help="r1-shape: forced tokens per completion")
    parser.add_argument("--prompts", type=int, default=2, help="r1-shape: prompts per step (x 6 completions)")
    parser.add_argument("--shape", type=json.loads, default=None,
                        help='r1-shape: config overrides for a smoke test, e.g. \'{"num_hidden_layers": 1}\'')
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help="r1-shape: sweep the hidden size (one row per width and method) to find where LoRA "
                             "becomes cheaper; see width_shape")
    parser.add_argument("--layers", type=int, default=None, help="r1-shape with --widths: layers of every width")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the CSV and markdown table")
    parser.add_argument("--one", type=json.loads, default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.one is not None:  # child process: one configuration, a JSON row on the last line
        print(json.dumps(run_one(ns.one)))
        return

    ranks = ns.ranks or (sorted(LORA_RATES) if ns.world == "tiny" else [32])
    preset = "gpu" if (ns.world == "r1-shape" and on_gpu) else "ci"
    if ns.widths and ns.world != "r1-shape":
        raise SystemExit("--widths sweeps the r1-shape world: add --world r1-shape")
    shapes = [width_shape(w, ns.layers) for w in ns.widths] if ns.widths else [ns.shape]
    specs = [(shape, rank) for shape in shapes for rank in ([] if ns.no_full else [None]) + ranks]
    rows = []
    for shape, rank in specs:
        spec = {"world": ns.world, "rank": rank, "steps": ns.steps, "warmup": ns.warmup, "preset": preset,
                "completion_length": ns.completion_length, "prompts": ns.prompts, "shape": shape}
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"configuration {spec} failed (exit {proc.returncode})")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"measured {rows[-1]['method']}: {rows[-1]['s_per_step']} s/step", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f"{stamp}, {platform.node()}, {table['device'].iloc[0]}, torch threads {table['threads'].iloc[0]}"
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"grpo_step_{ns.world}_{'gpu' if preset == 'gpu' else 'cpu'}"
    table.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text(f"{header}\n\n{markdown_table(table)}\n")
    print(header)
    print(markdown_table(table))


if __name__ == "__main__":
    main()
