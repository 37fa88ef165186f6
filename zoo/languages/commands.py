"""``zoo lm sample``: a language-zoo model's generations, with their validity and per-token states.

    zoo lm sample --data zoo-languages-quickstart --row 3 --n 8

The model of record ``--row`` samples ``--n`` sentences from BOS at temperature 1 with the
record's own generation seed, so they are the first ``n`` of the generations its
``validity`` was measured on (``--seed`` draws others). Each is printed with the
validator's verdict and, for Dyck and Expr, the grammar state of every token
(``Language.annotate``); English states exist only for sampled derivations, so its
generations come with their verdict alone.
"""

from __future__ import annotations

import argparse
import json


class NotALanguageZoo(ValueError):
    """``zoo lm`` was pointed at a pattern zoo: one line, exit 2."""


def sample_record(data: str, row: int, n: int, seed: int | None = None) -> dict:
    """The generations of one record's model: tokens as words, validity, labels where the grammar allows."""
    import numpy as np

    import zoo
    from zoo.languages import language_for, parse_language
    from zoo.languages.config import describe_language
    from zoo.subjects.families import architecture_of, get_family
    from zoo.subjects.transformer_lm import generate

    z = zoo.open(data)
    if z.info.schema_version != 3:
        raise NotALanguageZoo(f"{data}: not a language zoo (record schema v{z.info.schema_version}); zoo lm sample reads language zoos")
    columns = ["example_id", "architecture", "weights", "grammar_config", "generation_seed", "metrics"]
    record = z.row(row, columns=columns)
    grammar = parse_language(json.loads(record["grammar_config"]))
    lang, arch = language_for(grammar), architecture_of(record["architecture"])
    pop = get_family(arch.family).population([arch], [np.asarray(record["weights"], dtype=np.float32)])
    tokens = generate(pop, n, [record["generation_seed"] if seed is None else seed], grammar.max_len)[0]
    valid = lang.validate(tokens)
    labels: dict = {}
    if valid.any():
        try:  # states are defined for sentences of the language only
            labels = {name: dict(zip(np.flatnonzero(valid), v)) for name, v in lang.annotate(tokens[valid]).items()}
        except NotImplementedError:
            pass
    samples = []
    for i in range(n):
        end = int(np.flatnonzero(tokens[i] == 2)[0]) + 1 if (tokens[i] == 2).any() else len(tokens[i])
        states = {}
        if valid[i]:
            for spec in lang.specs:
                if spec.name in labels:
                    states[spec.name] = [spec.values[v] if v >= 0 else "-" for v in labels[spec.name][i][:end]]
        samples.append({"tokens": [lang.vocab[t] for t in tokens[i, :end]], "valid": bool(valid[i]), "states": states})
    return {
        "example_id": record["example_id"],
        "grammar": describe_language(grammar),
        "architecture": arch.describe(),
        "recorded_validity": record["metrics"]["validity"],
        "validity": float(valid.mean()),
        "samples": samples,
    }


def render(result: dict) -> str:
    """Each generation on one line, its states below it in aligned columns."""
    lines = [
        f"{result['example_id']}: {result['architecture']} on {result['grammar']}",
        f"validity of these {len(result['samples'])}: {result['validity']:.3f} "
        f"(recorded on its generations: {result['recorded_validity']:.3f})",
    ]
    for sample in result["samples"]:
        rows = [sample["tokens"], *sample["states"].values()]
        widths = [max(len(str(r[j])) for r in rows) for j in range(len(sample["tokens"]))]
        names = ["valid" if sample["valid"] else "INVALID", *sample["states"]]
        pad = max(len(n) for n in names)
        lines.append("")
        for name, values in zip(names, rows):
            lines.append(f"{name:<{pad}}  " + " ".join(f"{v!s:<{w}}" for v, w in zip(values, widths)).rstrip())
    return "\n".join(lines)


MAX_SAMPLES = 100_000


def _int_in(low: int, high: int):
    """An argparse type: an integer in [low, high], else argparse's one-line error naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def cmd_sample(args: argparse.Namespace) -> int:
    result = sample_record(args.data, args.row, args.n, args.seed)
    print(json.dumps(result) if args.json else render(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    lm = sub.add_parser(
        "lm",
        help="language-zoo models: sample their generations",
        description="Commands on the language models of a language zoo (a zoo config with a `language:` block).",
    )
    commands = lm.add_subparsers(dest="lm_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "sample",
        help="print a record's generations with their validity and per-token grammar states",
        description="Sample sentences from BOS with the model of one record (temperature 1, the record's generation "
        "seed: the first N of the generations its validity was measured on) and print each with the validator's "
        "verdict and, for Dyck and Expr, every token's grammar state.",
    )
    p.add_argument("--data", required=True, help="the language zoo (a folder or URI)")
    p.add_argument("--row", type=int, default=0, help="record index, in (batch_id, pair_index) order (default: 0)")
    p.add_argument("--n", type=_int_in(1, MAX_SAMPLES), default=8, help="generations to print (default: 8)")
    p.add_argument("--seed", type=_int_in(0, 2**63 - 1), default=None, help="draw with this seed instead of the record's (default: the record's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cmd_sample)
