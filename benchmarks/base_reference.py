"""The series' one evaluation of the shipped base, per level, which every notebook quotes (issue #25).

Each notebook samples its own held-out problems, so each estimates the base's pass@1 on its own set (3 digits:
0.18 to 0.22 across the notebooks, each within its own interval). This samples the base once on a larger set,
``--problems`` per level x ``--samples`` completions at temperature 1, and writes the per-problem table with a
key recording the base's weights fingerprint; :func:`rlnb.evaluate.base_reference_line` reads it (and refuses a
table made from other weights).

    OMP_NUM_THREADS=1 python benchmarks/base_reference.py      # 5 levels x 128 problems x 32 samples: 69 s on 2 cores

Writes ``data/base_reference.csv`` (``level, a, b, n, correct, steps, steps_correct, mean_length``) and
``data/base_reference.json`` (the key).
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    from rlnb.evaluate import BASE_REFERENCE, HeldOut, base_reference_line, write_base_reference
    from rlnb.models import load_model
    from rlnb.world import EVAL_SEED, LEVELS, make_problems

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=128, help="held-out problems per level")
    parser.add_argument("--samples", type=int, default=32, help="completions per problem")
    parser.add_argument("--out", default=str(BASE_REFERENCE))
    ns = parser.parse_args(argv)
    model, tokenizer = load_model("tiny")
    held = HeldOut(problems=make_problems(LEVELS, ns.problems, seed=EVAL_SEED))
    table = held.evaluate(model, tokenizer, ns.samples, seed=0, progress=True)
    out = write_base_reference(table, model, ns.out, problems_per_level=ns.problems, samples=ns.samples,
                               eval_seed=EVAL_SEED, temperature=1.0)
    print(base_reference_line(path=out))


if __name__ == "__main__":
    main()
