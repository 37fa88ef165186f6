"""Language zoos: transformers trained by next-token loss on formal languages, in the zoo factory.

From the bottom up: the masked loss, the language-model population against each rebuilt
module, training, generation; the ``language`` config block (pattern zoos untouched, bad
input in one line); records, resume, verify, inspect, ``zoo.open``, and determinism in
process and on 2 Ray workers.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
import yaml
from test_generate import cli, kill_once_listed, listed_batches
from zoo_fixture import tiny_zoo  # noqa: F401

import zoo
from zoo.cli import main
from zoo.config import ConfigError, TrainingConfig, load_config, parse_config
from zoo.factory.language import length_tv, plan_language_batch
from zoo.factory.reader import read_records, verify
from zoo.factory.schema import content_hash
from zoo.languages import PAD, language_for, parse_language
from zoo.subjects.families.base import SubjectJob
from zoo.subjects.families.transformer import FAMILY, Architecture
from zoo.subjects.transformer_lm import evaluate, generate, lm_forward, next_token_loss
from zoo.subjects.transformer_population import from_weights, init_population, to_weights
from zoo.subjects.transformer_train import train_population

DYCK = parse_language({"grammar": "dyck", "max_len": 24})
GRAMMARS = [
    {"share": 0.5, "grammar": {"grammar": "dyck", "max_len": 24}},
    {"share": 0.25, "grammar": {"grammar": "expr", "max_len": 24}},
    {"share": 0.25, "grammar": {"grammar": "english", "max_len": 24}},
]
TINY_LANGUAGE_ZOO = {
    "name": "tiny-lm",
    "seed": 1,
    "batches": 4,
    "architecture": {"family": "transformer", "d_model": [16], "heads": [2], "layers": {"min": 1, "max": 2},
                     "ffn": ["dense", "sparse"], "expansion": 4},
    "training": {"epochs": 2, "lr": {"min": 0.003, "max": 0.005}, "batch_size": 32},
    "signature": {"statistics": ["mean", "std", "min", "max", "frac_active"]},
    "storage": {"batches_per_shard": 2},
    "runtime": {"workers": 0},
    "language": {"models_per_batch": 2, "train_size": 96, "val_size": 32, "probe_size": 16, "reference_size": 256,
                 "grammars": GRAMMARS},
}  # fmt: skip


def lm(d: int, layers: int = 2, heads: int = 2, ffn: str = "dense", vocab: int = 7, seq_len: int = 24) -> Architecture:
    sparse = ffn != "dense"
    return Architecture(layers, d, heads, ffn, 4, d // 4 if sparse else 0, True, vocab, seq_len, head="next_token")


# ---------------------------------------------------------------- the model, the loss, training


def test_the_masked_loss_is_the_mean_over_real_targets_and_padding_changes_nothing():
    torch.manual_seed(0)
    tokens = torch.tensor([[[1, 3, 4, 2, PAD, PAD]]])
    logits = torch.randn(1, 1, 5, 7)
    by_hand = torch.stack([torch.nn.functional.cross_entropy(logits[0, 0, t], tokens[0, 0, t + 1]) for t in range(3)]).mean()
    torch.testing.assert_close(next_token_loss(logits, tokens), by_hand.view(1))
    garbage = logits.clone()
    garbage[..., 3:, :] = 100 * torch.randn(2, 7)  # positions that predict padding
    torch.testing.assert_close(next_token_loss(garbage, tokens), by_hand.view(1))


@pytest.mark.parametrize("ffn", ["dense", "sparse"])
def test_the_population_gives_every_rebuilt_module_s_next_token_logits(ffn):
    archs = [lm(16, 2, 2, ffn), lm(8, 1, 1, ffn)]
    pop = init_population(archs, [1, 2])
    tokens = torch.as_tensor(language_for(DYCK).sample(6, 0).tokens)
    out = lm_forward(pop, tokens[None].expand(2, -1, -1))
    points = FAMILY.activations(pop, tokens[None].expand(2, -1, -1))
    for i, (arch, weights) in enumerate(zip(archs, to_weights(pop))):
        module = FAMILY.build_module(arch, weights)
        with torch.no_grad():
            torch.testing.assert_close(out[i], module(tokens), atol=1e-5, rtol=1e-5)
            own = module.activations(tokens)
        for name, width in FAMILY.hookpoints(arch).items():
            torch.testing.assert_close(points[name][i, ..., :width], own[name], atol=1e-5, rtol=1e-5)


def _jobs(archs, n_train=128):
    lang = language_for(DYCK)
    train, val = lang.sample(n_train, 1), lang.sample(32, 2)
    return [
        SubjectJob(a, 10 + i, 20 + i, 1e-2, train.tokens, train.lengths.astype(np.float32), val.tokens, val.lengths.astype(np.float32))
        for i, a in enumerate(archs)
    ]


def test_next_token_training_lowers_the_loss_and_padding_models_into_one_population_changes_nothing():
    torch.set_num_threads(1)
    archs = [lm(16), lm(8, heads=1)]
    config = TrainingConfig(epochs=4, batch_size=32, weight_decay=0.01)
    jobs = _jobs(archs)
    lang = language_for(DYCK)
    val = torch.as_tensor(jobs[0].val_tokens)
    legal = torch.as_tensor(lang.legal_next(jobs[0].val_tokens))
    together = init_population(archs, [j.init_seed for j in jobs])
    before, _ = evaluate(together, val[None].expand(2, -1, -1), legal[None].expand(2, -1, -1, -1))
    result = train_population(together, jobs, config)
    after, accuracy = evaluate(together, val[None].expand(2, -1, -1), legal[None].expand(2, -1, -1, -1))
    assert (after < before - 0.5).all() and (accuracy > 0.7).all()
    np.testing.assert_allclose(result.val_loss, after, rtol=1e-5)
    for i, (arch, job) in enumerate(zip(archs, jobs)):
        alone = init_population([arch], [job.init_seed])
        own = train_population(alone, [job], config)
        # float rounding differs with padding; Adam can turn it into ~1e-4 on a weight whose gradient is ~0
        np.testing.assert_allclose(to_weights(alone)[0], to_weights(together)[i], atol=1e-3)
        np.testing.assert_allclose(own.val_loss[0], result.val_loss[i], rtol=1e-4)


def test_generations_are_a_function_of_the_weights_and_the_seed_alone():
    archs = [lm(16), lm(8, heads=1)]
    pop = init_population(archs, [3, 4])
    both = generate(pop, 16, [7, 8], 24)
    alone = generate(from_weights([archs[1]], [to_weights(pop)[1]]), 16, [8], 24)
    assert (both[1] == alone[0]).all()
    assert not (generate(pop, 16, [7, 9], 24)[1] == both[1]).all()
    assert (both[..., 0] == 1).all()
    ended = (both == 2).cumsum(-1) > 0
    assert (both[:, :, 1:][ended[:, :, :-1]] == PAD).all()  # nothing after the first EOS


def test_length_tv_is_zero_for_equal_samples_and_one_for_disjoint_ones():
    assert length_tv(np.array([4, 6, 6]), np.array([6, 4, 6]), 24) == 0.0
    assert length_tv(np.array([4, 4]), np.array([8, 10]), 24) == 1.0
    assert length_tv(np.array([25, 30]), np.array([25]), 24) == 0.0  # no EOS: one bin past the cap


# ---------------------------------------------------------------- config


def test_pattern_zoos_and_recipes_are_untouched_by_the_language_block():
    config = load_config("configs/zoo/quickstart.yaml")
    assert config.language is None and config.task == "patterns"
    assert "language" not in config.model_dump()
    assert config.content_hash() == "49082297a5ac6f20"  # the quickstart's hash before language zoos


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ({"grammar": "dyk"}, "language.grammars.0.grammar.grammar: unknown grammar; known: dyck, expr, english"),
        ({"grammar": "dyck", "p_nest": 1.0}, "language.grammars.0.grammar.p_nest: Input should be less than 1"),
        ({"grammar": "dyck", "p_nest": 0.0}, "language.grammars.0.grammar.p_nest: Input should be greater than 0"),
        ({"grammar": "english", "max_len": 3}, "language.grammars.0.grammar.max_len: 3 is shorter than the shortest english"),
    ],
)
def test_a_bad_language_config_is_one_line_naming_the_field_exit_2_and_nothing_written(tmp_path, capsys, grammar, message):
    recipe = json.loads(json.dumps(TINY_LANGUAGE_ZOO))
    recipe["language"]["grammars"] = [{"share": 1.0, "grammar": grammar}]
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(recipe)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    assert main(["generate", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_a_language_zoo_needs_transformers_and_shares_that_sum_to_one():
    recipe = {"language": {"grammars": [{"share": 1.0, "grammar": {"grammar": "dyck"}}]}}
    with pytest.raises(ConfigError, match="architecture: a language zoo trains the transformer family, not mlp"):
        parse_config(recipe)
    recipe = {**TINY_LANGUAGE_ZOO, "language": {"grammars": [{"share": 0.5, "grammar": {"grammar": "dyck"}}]}}
    with pytest.raises(ConfigError, match="language.grammars: the shares sum to 0.5, not 1"):
        parse_config(recipe)


def test_batches_draw_grammars_by_share_and_a_language_model_head():
    config = parse_config({**TINY_LANGUAGE_ZOO, "batches": 200})
    plans = [plan_language_batch(config, b) for b in range(200)]
    counts = np.bincount([p.grammar_index for p in plans], minlength=3) / 200
    np.testing.assert_allclose(counts, [0.5, 0.25, 0.25], atol=0.1)
    for p in plans[:10]:
        assert p.architecture.head == "next_token"
        assert p.architecture.vocab_size == len(language_for(p.grammar(config)).vocab)
    assert plan_language_batch(config, 7) == plans[7]


# ---------------------------------------------------------------- records and the factory


@pytest.fixture(scope="module")
def language_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "zoo"
    zoo.generate(TINY_LANGUAGE_ZOO, out, workers=0, quiet=True)
    return out


def test_a_language_zoo_holds_one_record_per_model_with_its_metrics(language_zoo):
    z = zoo.open(language_zoo)
    assert z.info.schema_version == 3 and len(z) == 4 * 2
    table = z.table()
    assert set(table.column("grammar").to_pylist()) <= {"dyck", "expr", "english"}
    for row in table.to_pylist():
        m = row["metrics"]
        assert 0 <= m["validity"] <= 1 and 0 <= m["legal_accuracy"] <= 1 and 0 <= m["length_tv"] <= 1
        assert m["generations"] == 128 and m["val_loss"] > 0 and m["epochs"] >= 1
        arch = json.loads(row["architecture"])
        assert arch["head"] == "next_token"
        assert len(row["signature"]) == len(row["neuron_kind"]) == len(row["neuron_layer"])
        assert len(row["signature"][0]) == len(z.signature_stats) == 5
        grammar = parse_language(json.loads(row["grammar_config"]))
        assert grammar.grammar == row["grammar"] and arch["vocab_size"] == len(language_for(grammar).vocab)
    assert verify(language_zoo) == []


def test_a_language_record_loads_as_a_module_with_its_recorded_validity(language_zoo):
    z = zoo.open(language_zoo)
    row = z.row(0)
    model = z.load_model(0)
    lang = language_for(parse_language(json.loads(row["grammar_config"])))
    tokens = torch.as_tensor(lang.sample(4, 0).tokens)
    assert model(tokens).shape == (4, lang.max_len, len(lang.vocab))
    arch = FAMILY.architecture.from_dict(json.loads(row["architecture"]))
    pop = from_weights([arch], [np.asarray(row["weights"], dtype=np.float32)])
    again = generate(pop, 128, [row["generation_seed"]], lang.max_len)[0]
    assert lang.validate(again).mean() == pytest.approx(row["metrics"]["validity"])


def test_the_probe_corpora_are_stored_and_checked(language_zoo):
    z = zoo.open(language_zoo)
    probes = z.probe_set
    assert len(probes.corpora) == len(GRAMMARS) and all(len(c) == 16 for c in probes.corpora)
    assert set(z.table(["probe_hash"]).column("probe_hash").to_pylist()) == {probes.hash}


def test_inspect_shows_language_metrics_per_grammar_and_feed_forward_kind(language_zoo, capsys):
    assert main(["inspect", str(language_zoo), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "language" and summary["models"] == 8
    assert sum(g["models"] for g in summary["languages"]) == 8
    assert {"grammar", "ffn", "validity", "legal_accuracy", "val_loss", "length_tv"} <= set(summary["languages"][0])


def test_a_language_zoo_is_the_same_whoever_makes_it(language_zoo, tmp_path, ray_session):
    expected = content_hash(read_records(language_zoo))
    again = zoo.generate(TINY_LANGUAGE_ZOO, tmp_path / "again", workers=0, quiet=True)
    assert content_hash(read_records(again.store)) == expected
    on_ray = zoo.generate(TINY_LANGUAGE_ZOO, tmp_path / "ray", workers=2, quiet=True)
    assert content_hash(read_records(on_ray.store)) == expected
    assert verify(tmp_path / "ray") == []


@pytest.mark.slow
def test_a_killed_driver_of_a_language_zoo_loses_nothing_and_the_rerun_completes(tmp_path):
    recipe = {**TINY_LANGUAGE_ZOO, "name": "lm-killme", "batches": 6, "storage": {"batches_per_shard": 1},
              "language": {**TINY_LANGUAGE_ZOO["language"], "train_size": 400}}  # fmt: skip
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    proc = cli("generate", "--config", str(path), "--out", str(out), "--workers", "0",
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_once_listed(proc, out, 2, timeout=180)
    assert 2 <= len(listed_batches(out)) < 6
    assert main(["generate", "--config", str(path), "--out", str(out), "--workers", "0"]) == 0
    assert listed_batches(out) == list(range(6)) and verify(out) == []
    undisturbed = zoo.generate(recipe, tmp_path / "undisturbed", workers=0, quiet=True)
    assert content_hash(read_records(out)) == content_hash(read_records(undisturbed.store))


def test_cycle_assignment_trains_every_grammar_in_turn():
    recipe = json.loads(json.dumps(TINY_LANGUAGE_ZOO))
    recipe["language"]["grammars"] = [{"share": 0.5, "grammar": g["grammar"]} for g in GRAMMARS[:2]]
    recipe["language"]["assignment"] = "cycle"
    config = parse_config(recipe)
    assert [plan_language_batch(config, b).grammar_index for b in range(6)] == [0, 1, 0, 1, 0, 1]
    recipe["language"]["grammars"] = GRAMMARS
    with pytest.raises(ConfigError, match="language.assignment: cycle trains every grammar equally often"):
        parse_config(recipe)


def test_lm_sample_prints_the_record_s_own_generations_with_validity_and_token_states(language_zoo, capsys):
    z = zoo.open(language_zoo)
    grammars = z.table(["grammar"]).column("grammar").to_pylist()
    row = next((i for i, g in enumerate(grammars) if g == "dyck"), 0)
    assert main(["lm", "sample", "--data", str(language_zoo), "--row", str(row), "--n", "128", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["validity"] == pytest.approx(result["recorded_validity"])  # the same 128 generations
    for sample in result["samples"]:
        assert sample["tokens"][0] == "<bos>"
        if sample["valid"] and grammars[row] == "dyck":
            assert set(sample["states"]) == {"kind", "depth", "top"}
            assert all(len(v) == len(sample["tokens"]) for v in sample["states"].values())
    assert main(["lm", "sample", "--data", str(language_zoo), "--row", str(row), "--n", "2"]) == 0
    text = capsys.readouterr().out
    assert "validity of these 2" in text and "<bos>" in text


def test_lm_sample_refuses_a_pattern_zoo_and_a_missing_row_in_one_line(language_zoo, tiny_zoo, capsys):
    assert main(["lm", "sample", "--data", str(tiny_zoo)]) == 2
    assert "not a language zoo" in capsys.readouterr().err
    assert main(["lm", "sample", "--data", str(language_zoo), "--row", "99"]) == 2
    assert "row 99 does not exist" in capsys.readouterr().err


def test_a_damaged_probe_corpus_is_reported_by_verify(language_zoo, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "zoo"
    shutil.copytree(language_zoo, copy)
    table = pq.read_table(copy / "probe.parquet")
    tokens = table.column("tokens").to_pylist()
    tokens[0][1] = 3 if tokens[0][1] != 3 else 4
    damaged = table.set_column(table.column_names.index("tokens"), "tokens", pa.array(tokens, pa.list_(pa.int64())))
    pq.write_table(damaged.replace_schema_metadata(table.schema.metadata), copy / "probe.parquet")
    problems = verify(copy)
    assert len(problems) == 1 and "probe.parquet" in problems[0] and "does not hash as stored" in problems[0]


def test_grammars_are_named_by_what_sets_them_apart_from_their_defaults():
    from zoo.languages.config import describe_language

    assert describe_language(parse_language({"grammar": "dyck", "p_nest": 0.5})) == "dyck p_nest=0.5"
    assert describe_language(parse_language({"grammar": "dyck"})) == "dyck p_nest=0.3"
    assert describe_language(parse_language({"grammar": "expr", "postfix": True})) == "expr postfix"
    assert describe_language(parse_language({"grammar": "english", "max_len": 40})) == "english"


def test_a_language_signature_is_each_unit_s_statistics_over_the_real_tokens_of_the_corpus():
    from zoo.config import SignatureConfig
    from zoo.factory.signatures import language_signatures

    archs = [lm(16, ffn="sparse"), lm(8, heads=1, ffn="sparse")]
    pop = init_population(archs, [5, 6])
    tokens = language_for(DYCK).sample(40, 3).tokens
    config = SignatureConfig(activations="post", statistics=["mean", "max", "frac_active"])
    sigs = language_signatures(FAMILY, pop, np.stack([tokens, tokens]), config)
    real = torch.as_tensor(tokens != PAD)
    for i, (arch, weights) in enumerate(zip(archs, to_weights(pop))):
        with torch.no_grad():
            points = FAMILY.build_module(arch, weights).activations(torch.as_tensor(tokens))
        rows = []
        for site in FAMILY.signature_sites(arch):
            post, pre = points[site.post][real].double(), points[site.pre][real].double()
            rows.append(torch.stack([post.mean(0), post.amax(0), (pre > 0).double().mean(0)], 1))
        np.testing.assert_allclose(sigs[i], torch.cat(rows).numpy(), atol=2e-5)


def test_a_language_zoo_has_no_degraded_model_and_no_splits(language_zoo):
    z = zoo.open(language_zoo)
    with pytest.raises(zoo.ZooError, match="no degraded twin"):
        z.load_model(0, which="degraded")
    with pytest.raises(zoo.ZooError, match="reads only pattern zoos"):
        z.split_batches("test")


@pytest.mark.parametrize("flag", [["--n", "-2"], ["--n", "0"], ["--seed", "-1"], ["--n", "x"]])
def test_lm_sample_refuses_a_bad_count_or_seed_naming_the_flag(language_zoo, flag, capsys):
    from zoo.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["lm", "sample", "--data", str(language_zoo), *flag])
    assert exited.value.code == 2
    assert flag[0] in capsys.readouterr().err.strip().splitlines()[-1]
