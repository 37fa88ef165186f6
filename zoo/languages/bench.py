"""Sampler and validator speed per grammar: ``python -m zoo.languages.bench [--n 20000]``.

Prints one row per grammar: sequences/s sampled (labels included), acceptance under the
cap, mean length, and sequences/s validated. Single process, one thread.
"""

from __future__ import annotations

import argparse
import time

GRAMMARS = [
    {"grammar": "dyck", "k": 2, "p_nest": 0.3},
    {"grammar": "dyck", "k": 2, "p_nest": 0.5},
    {"grammar": "expr"},
    {"grammar": "expr", "postfix": True},
    {"grammar": "english"},
    {"grammar": "english", "relative_clauses": 0.15, "prepositions": 0.1, "transitivity": True},
]


def main(argv: list[str] | None = None) -> None:
    from zoo.languages import language_for, parse_language

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="sequences per grammar")
    parser.add_argument("--max-len", type=int, default=64, help="tokens per sequence, BOS and EOS included")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    print(f"{'grammar':<70} {'sample/s':>10} {'accept':>7} {'len':>6} {'validate/s':>11}")
    for data in GRAMMARS:
        config = parse_language({**data, "max_len": args.max_len})
        lang = language_for(config)
        best_s = best_v = float("inf")
        for r in range(args.repeats):
            t = time.perf_counter()
            sample = lang.sample(args.n, seed=r)
            best_s = min(best_s, time.perf_counter() - t)
            t = time.perf_counter()
            ok = lang.validate(sample.tokens)
            best_v = min(best_v, time.perf_counter() - t)
            assert ok.all()
        name = ", ".join(f"{k}={v}" for k, v in data.items() if k != "grammar")
        label = f"{data['grammar']}" + (f" ({name})" if name else "")
        print(
            f"{label:<70} {args.n / best_s:>10,.0f} {sample.acceptance:>7.3f} "
            f"{sample.lengths.mean():>6.1f} {args.n / best_v:>11,.0f}"
        )


if __name__ == "__main__":
    main()
