"""Every trainer on CUDA: each notebook configuration trains a few steps under preset ``gpu``, and the headline runs
of notebooks 01 and 02 train their full ``ci`` length, with held-out pass@1.

The tiny model on CUDA in bf16 with activation checkpointing (what preset ``gpu`` switches on) exercises the
GPU path of every trainer in minutes: a NaN there (issue #24: cuDNN's attention backward, which the preset now
turns off) shows up within a few steps. Run it whenever a CUDA machine is at hand:

    python benchmarks/gpu_smoke.py                 # every configuration 4 steps, then the headline runs
    python benchmarks/gpu_smoke.py --steps 8 --no-headline

It trains into a temporary ``RLNB_RUNS`` (nothing is reused), prints one line per configuration, and appends a
dated section with the measured table to ``benchmarks/RESULTS.md``. Exit status 1 when any run failed.
On a machine without CUDA it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADLINE = ("01 grpo", "02 luffy", "02 on-policy")
"""Configurations that also train their full ``ci`` length and are evaluated held out."""


def smoke_configs() -> dict[str, "RunConfig"]:  # noqa: F821 (imported inside: rlnb reads RLNB_RUNS at import)
    """Every notebook's ``ci`` configuration by name, seed 0: what the smoke test switches to preset ``gpu``.

    Built on the ``ci`` preset, so the list can be checked on any machine (``tests/test_gpu_path.py``).
    """
    from rlnb import experiments as E
    from rlnb.train import RunConfig

    configs = {f"01 {loss}": E.zero_rl_config("ci", loss, 0) for loss in E.LOSS_TYPES}
    configs.update({f"02 {name}": E.luffy_config("ci", name, 0) for name in E.LUFFY_METHODS})
    configs.update({f"03 {name}": E.entropy_intervention_config("ci", name, 0) for name in E.ENTROPY_INTERVENTIONS})
    configs.update({f"05 r{rank}": E.lora_rl_config("ci", 0, rank) for rank in (1, 4)})
    configs["05 worked format"] = E.format_transition_job("ci", 0).config
    configs.update({f"06 {name}": E.grpo_family_config("ci", name, 0) for name in E.GRPO_FAMILY_METHODS})
    configs.update({f"07 {name}": E.guidance_config("ci", name, 0) for name in E.GUIDANCE_METHODS})
    configs["math grpo"] = RunConfig.from_yaml(E.GPU_ZERO_RL_YAML)
    configs["math luffy"] = RunConfig.from_yaml(E.GPU_LUFFY_YAML)
    return configs


MATH_ROWS = [{"problem": f"What is {a} + {b}?", "solution": f"{a} + {b} = {a + b}, so \\boxed{{{a + b}}}.",
              "answer": str(a + b)} for a, b in [(1, 1), (2, 3), (7, 5), (12, 30), (9, 9), (4, 40), (6, 7), (8, 1)]]
"""A local stand-in for the math configurations' hub data set: the device machine reaches no hub."""


def on_gpu(cfg: "RunConfig", steps: int | None, math_data: str = "") -> "RunConfig":  # noqa: F821
    """``cfg`` under preset ``gpu`` with the tiny model, ``steps`` long (its own length when None).

    The math configurations keep their task and loss but take the tiny model, short completions, plain
    transformers sampling and the local data set ``math_data`` (:data:`MATH_ROWS`), so the smoke test
    needs no hub and no vLLM; the world ones keep everything but the preset.
    """
    steps = steps or cfg.max_steps
    # a divisor of both lengths, so checkpoints stay on generation-batch boundaries (rlnb.runs.check_resumable)
    changes = dict(preset="gpu", max_steps=steps, save_steps=math.gcd(steps, cfg.save_steps))
    if cfg.task == "math":
        changes.update(model="tiny", max_completion_length=32, dataset=math_data, dataset_split="train",
                       trace_column="solution", dataset_limit=None,
                       grpo={k: v for k, v in cfg.grpo.items() if not k.startswith("vllm") and k != "use_vllm"})
    return dataclasses.replace(cfg, **changes)


def train_one(name: str, cfg: "RunConfig") -> dict:  # noqa: F821
    """Train ``cfg`` on CUDA; the row of the results table (``error`` is empty when it trained)."""
    from rlnb.runs import load_or_train

    start = time.perf_counter()
    row = {"configuration": name, "method": cfg.method, "steps": cfg.max_steps, "error": ""}
    try:
        run = load_or_train(cfg, "gpu_smoke", name.replace(" ", "-").replace("@", "-at-"), device="cuda")
        grad = run.metrics[run.metrics.metric == "grad_norm"]["value"]
        row.update(steps=int(run.info["steps"]), max_grad_norm=float(grad.max()), nan=bool(grad.isna().any()))
        row["model"] = run.model
    except Exception as err:  # one failing configuration must not hide the others' results
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    row["seconds"] = time.perf_counter() - start
    return row


def held_out_pass1(model, levels: list[int]) -> dict[int, float]:
    """Held-out pass@1 per level on notebook 01's evaluation set size (48 problems x 8 samples)."""
    from rlnb.evaluate import evaluate
    from rlnb.models import load_model
    from rlnb.world import EVAL_SEED, make_problems

    _, tokenizer = load_model("tiny", device="cpu")
    table = evaluate(model, tokenizer, make_problems(levels, 48, seed=EVAL_SEED), n=8, progress=False)
    by_level = table.groupby("level")[["correct", "n"]].sum()
    return {int(level): float(row.correct / row.n) for level, row in by_level.iterrows()}


def markdown(rows: list[dict], steps: int) -> str:
    device = torch.cuda.get_device_name(0)
    lines = [f"\n### GPU smoke: every configuration on CUDA — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "", f"{device}, torch {torch.__version__}, preset `gpu` (bf16, activation checkpointing, cuDNN "
             f"attention off), the tiny model; {steps} steps each, headline runs their full `ci` length.", "",
             "| configuration | method | steps | max grad norm | NaN | s | held-out pass@1 | error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        scores = ", ".join(f"{lvl}: {v:.2f}" for lvl, v in r.get("pass1", {}).items())
        grad = f"{r['max_grad_norm']:.3g}" if "max_grad_norm" in r else ""
        lines.append(f"| {r['configuration']} | {r['method']} | {r['steps']} | {grad} | {r.get('nan', '')} | "
                     f"{r['seconds']:.0f} | {scores} | {r['error']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps of each configuration (default 4)")
    parser.add_argument("--no-headline", action="store_true", help="skip the full-length headline runs")
    parser.add_argument("--no-record", action="store_true", help=f"do not append the table to {RESULTS.name}")
    ns = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_smoke.py needs a CUDA GPU and this machine has none: nothing was run", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    os.environ["RLNB_RUNS"] = str(work / "runs")
    os.environ.setdefault("RLNB_PROGRESS", "0")
    math_data = work / "math.jsonl"
    math_data.write_text("\n".join(json.dumps(row) for row in MATH_ROWS), encoding="utf-8")
    configs = smoke_configs()
    rows = []
    jobs = [(name, on_gpu(cfg, ns.steps, str(math_data))) for name, cfg in configs.items()]
    if not ns.no_headline:
        jobs += [(f"{name} (full ci)", on_gpu(configs[name], None)) for name in HEADLINE]
    for name, cfg in jobs:
        row = train_one(name, cfg)
        model = row.pop("model", None)
        if model is not None and name.endswith("(full ci)"):
            row["pass1"] = held_out_pass1(model, sorted({*cfg.levels, 3, 7}))
        rows.append(row)
        print(f"{name:32s} {row['steps']:4d} steps {row['seconds']:6.0f} s  "
              f"{row['error'] or 'ok'} {row.get('pass1', '')}", flush=True)
    if not ns.no_record:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(markdown(rows, ns.steps))
        print(f"appended to {RESULTS}")
    return 1 if any(r["error"] or r.get("nan") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
