"""benchmarks/bench_decoding.py sets each transformers option it claims to measure, and runs end to end."""

from __future__ import annotations

import importlib.util

import pandas as pd

from rlnb.paths import PROJECT_ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("bench_decoding", PROJECT_ROOT / "benchmarks" / "bench_decoding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_option_asks_generate_for_its_own_cache_and_compilation(base):
    bench = _bench()
    _, tokenizer = base
    configs = {option: bench.generation_config(option, tokenizer, 7) for option in bench.OPTIONS}
    assert all(c.max_new_tokens == c.min_new_tokens == 7 and c.do_sample for c in configs.values())
    assert configs["dynamic"].cache_implementation is None and configs["dynamic"].compile_config is None
    assert configs["static"].cache_implementation == "static" and configs["static"].compile_config is None
    for option in ("static+compile", "static+compile+cpp_wrapper"):
        compiled = configs[option]
        assert compiled.cache_implementation == "static" and compiled.compile_config._compile_all_devices


def test_the_benchmark_writes_one_row_per_size_and_option_with_its_bound(tmp_path):
    bench = _bench()
    out = tmp_path / "decoding.csv"
    bench.main(["--new-tokens", "2", "--reps", "1", "--options", "dynamic", "static", "--out", str(out)])
    table = pd.read_csv(out)
    assert len(table) == len(bench.SIZES) * 2 and set(table["option"]) == {"dynamic", "static"}
    assert (table["ms_per_step"] > 0).all() and (table["linear_bound_ms"] > 0).all()
    assert (table.loc[table.option == "dynamic", "speedup_vs_dynamic"] == 1.0).all()
