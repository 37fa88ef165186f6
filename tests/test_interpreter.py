"""The interpreter on a tiny real zoo: data, permutation invariance, training, checkpoints, report, edit, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interpreter_fixture import interp_run, interp_zoo, run_copy, tiny_config  # noqa: F401
from zoo_fixture import run_cli

from zoo.readers.interpreter.data import (
    SplitData,
    Weights,
    collate,
    from_tokens,
    one_hot,
    open_source,
    permute_layer,
    stream,
)


@pytest.fixture(scope="module")
def source(interp_zoo):
    return open_source(interp_zoo)


@pytest.fixture(scope="module")
def records(source):
    return list(stream(source, None))


def test_splits_come_from_splits_json(interp_zoo, source):
    from zoo.export.splits import load_splits

    stored = load_splits(interp_zoo)
    assert source.assignment == stored.assignment
    train_batches = {e.batch_id for e in SplitData(source, "train").examples()}
    assert train_batches == set(stored.batches("train"))


def test_streaming_reads_the_split_once_per_epoch_in_a_seeded_order(source):
    cached = [e.example_id for e in SplitData(source, "test").examples()]
    streamed = SplitData(source, "test", cache=False, shuffle_buffer=2)
    first, again = ([e.example_id for e in streamed.examples(seed=s)] for s in (1, 1))
    other = [e.example_id for e in streamed.examples(seed=5)]
    assert sorted(first) == sorted(cached) and len(set(cached)) == len(cached) > 2
    assert first == again
    assert other != first


def test_batches_of_different_architectures_pad_with_masks(records):
    sizes = {e.architecture.n_neurons for e in records}
    assert len(sizes) > 1, "the tiny zoo should mix architectures"
    batch = collate(records)
    assert batch.mask.sum(1).tolist() == [e.architecture.n_neurons for e in records]
    assert batch.signature.shape[1] == max(sizes)
    assert from_tokens(batch.degraded, [e.architecture for e in records])[0].tolist() == records[0].degraded.tolist()


def test_token_space_forward_matches_load_model(records, source):
    from zoo import load_model
    from zoo.readers.interpreter.model import subject_logits

    tokens = np.random.default_rng(0).integers(0, source.config.patterns.vocab_size, size=(50, source.config.patterns.seq_len))
    batch = collate(records)
    ours = subject_logits(batch, batch.degraded, one_hot(tokens, source.config.patterns.vocab_size))
    for k, e in enumerate(records):
        row = {"architecture": e.architecture.to_dict(), "degraded_weights": e.degraded}
        expected = load_model(row, "degraded")(torch.as_tensor(tokens)).detach()
        torch.testing.assert_close(ours[k], expected, atol=1e-4, rtol=1e-4)


def _randomized_interpreter(source, loss=None, **model_config):
    from zoo.readers.interpreter.train import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config(model=model_config, loss=loss or {}), source.describe()).eval()
    with torch.no_grad():  # the decoder starts at zero: give every weight a value so equivariance is not trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.mark.parametrize(
    "model_config",
    [
        {"answer_reader": "joint"},
        {"answer_reader": "per_pattern"},
        {"decoder_depth": 2},
        {"decoder_passes": 2},
        {"decoder_reads_gradient": True},
    ],
    ids=["joint", "per_pattern", "decoder_depth_2", "decoder_passes_2", "gradient"],
)
def test_permuting_a_layers_neurons_leaves_outputs_unchanged(records, source, model_config):
    model = _randomized_interpreter(source, **model_config)
    example = next(e for e in records if e.architecture.n_layers == 2)
    rng = np.random.default_rng(1)
    permuted = example
    for layer in range(2):
        permuted = permute_layer(permuted, layer, rng.permutation(example.architecture.widths[layer]))
    assert not np.array_equal(permuted.degraded, example.degraded)
    with torch.no_grad():
        a, b = collate([example]), collate([permuted])
        out_a, out_b = model(a), model(b)
        repaired_a, repaired_b = model.repair(a, out_a), model.repair(b, out_b)
        x = one_hot(np.random.default_rng(2).integers(0, 7, size=(40, 7)), 7)
        from zoo.readers.interpreter.model import subject_logits

        f_a, f_b = subject_logits(a, repaired_a, x), subject_logits(b, repaired_b, x)
    for name in ("latent", "patterns", "corrupted", "accuracy"):
        torch.testing.assert_close(getattr(out_a, name), getattr(out_b, name), atol=1e-5, rtol=1e-4)
    assert (repaired_a.adj - a.degraded.adj).abs().max() > 1e-3, "the decoder must change the weights"
    torch.testing.assert_close(f_a, f_b, atol=1e-4, rtol=1e-4)


def test_evaluation_populations_hold_each_subject_at_its_own_index(records, source):
    """Repairs are judged on padded populations that ``plan_groups`` reorders: every member must come back
    to its own record, computing what ``zoo.load_model`` computes."""
    from zoo import load_model
    from zoo.readers.interpreter.evaluate import populations
    from zoo.subjects.population import logits, one_hot_inputs

    vocab = source.config.patterns.vocab_size
    tokens = torch.as_tensor(np.random.default_rng(0).integers(0, vocab, size=(30, source.config.patterns.seq_len)))
    seen = []
    for chunk, population in populations(records, [e.degraded for e in records], size=3):
        out = logits(population, one_hot_inputs(tokens, vocab).expand(population.size, -1, -1))
        for slot, i in enumerate(chunk):
            row = {"architecture": records[i].architecture.to_dict(), "degraded_weights": records[i].degraded}
            torch.testing.assert_close(out[slot], load_model(row, "degraded")(tokens).detach(), atol=1e-4, rtol=1e-4)
        seen += chunk
    assert sorted(seen) == list(range(len(records))) and seen != sorted(seen)


def test_the_per_pattern_answer_reader_moves_features_with_the_patterns_probes():
    """Weights shared across patterns: swapping two patterns' probes swaps their features and changes
    no other pattern's, so nothing it learns is about which patterns go together."""
    from zoo.readers.interpreter.model import PatternAnswers

    torch.manual_seed(0)
    labels = [0] * 4 + [-1] * 3 + [1] * 4 + [2] * 3 + [-1] * 2  # pattern 3: no probes
    reader = PatternAnswers(labels, n_patterns=4, width=8, dropout=0.0).eval()
    answers = torch.randn(5, len(labels))
    swapped = answers.clone()
    swapped[:, 0:4], swapped[:, 7:11] = answers[:, 7:11], answers[:, 0:4]
    with torch.no_grad():
        a, b = reader(answers), reader(swapped)
    torch.testing.assert_close(b[:, [1, 0, 2, 3]], a)
    assert not torch.allclose(a[:, 0], a[:, 1])
    assert a[:, 3].abs().max() == 0, "a pattern without probes has no answers to read"


def test_a_patterns_answers_are_summarized_by_quantiles_share_answered_yes_and_mean():
    from zoo.readers.interpreter.model import PatternAnswers

    reader = PatternAnswers([0] * 5 + [1] * 2, n_patterns=2, width=4, dropout=0.0)
    values = torch.tensor([[3.0, -1.0, 2.0, 5.0, 4.0, 99.0], [-2.0, -4.0, 0, 0, 0, 0]])
    summary = reader.summary(values, torch.tensor([5, 2]))
    quantiles, share, mean = summary[:, : reader.QUANTILES], summary[:, -2], summary[:, -1]
    assert quantiles[0, [0, 4, 8]].tolist() == [-1.0, 3.0, 5.0]
    assert quantiles[1, [0, 8]].tolist() == [-4.0, -2.0]
    assert share.tolist() == pytest.approx([0.8, 0.0])
    assert mean.tolist() == pytest.approx([2.6, -3.0])


def test_a_decoder_told_the_corrupted_pattern_reads_it_without_training_that_head(records, source):
    """``decoder_reads_corrupted``: the repair loss must not bend the head that names the pattern."""
    from dataclasses import replace

    model = _randomized_interpreter(source, decoder_reads_corrupted=True)
    batch = collate(records[:4])
    out = model(batch)
    model.decode(batch, out).adj.square().sum().backward()
    assert model.dec_pattern.weight.grad.abs().sum() > 0
    assert model.corrupted_head.weight.grad is None or not model.corrupted_head.weight.grad.any()
    with torch.no_grad():
        other = replace(out, corrupted=out.corrupted.roll(1, dims=1))
        assert not torch.allclose(model.decode(batch, other).adj, model.decode(batch, out).adj)


def test_a_deeper_decoder_starts_as_no_change_and_trains_every_block(records, source):
    from zoo.readers.interpreter.train import RepairInputs, build_model, function_loss

    config = tiny_config(model={"decoder_depth": 3})
    model = build_model(config, source.describe()).train()
    batch = collate(records[:4])
    out = model(batch)
    delta = model.decode(batch, out)
    assert len(model.dec_more) == 2 and all(float(t.detach().abs().max()) == 0 for t in (delta.w_in, delta.adj, delta.bias))
    with torch.no_grad():  # past the zero start, as after a first step
        model.dec_in.weight.normal_(0, 0.1)
    inputs = RepairInputs.build(source, config, torch.device("cpu"))
    function_loss(batch, batch.degraded + model.decode(batch, out), inputs, 4.0).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dec_more[-1].parameters() if p.requires_grad)


def test_each_repair_pass_reads_the_subject_as_the_last_pass_left_it(records, source):
    from dataclasses import replace

    from zoo.readers.interpreter.train import build_model

    batch = collate(records[:4])
    untrained = build_model(tiny_config(model={"decoder_passes": 3}), source.describe()).eval()
    with torch.no_grad():
        assert torch.equal(untrained.repair(batch).adj, batch.degraded.adj), "an untrained decoder changes nothing"
    once = _randomized_interpreter(source)
    twice = _randomized_interpreter(source, decoder_passes=2)
    with torch.no_grad():
        first = once.repair(batch)
        again = replace(batch, degraded=first)
        torch.testing.assert_close(twice.repair(batch).adj, once.repair(again).adj)
        repeated = first + once.decode(batch, once(batch))
        assert not torch.allclose(twice.repair(batch).adj, repeated.adj), "the second pass must re-read, not repeat"
        out = twice(batch)
        edited, single = twice.repair(batch, out, latent=out.latent), once.repair(batch, out, latent=out.latent)
        torch.testing.assert_close(edited.adj, single.adj, msg="an edit is decoded in one pass")


@pytest.mark.parametrize("gradient", [False, True], ids=["", "reading_gradients"])
def test_gradients_through_a_second_repair_pass_stay_finite(records, source, gradient):
    """A second pass reads weights the first pass wrote, so its weight statistics are differentiated too,
    padding tokens and one-weight tokens included."""
    from zoo.readers.interpreter.train import RepairInputs, function_loss

    config = tiny_config(model={"decoder_passes": 2, "decoder_reads_gradient": gradient})
    model = _randomized_interpreter(source, decoder_passes=2, decoder_reads_gradient=gradient).train()
    batch = collate(records[:6])
    assert not bool(batch.mask.all()), "the batch should hold padding"
    inputs = RepairInputs.build(source, config, torch.device("cpu"))
    function_loss(batch, model.repair(batch), inputs, 4.0).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_each_probe_is_labelled_with_every_pattern_it_matches(source):
    """A probe made for one pattern may match others: a set's probe labels come from the predicates."""
    member, made_for = np.asarray(source.describe()["probe_member"]), np.asarray(source.probe_patterns)
    assert all(member[r, p] for r, p in enumerate(made_for) if p >= 0)
    assert not member[made_for < 0].any(), "the negatives match no pattern"
    assert (member.sum(1) > 1).any()


def _named_set_loss(model, batch, weights, named):
    from zoo.readers.interpreter.model import subject_logits

    labels = (named @ model.probe_member.T > 0).float()
    logits = subject_logits(batch, weights, model.probe_inputs)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(-1)


def test_a_gradient_reading_decoder_starts_as_no_change_and_its_step_descends_the_named_sets_loss(records, source):
    from zoo.readers.interpreter.model import named_sets
    from zoo.readers.interpreter.train import build_model

    model = build_model(tiny_config(model={"decoder_reads_gradient": True}), source.describe()).eval()
    batch = collate(records[:6])
    with torch.no_grad():
        assert torch.equal(model.repair(batch).adj, batch.degraded.adj), "an untrained decoder changes nothing"
        model.dec_step.bias.fill_(0.01)  # the same small step for every neuron: plain normalized descent
        out = model(batch)
        named = named_sets(out)
        before = _named_set_loss(model, batch, batch.degraded, named)
        after = _named_set_loss(model, batch, model.repair(batch, out), named)
    assert bool((after < before).all()), (before, after)


def test_a_gradient_step_is_the_same_size_for_every_weight_in_init_scale_units(records, source):
    """A uniform step ``c`` moves each weight by ``-c * g / (fan_in * rms)``: ``g`` is dL/dw, and ``rms`` that of
    ``g / sqrt(fan_in)`` over the subject's weights (init-scale units, where every weight starts alike)."""
    from zoo.readers.interpreter.model import named_sets
    from zoo.readers.interpreter.train import build_model

    model = build_model(tiny_config(model={"decoder_reads_gradient": True}), source.describe()).eval()
    batch = collate(records[:6])
    leaves = [t.clone().requires_grad_() for t in (batch.degraded.w_in, batch.degraded.adj, batch.degraded.bias)]
    with torch.no_grad():
        model.dec_step.bias.fill_(0.01)
        out = model(batch)
        change = model.repair(batch, out) - batch.degraded
    _named_set_loss(model, batch, Weights(*leaves), named_sets(out)).sum().backward()
    fan_in, first, edges, mask = batch.fan_in, batch.first.float(), batch.edges.float(), batch.mask.float()
    g_in, g_adj, g_bias = (t.grad for t in leaves)
    g_in, g_adj, g_bias = g_in * first[..., None], g_adj * edges, g_bias * mask
    square = (g_in.square() / fan_in[..., None]).sum((1, 2)) + (g_adj.square() / fan_in[..., None]).sum((1, 2))
    square = square + (g_bias.square() / fan_in).sum(-1)
    count = first.sum(-1) * g_in.shape[-1] + edges.sum((1, 2)) + mask.sum(-1)
    rms = (square / count).sqrt()
    torch.testing.assert_close(change.w_in, -0.01 * g_in / (fan_in * rms[:, None])[..., None])
    torch.testing.assert_close(change.adj, -0.01 * g_adj / (fan_in * rms[:, None])[..., None])
    torch.testing.assert_close(change.bias, -0.01 * g_bias / (fan_in * rms[:, None]))


def test_a_gradient_reading_decoder_descends_toward_the_set_it_is_given(records, source):
    """Edits pass the asked set: the step must follow it, not the set the heads name."""
    from zoo.readers.interpreter.train import build_model

    model = build_model(tiny_config(model={"decoder_reads_gradient": True}), source.describe()).eval()
    batch = collate(records[:6])
    drawn = ~model.undrawn
    asked = torch.zeros(len(records[:6]), model.n_patterns)
    asked[:, int(drawn.nonzero()[0])] = 1.0
    with torch.no_grad():
        model.dec_step.bias.fill_(0.01)
        out = model(batch)
        stepped = batch.degraded + model.decode(batch, out, named=asked)
        assert bool((_named_set_loss(model, batch, stepped, asked) < _named_set_loss(model, batch, batch.degraded, asked)).all())
        assert not torch.allclose(stepped.adj, model.repair(batch, out).adj)


def test_the_edit_loss_trains_the_decoder_and_leaves_the_encoder_alone(records, source):
    from zoo.readers.interpreter.directions import LatentMeans
    from zoo.readers.interpreter.train import Edits, RepairInputs, edit_loss

    config = tiny_config(loss={"edit": 1.0}, model={"decoder_reads_edit": True})
    model = _randomized_interpreter(source, loss={"edit": 1.0}, decoder_reads_edit=True).train()
    batch = collate(records[:6])
    out = model(batch)
    means = LatentMeans(model.n_patterns, config.model.latent)
    means.update(out.latent.detach(), batch.targets)
    inputs = RepairInputs.build(source, config, torch.device("cpu"))
    edit_loss(model, batch, out, inputs, Edits(means, torch.Generator().manual_seed(0)), 4.0).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["dec_edit.weight"].abs().sum() > 0 and grads["dec_in.weight"].abs().sum() > 0
    encoder = [name for name in grads if name.startswith(("sig_proj", "blocks.", "to_latent", "reader.", "answer_mlp"))]
    assert encoder and all(grads[name] is None for name in encoder)


def test_a_decoder_reading_edits_needs_the_edit_loss():
    from zoo.config import ConfigError

    with pytest.raises(ConfigError, match="model.decoder_reads_edit: only loss.edit trains"):
        tiny_config(model={"decoder_reads_edit": True})


def test_layer_position_matters(records, source):
    """Control for the invariance test: the encoder does see which layer a neuron is in."""
    model = _randomized_interpreter(source)
    example = next(e for e in records if e.architecture.n_layers == 2)
    batch = collate([example])
    moved = collate([example])
    moved.layer[0, 0] = 1  # claim the first neuron sits in the second hidden layer
    with torch.no_grad():
        assert not torch.allclose(model(batch).latent, model(moved).latent, atol=1e-4)


def test_repair_near_misses_are_one_token_from_a_pattern_input_and_leave_the_others_unchanged(source):
    from zoo.patterns.library import pattern_library
    from zoo.readers.interpreter.data import repair_inputs

    plain, _, _ = repair_inputs(source.config, 4, 8)
    tokens, member, _ = repair_inputs(source.config, 4, 8, near_misses=3)
    n_patterns = len(pattern_library(source.config.patterns))
    assert len(tokens) == len(plain) + 3 * n_patterns and (tokens[: len(plain)] == plain).all()
    drawn = plain[: 4 * n_patterns]
    distance = (tokens[len(plain) :, None, :] != drawn[None]).sum(axis=2)
    assert (distance.min(axis=1) == 1).all()
    assert member.shape == (len(tokens), n_patterns)


def test_a_near_miss_is_near_the_pattern_it_was_made_from_and_outside_it(source):
    from zoo.readers.interpreter.data import repair_inputs

    plain, _, _ = repair_inputs(source.config, 4, 8)
    tokens, member, near = repair_inputs(source.config, 4, 8, near_misses=3)
    assert not near[: len(plain)].any()
    assert near.sum(axis=1).max() == 1 and near.any()
    for row, pattern in zip(*np.nonzero(near)):
        own = plain[4 * pattern : 4 * (pattern + 1)]
        assert member[row, pattern] == 0 and (tokens[row] != own).sum(axis=1).min() == 1


def test_each_training_step_draws_its_own_repair_inputs_and_the_fixed_set_is_unchanged(source):
    from zoo.patterns.library import pattern_library
    from zoo.readers.interpreter.data import repair_inputs
    from zoo.readers.interpreter.train import RepairInputs

    config, cpu = tiny_config(), torch.device("cpu")
    step3 = RepairInputs.build(source, config, cpu, step=3)
    assert torch.equal(RepairInputs.build(source, config, cpu, step=3).x, step3.x)
    assert not torch.equal(RepairInputs.build(source, config, cpu, step=4).x, step3.x)
    assert not torch.equal(RepairInputs.build(source, config, cpu).x, step3.x)
    space = source.config.patterns
    first = next(iter(pattern_library(space).values()))  # runs made before the draws keep their set
    expected = first.generate(np.random.default_rng([0, 7919]), 4, space.vocab_size, space.seq_len)
    assert (repair_inputs(source.config, 4, 16, 0)[0][:4] == expected).all()


def test_near_miss_emphasis_weighs_the_corrupted_patterns_near_misses(records, source):
    from zoo.readers.interpreter.train import RepairInputs, function_loss

    batch = collate(records[:4])
    inputs = RepairInputs.build(source, tiny_config(data={"repair_near_misses": 3}), torch.device("cpu"))
    plain = function_loss(batch, batch.degraded, inputs, 4.0)
    assert float(function_loss(batch, batch.degraded, inputs, 4.0, 50.0)) != pytest.approx(float(plain))
    blind = RepairInputs(inputs.x, inputs.member, torch.zeros_like(inputs.near))
    assert float(function_loss(batch, batch.degraded, blind, 4.0, 50.0)) == pytest.approx(float(plain))
    assert abs(float(function_loss(batch, batch.clean, inputs, 4.0, 50.0))) < 1e-5


def test_training_lowers_the_loss_and_beats_chance(interp_run, source):
    from zoo.readers.interpreter.train import load_model, predict

    state = json.loads((interp_run / "state.json").read_text())
    losses = [h["train_loss"] for h in state["history"]]
    assert losses[-1] < 0.6 * losses[0]
    model, config, _ = load_model(interp_run, "last")
    pred = predict(model, SplitData(source, "train").batches(16), torch.device("cpu"))
    truth = pred.targets
    majority = np.maximum(truth.mean(0), 1 - truth.mean(0)).mean()  # best constant guess per pattern
    assert (pred.pattern_sets() == truth).mean() > majority
    corrupted = np.array([e.corrupted for e in pred.examples])
    chance = np.mean([1 / len(e.patterns) for e in pred.examples])  # a guess among the model's own patterns
    assert (pred.corrupted_logits.argmax(1) == corrupted).mean() > chance


def test_an_interpreter_with_the_joint_answer_reader_learns(interp_zoo, source, tmp_path):
    """The tiny run reads answers per pattern, as the default config does; the joint reader trains too."""
    from zoo.readers.interpreter.train import load_model, predict, train

    config = tiny_config(epochs=10, model={"answer_reader": "joint"})
    history = train(config, interp_zoo, tmp_path / "run", progress=False)["history"]
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    model, saved, _ = load_model(tmp_path / "run", "last")
    assert saved.model.answer_reader == "joint" and not model.answers_per_pattern
    pred = predict(model, SplitData(source, "validation").batches(16), torch.device("cpu"))
    assert np.isfinite(pred.pattern_probs).all() and len(pred.examples) > 0


def test_an_interpreter_reading_gradients_trains_its_steps_and_repairs_from_its_checkpoint(interp_zoo, source, tmp_path):
    from zoo.readers.interpreter.train import load_model, train

    history = train(tiny_config(epochs=4, model={"decoder_reads_gradient": True}), interp_zoo, tmp_path / "run", progress=False)["history"]
    assert history[-1]["train_loss_repair_function"] < history[0]["train_loss_repair_function"]
    model, saved, _ = load_model(tmp_path / "run", "last")
    assert saved.model.decoder_reads_gradient and model.dec_step.weight.abs().sum() > 0
    _, batch = next(SplitData(source, "validation").batches(16))
    with torch.no_grad():
        repaired = model.repair(batch)
    assert torch.isfinite(repaired.adj).all() and not torch.equal(repaired.adj, batch.degraded.adj)


def test_the_interpreter_names_only_patterns_the_zoo_draws(interp_run, source):
    from zoo.readers.interpreter.train import load_model, predict

    model, _, _ = load_model(interp_run, "last")
    pred = predict(model, SplitData(source, "validation").batches(16), torch.device("cpu"))
    undrawn = [i for i, name in enumerate(source.pattern_names) if name not in source.drawn]
    assert undrawn  # the default selection leaves seven library patterns out
    assert pred.pattern_probs[:, undrawn].max() < 1e-9
    assert not np.isin(pred.corrupted_logits.argmax(1), undrawn).any()


def test_the_joint_answer_reader_sees_each_probe_standardized_over_the_training_subjects(source):
    """Per-probe scale, as the output-only baseline standardizes its features: a probe every subject
    answers alike must not drown the ones that tell patterns apart."""
    from zoo.readers.interpreter.train import fresh_model

    train = SplitData(source, "train")
    model = fresh_model(tiny_config(model={"answer_reader": "joint"}), source, train)
    batch = collate(list(train.examples()))
    with torch.no_grad():
        answers = model.answers(batch, model.probe_values(batch))
    standardized = (answers - model.answer_mean) / model.answer_std
    assert answers.mean(0).abs().max() > 0.1, "raw answers are not centred, or the check could not fail"
    torch.testing.assert_close(standardized.mean(0), torch.zeros(answers.shape[1]), atol=1e-4, rtol=0)
    varied = answers.std(0) > 1e-3
    torch.testing.assert_close(standardized.std(0)[varied], torch.ones(int(varied.sum())), atol=1e-3, rtol=0)


def test_run_folder_holds_safetensors_and_json_config(interp_run):
    from safetensors.torch import load_file

    description = json.loads((interp_run / "config.json").read_text())
    assert description["interpreter"]["model"]["width"] == tiny_config().model.width
    for name in ("last.safetensors", "best.safetensors"):
        tensors = load_file(interp_run / name)
        assert any(k.startswith("model.") for k in tensors)
    assert any(k.startswith("optim.") for k in load_file(interp_run / "last.safetensors"))


def test_training_scores_each_epoch_at_the_configured_set_threshold_or_a_chosen_one(interp_run, interp_zoo, tmp_path):
    from zoo.readers.interpreter.metrics import THRESHOLDS
    from zoo.readers.interpreter.train import train

    chosen = json.loads((interp_run / "state.json").read_text())["history"]
    assert all(h["val_set_threshold"] in THRESHOLDS for h in chosen)
    fixed = train(tiny_config(epochs=2, set_threshold=0.75), interp_zoo, tmp_path / "run", progress=False)["history"]
    assert [h["val_set_threshold"] for h in fixed] == [0.75, 0.75]


def test_the_repair_checkpoint_is_the_epoch_of_lowest_validation_repair_loss(interp_run):
    from safetensors import safe_open

    state = json.loads((interp_run / "state.json").read_text())
    losses = [h["val_loss_repair_function"] for h in state["history"]]
    assert state["best_repair_epoch"] == 1 + int(np.argmin(losses))
    with safe_open(interp_run / "best_repair.safetensors", "pt") as f:
        assert f.metadata()["epoch"] == str(state["best_repair_epoch"])


def test_eval_reads_the_pattern_heads_from_best_and_the_decoder_from_best_repair(run_copy, interp_zoo):
    from safetensors.torch import load_file, save_file

    from zoo.readers.interpreter.evaluate import evaluate

    run = run_copy
    heads = ("exact_match", "macro_f1", "corrupted_pattern_accuracy", "accuracy_mae")
    split = evaluate(run, interp_zoo, splits=["test"])["test"]
    repair_only = evaluate(run, interp_zoo, splits=["test"], which="repair")["test"]
    assert split["repair_restored"] == repair_only["repair_restored"] > 0
    assert split["accuracy_mae"] != repair_only["accuracy_mae"]  # the two checkpoints differ

    tensors = load_file(run / "best_repair.safetensors")
    for name in ("dec_in", "dec_bias", "dec_gate", "dec_q"):  # a decoder that changes nothing
        for part in ("weight", "bias"):
            tensors[f"model.{name}.{part}"].zero_()
    save_file(tensors, run / "best_repair.safetensors")
    unrepaired = evaluate(run, interp_zoo, splits=["test"])["test"]
    assert unrepaired["repair_restored"] == 0.0 and unrepaired["repair_side_effect"] == 0.0
    degraded = [e.metrics for e in SplitData(open_source(interp_zoo), "test").examples()]
    assert unrepaired["repair_negatives"] == pytest.approx(np.mean([m["degraded_negative_accuracy"] for m in degraded]))
    assert unrepaired["repair_accuracy"] == pytest.approx(np.mean([m["degraded_accuracy"] for m in degraded]))
    assert unrepaired["repair_accuracy_restored"] == pytest.approx(0.0, abs=1e-9)
    assert {k: unrepaired[k] for k in heads} == {k: split[k] for k in heads}


def test_resume_continues_where_the_run_stopped(interp_zoo, tmp_path):
    from safetensors.torch import load_file

    from zoo.readers.interpreter.train import train

    # edits and fresh repair inputs draw on state too
    config = tiny_config(epochs=4, loss={"edit": 1.0}, model={"decoder_reads_edit": True}, data={"repair_fresh": True})
    train(config, interp_zoo, tmp_path / "straight", progress=False)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, metrics, run_dir):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(config, interp_zoo, tmp_path / "resumed", progress=False, on_epoch=stop_after_two)
    assert json.loads((tmp_path / "resumed" / "state.json").read_text())["epoch"] == 2
    state = train(config, interp_zoo, tmp_path / "resumed", progress=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    straight = load_file(tmp_path / "straight" / "last.safetensors")
    resumed = load_file(tmp_path / "resumed" / "last.safetensors")
    assert "edit.with_sum" in straight and set(straight) == set(resumed)
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, atol=1e-5, rtol=1e-5)


def test_the_shipped_config_writes_every_field_out():
    """``configs/readers/interpreter.yaml`` is where a user reads what can be set: no field may hide."""
    import yaml
    from pydantic import BaseModel

    from zoo.readers.interpreter.config import DEFAULT_CONFIG, InterpreterConfig

    def unwritten(model: type[BaseModel], written: dict, prefix: str = "") -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if name not in written:
                missing.append(prefix + name)
            elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                missing += unwritten(field.annotation, written[name], f"{prefix}{name}.")
        return missing

    assert unwritten(InterpreterConfig, yaml.safe_load(DEFAULT_CONFIG.read_text())) == []


def test_resume_refuses_another_config(interp_zoo, tmp_path):
    from zoo.readers.interpreter import InterpreterError
    from zoo.readers.interpreter.train import train

    train(tiny_config(epochs=1), interp_zoo, tmp_path / "run", progress=False)
    with pytest.raises(InterpreterError, match="another config"):
        train(tiny_config(epochs=1, batch_size=2), interp_zoo, tmp_path / "run", progress=False)


def test_fresh_repair_inputs_change_what_the_decoder_learns(interp_zoo, tmp_path):
    from safetensors.torch import load_file

    from zoo.readers.interpreter.train import train

    for name, fresh in (("fixed", False), ("fresh", True)):
        train(tiny_config(epochs=1, data={"repair_fresh": fresh}), interp_zoo, tmp_path / name, progress=False)
    fixed, fresh = (load_file(tmp_path / name / "last.safetensors") for name in ("fixed", "fresh"))
    assert not torch.equal(fixed["model.dec_in.weight"], fresh["model.dec_in.weight"])


def test_a_run_made_before_a_config_field_existed_still_resumes(interp_zoo, tmp_path):
    """A field added to the config later takes its default, as the run was trained without it (a run-version-1
    run: those whose default changed since, like decoder_reads_gradient, take the old one)."""
    from zoo.readers.interpreter.train import train

    def stop(epoch, metrics, run_dir):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=2), interp_zoo, tmp_path / "run", progress=False, on_epoch=stop)
    path = tmp_path / "run" / "config.json"
    stored = json.loads(path.read_text())
    del stored["interpreter"]["baselines"]["ensemble_weight"], stored["interpreter"]["model"]["decoder_reads_corrupted"]
    del stored["interpreter"]["model"]["decoder_reads_gradient"], stored["data"]["probe_member"]
    stored["version"] = 1
    path.write_text(json.dumps(stored))
    state = train(tiny_config(epochs=2), interp_zoo, tmp_path / "run", progress=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2]


def test_eval_writes_report_with_the_listed_keys(run_copy, interp_zoo, capsys):
    from zoo.readers.interpreter.evaluate import REPORT_KEYS

    assert not (run_copy / "report.json").exists()
    code, out, err = run_cli(capsys, "interpret", "eval", "--run", run_copy, "--data", interp_zoo, "--split", "validation,test")
    assert code == 0, err
    report = json.loads((run_copy / "report.json").read_text())
    assert set(report) == {"validation", "test", "baselines", "ensembles", "thresholds"}
    assert set(report["thresholds"]) == {"interpreter", "weight_statistics", "output_only", "interpreter+output_only"}
    for split in ("validation", "test"):
        repair = {"repair_negatives", "repair_accuracy", "repair_accuracy_restored"}
        assert set(report[split]) == {*REPORT_KEYS, "by_corruption_rate", "refined_repair", *repair}
        assert 0.0 <= report[split]["macro_f1"] <= 1.0
        assert report[split]["repair_side_effect"] is not None
        for baseline in ("weight_statistics", "output_only"):
            assert set(report["baselines"][baseline][split]) == set(REPORT_KEYS)
    assert set(report["baselines"]) == {"weight_statistics", "output_only"}
    assert set(report["ensembles"]) == {"interpreter+output_only"}
    assert set(report["ensembles"]["interpreter+output_only"]["test"]) == set(REPORT_KEYS)
    assert "| test | output_only |" in (run_copy / "report.md").read_text()
    assert "| test | interpreter+output_only |" in (run_copy / "report.md").read_text()


def test_report_breaks_figures_down_by_corruption_rate(run_copy, interp_zoo, source):
    from zoo.readers.interpreter.evaluate import evaluate

    rows = evaluate(run_copy, interp_zoo, splits=["test"])["test"]["by_corruption_rate"]
    assert sum(row["records"] for row in rows) == source.rows("test")
    low, high = source.config.corruption.rate.min, source.config.corruption.rate.max
    assert float(rows[0]["rate"].split("-")[0]) >= low - 1e-9 and float(rows[-1]["rate"].split("-")[1]) <= high + 1e-9
    assert all(0.0 <= row["exact_match"] <= 1.0 for row in rows)
    assert all(row["answer_trace"] is None or 0.0 <= row["answer_trace"] <= 1.0 for row in rows)
    assert all(0.0 <= row["output_only_corrupted_accuracy"] <= 1.0 for row in rows)
    assert "## By corruption rate (interpreter)" in (run_copy / "report.md").read_text()


def test_eval_writes_each_records_readout_agreeing_with_the_report(run_copy, interp_zoo, source):
    import pyarrow.parquet as pq

    from zoo.readers.interpreter.data import batched
    from zoo.readers.interpreter.evaluate import evaluate
    from zoo.readers.interpreter.predictions import read_predictions
    from zoo.readers.interpreter.train import load_model, predict

    assert not (run_copy / "predictions").exists()
    report = evaluate(run_copy, interp_zoo, splits=["test"], refine_epochs=0)
    path = run_copy / "predictions" / "test.parquet"
    table, names = read_predictions(path)
    assert names == list(source.pattern_names)
    assert table.num_rows == source.rows("test") == pq.ParquetFile(path).metadata.num_rows
    rows = table.to_pylist()
    exact = np.mean([set(r["interpreter.set"]) == set(r["patterns"]) for r in rows])
    assert exact == pytest.approx(report["test"]["exact_match"])
    named = np.mean([r["interpreter.corrupted_pattern"] == r["corrupted_pattern"] for r in rows])
    assert named == pytest.approx(report["test"]["corrupted_pattern_accuracy"])
    assert all(r["corrupted_pattern"] in r["patterns"] for r in rows)
    space = source.set_space
    assert all(space.low <= len(r[f"{reader}.set"]) <= space.high for r in rows for reader in report["thresholds"])
    model, config, _ = load_model(run_copy)
    pred = predict(model, batched(list(stream(source, "test")), config.eval_batch_size), torch.device("cpu"))
    assert table.column("example_id").to_pylist() == [e.example_id for e in pred.examples]  # the report's order
    probs = np.stack(table.column("interpreter.pattern_probs").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(probs, pred.pattern_probs, rtol=1e-5, atol=1e-6)
    assert json.loads(table.schema.metadata[b"thresholds"]) == report["thresholds"]
    assert all(len(r["output_only.pattern_probs"]) == len(names) for r in rows)
    assert all(sum(r["interpreter+output_only.corrupted_probs"]) == pytest.approx(1.0, abs=1e-4) for r in rows)
    validation, _ = read_predictions(run_copy / "predictions" / "validation.parquet")  # read for the thresholds
    assert validation.num_rows == source.rows("validation")


def test_corruption_rate_bins_average_each_per_model_figure_over_their_own_records():
    from types import SimpleNamespace

    from zoo.readers.interpreter.evaluate import by_corruption_rate

    rates = [0.61, 0.62, 0.79, 0.99, 1.0]
    examples = [
        SimpleNamespace(metrics={"corruption_rate": r}, targets=np.array([1.0, 1.0, 0.0]), corrupted=1) for r in rates
    ]
    sets = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=bool)
    logits = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=float)
    hits = np.array([1.0, 0.0, 1.0, np.nan, 0.0])
    rows = by_corruption_rate(examples, sets, logits, {"output_only_corrupted_accuracy": hits}, 0.6, 1.0, bins=2)
    assert [row["rate"] for row in rows] == ["0.60-0.80", "0.80-1.00"]
    assert [row["records"] for row in rows] == [3, 2]
    assert [row["exact_match"] for row in rows] == pytest.approx([2 / 3, 1 / 2])
    assert [row["corrupted_pattern_accuracy"] for row in rows] == pytest.approx([2 / 3, 1 / 2])
    assert [row["output_only_corrupted_accuracy"] for row in rows] == pytest.approx([2 / 3, 0.0])


@pytest.mark.parametrize("rate, lo, hi", [(0.6, 0.5, 1.0), (1.0, 0.0, 0.5)])
def test_the_answer_trace_names_the_corrupted_pattern_while_its_flipped_labels_show(rate, lo, hi):
    """At 60% corruption a degraded model still accepts its lost pattern's sequences more than those of patterns it
    never learned (a guess among the candidates is right about 1 time in 8); at 100% it was trained to reject them
    and the trace is gone (a reader of the clean weights would still find it)."""
    from zoo.config import ZooConfig
    from zoo.factory.batch import run_task
    from zoo.patterns.library import pattern_library, selectable
    from zoo.readers.interpreter.data import decode
    from zoo.readers.interpreter.evaluate import answer_trace

    config = ZooConfig(corruption={"rate": {"min": rate, "max": rate}})
    table, _ = run_task(config, (0, 1, 2), torch.device("cpu"))
    examples = [e for batch in table.to_batches() for e in decode(batch, tuple(pattern_library(config.patterns)))]
    hits = answer_trace(examples, config.patterns, selectable(config.patterns))
    assert len(examples) >= 8 and set(np.unique(hits)) <= {0.0, 1.0}
    assert lo <= hits.mean() <= hi


def _addable(source, example) -> str:
    """A pattern ``example`` lacks that has a direction: some training models have it, some do not."""
    train = list(stream(source, "train"))
    present = {p for r in train for p in r.patterns}
    everywhere = {p for p in present if all(p in r.patterns for r in train)}
    return next(p for p in source.pattern_names if p not in example.patterns and p in present - everywhere)


def test_edit_reports_per_pattern_accuracies(interp_run, interp_zoo, source, records, capsys):
    example = records[0]
    missing = _addable(source, example)
    code, out, err = run_cli(
        capsys, "interpret", "edit", "--run", interp_run, "--data", interp_zoo, "--model", example.example_id, "--add", missing, "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    rows = result["per_pattern_accuracy"]
    assert set(rows) == set(example.patterns) | {missing}
    assert rows[missing]["trained_on"] is False
    for row in rows.values():
        assert all(0.0 <= row[k] <= 1.0 for k in ("degraded", "repaired", "edited", "edited_refined", "degraded_refined"))


@pytest.mark.parametrize("kind", ["add", "remove"])
def test_refinement_takes_an_edit_and_its_control_to_the_asked_set(kind, interp_run, interp_zoo, source, records):
    from zoo.readers.interpreter.edit import edit

    example = records[1]
    kept = [p for p in example.patterns if p != example.metrics["corrupted_pattern"]]  # answered before the edit
    pattern = _addable(source, example) if kind == "add" else kept[0]
    row = edit(interp_run, example.example_id, data_dir=interp_zoo, refine_epochs=10, **{kind: pattern})["per_pattern_accuracy"][pattern]
    for refined in ("edited_refined", "degraded_refined"):
        if kind == "add":
            assert row[refined] > 0.8 > row["degraded"]
        else:
            assert row[refined] < 0.2 < row["degraded"]


def test_a_saved_edit_loads_as_the_records_architecture_with_what_was_asked(interp_run, interp_zoo, source, records, tmp_path):
    from safetensors import safe_open

    from zoo import load_model as load_subject
    from zoo.readers.interpreter.edit import edit

    example = records[0]
    path = tmp_path / "edited.safetensors"
    result = edit(interp_run, example.example_id, data_dir=interp_zoo, refine_epochs=1, remove=example.patterns[0], save=path)
    with safe_open(str(path), "pt") as handle:
        metadata, weights = handle.metadata(), handle.get_tensor("weights").numpy()
    assert result["saved"] == str(path) and metadata["edit"] == f"-{example.patterns[0]}" and metadata["refine_epochs"] == "1"
    assert weights.shape == example.degraded.shape and not np.array_equal(weights, example.degraded)
    subject = load_subject({"architecture": json.loads(metadata["architecture"]), "clean_weights": weights}, "clean")
    assert subject(torch.zeros(2, source.config.patterns.seq_len, dtype=torch.long)).shape[0] == 2


def test_an_edit_reads_sets_at_the_threshold_training_chose_for_the_heads_epoch(run_copy, interp_run, interp_zoo):
    from zoo.readers.interpreter.edit import set_threshold
    from zoo.readers.interpreter.train import read_run, run_config

    state = json.loads((interp_run / "state.json").read_text())
    chosen = state["history"][state["best_epoch"] - 1]["val_set_threshold"]
    config = run_config(read_run(interp_run), interp_run)
    assert set_threshold(interp_run, config) == chosen
    assert set_threshold(interp_run, config.model_copy(update={"set_threshold": 0.77})) == 0.77
    run = run_copy
    (run / "state.json").unlink()
    assert set_threshold(run, config) == 0.5


def test_an_edit_without_refinement_reports_the_decoded_edit_alone(interp_run, interp_zoo, records):
    from zoo.readers.interpreter.edit import edit

    example = records[0]
    result = edit(interp_run, example.example_id, data_dir=interp_zoo, refine_epochs=0, remove=example.patterns[0])
    assert result["refine_epochs"] == 0 and set(result["negative_accuracy"]) == {"degraded", "repaired", "edited"}


def test_an_edit_survey_sums_up_random_adds_and_removes(interp_run, interp_zoo, source, capsys):
    code, out, err = run_cli(
        capsys, "interpret", "edit", "--run", interp_run, "--data", interp_zoo, "--sample", "6", "--split", "train",
        "--refine-epochs", "2", "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["add"]["records"] + result["remove"]["records"] == 6
    for kind in ("add", "remove"):
        for label in ("degraded", "repaired", "edited", "edited_refined", "degraded_refined"):
            figures = result[kind][label]
            assert all(0.0 <= figures[key] <= 1.0 for key in ("pattern", "met", "negatives"))
    assert result["records"] == 6 and result["refine_epochs"] == 2


def test_an_edit_survey_never_removes_the_corrupted_pattern(interp_run, interp_zoo, records, monkeypatch):
    from zoo.readers.interpreter import edit as editing

    asked = []
    original = editing.Editor.__call__

    def spy(self, example, pattern, add, strength=1.0):
        asked.append((example.metrics["corrupted_pattern"], pattern, add))
        return original(self, example, pattern, add, strength)

    monkeypatch.setattr(editing.Editor, "__call__", spy)
    editing.survey(interp_run, sample=16, split="train", data_dir=interp_zoo, refine_epochs=0)
    removes = [(lost, pattern) for lost, pattern, add in asked if not add]
    assert removes and all(lost != pattern for lost, pattern in removes)


def _edit_result(pattern, rows, negatives):
    return {"pattern": pattern, "per_pattern_accuracy": rows, "negative_accuracy": negatives}


def test_edit_summaries_average_the_edited_pattern_apart_from_the_others():
    from rich.console import Console

    from zoo.readers.interpreter.edit import render_survey, summarize_edits

    results = [
        _edit_result("a", {"a": {"degraded": 0.2, "edited": 0.6}, "b": {"degraded": 1.0, "edited": 0.8}}, {"degraded": 0.9, "edited": 0.7}),
        _edit_result("a", {"a": {"degraded": 0.0, "edited": 0.4}}, {"degraded": 1.0, "edited": 0.9}),
    ]
    added = summarize_edits(results, "add")
    assert added["records"] == 2
    assert added["edited"] == pytest.approx({"pattern": 0.5, "met": 0.5, "others": 0.8, "negatives": 0.8})
    assert added["degraded"]["met"] == 0.0 and summarize_edits(results, "remove")["degraded"]["met"] == 1.0
    console = Console(record=True, width=200)
    render_survey({"split": "test", "records": 2, "strength": 1.0, "refine_epochs": 0, "add": added, "remove": summarize_edits([], "remove")}, console)
    text = console.export_text()
    assert "remove (0)" in text and "0.500" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["interpret", "train", "--data", "{missing}", "--out", "{tmp}/run"], "no such zoo folder"),
        (["interpret", "train", "--data", "{zoo}", "--out", "{tmp}/run", "--config", "{bad_config}"], "model.widht: unknown key"),
        (["interpret", "eval", "--run", "{tmp}/nothing", "--data", "{zoo}"], "not an interpreter run"),
        (["interpret", "eval", "--run", "{run}", "--data", "{zoo}", "--split", "holdout"], "unknown split"),
        (["interpret", "edit", "--run", "{run}", "--data", "{zoo}", "--model", "0", "--add", "telepathy"], "unknown pattern"),
        (["interpret", "edit", "--run", "{run}", "--data", "{zoo}", "--model", "0"], "give exactly one of --add"),
        (["interpret", "edit", "--run", "{run}", "--data", "{zoo}", "--sample", "2", "--add", "all_same"], "--sample draws its own"),
        (["interpret", "edit", "--run", "{run}", "--data", "{zoo}", "--sample", "0"], "--sample: must be 1 or more"),
        (["interpret", "edit", "--run", "{run}", "--data", "{zoo}", "--sample", "2", "--split", "holdout"], "--split: unknown split"),
        (["interpret", "edit", "--run", "{run}", "--data", "{zoo}", "--model", "0", "--add", "all_same", "--split", "test"], "--split goes with --sample"),
        (["interpret", "edit", "--run", "{run}", "--data", "{zoo}", "--model", "0", "--add", "all_same", "--refine-epochs", "-1"], "--refine-epochs: must be 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, interp_run, interp_zoo, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  widht: 3\n")
    values = {"missing": tmp_path / "nope", "tmp": tmp_path, "zoo": interp_zoo, "run": interp_run, "bad_config": bad}
    code, out, err = run_cli(capsys, *(a.format(**values) for a in args))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_resume_may_change_runtime_settings(interp_zoo, tmp_path):
    from zoo.readers.interpreter.train import train

    def stop(epoch, metrics, run_dir):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=2), interp_zoo, tmp_path / "run", progress=False, on_epoch=stop)
    state = train(tiny_config(epochs=2, threads=2, eval_batch_size=3), interp_zoo, tmp_path / "run", progress=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["interpreter"]["threads"] == 2


def test_a_pattern_set_holds_the_predicted_corrupted_pattern():
    """A degraded model was trained on the pattern it lost, even where its answers no longer show it."""
    from zoo.readers.interpreter.metrics import exact_match, with_corrupted

    shown = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)
    corrupted = np.array([[0.1, 0.2, 3.0], [2.0, 0.0, -1.0]])
    sets = with_corrupted(shown, corrupted)
    np.testing.assert_array_equal(sets, [[1, 0, 1], [1, 1, 0]])
    assert exact_match(sets, np.array([[1, 0, 1], [1, 1, 0]])) == 1.0


def test_a_pattern_set_is_brought_into_the_sets_the_zoos_models_can_have():
    """Too few: the most probable missing drawn patterns join; too many: the least probable leave, never the corrupted one."""
    from zoo.readers.interpreter.metrics import SetSpace, within

    probs = np.array(
        [
            [0.99, 0.40, 0.70, 0.10, 0.0],  # one pattern: pattern 2 (0.70) joins, not 1 (0.40)
            [0.95, 0.90, 0.96, 0.97, 0.0],  # four: the least probable (1) leaves
            [0.10, 0.90, 0.96, 0.97, 0.0],  # four, the corrupted (0) least probable: pattern 1 leaves
            [0.99, 0.80, 0.10, 0.10, 0.0],  # in range: unchanged
            [1e-9, 1e-9, 1e-9, 1e-9, 0.5],  # none but the corrupted: the tie goes to the lower index;
        ]  # pattern 4, undrawn, never joins however probable
    )
    sets = np.array([[1, 0, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    corrupted = np.zeros((5, 5))
    corrupted[[0, 1, 2, 3, 4], [0, 2, 0, 1, 2]] = 5.0
    space = SetSpace(low=2, high=3, drawn=np.array([True, True, True, True, False]))
    np.testing.assert_array_equal(
        within(sets, probs, corrupted, space),
        [[1, 0, 1, 0, 0], [1, 0, 1, 1, 0], [1, 0, 1, 1, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0]],
    )
    space = SetSpace(low=4, high=4, drawn=space.drawn)
    np.testing.assert_array_equal(within(sets[:1], probs[:1], corrupted[:1], space), [[1, 1, 1, 1, 0]])  # grows by 3


def test_best_checkpoint_is_chosen_by_validation_exact_match_then_loss():
    from zoo.readers.interpreter.train import selection_score

    epochs = [
        {"train_loss": 1.0, "val_loss": 0.9, "val_exact_match": 0.5},
        {"train_loss": 0.8, "val_loss": 1.1, "val_exact_match": 0.7},
        {"train_loss": 0.7, "val_loss": 1.0, "val_exact_match": 0.7},
    ]
    assert min(range(3), key=lambda i: selection_score(epochs[i], "exact_match")) == 2
    assert min(range(3), key=lambda i: selection_score(epochs[i], "loss")) == 0
    assert selection_score({"train_loss": 0.3}, "exact_match") == (0.3, 0.0)  # no validation split


def test_the_ensemble_averages_the_interpreter_with_the_output_only_reader():
    """Weight 1 is the interpreter, weight 0 the baseline; between, probabilities (not logits) are averaged."""
    from zoo.readers.interpreter.evaluate import BaselineModel, ensemble
    from zoo.readers.interpreter.train import Predictions

    interpreter = Predictions(
        examples=[],
        pattern_probs=np.array([[0.9, 0.4, 0.0]]),
        corrupted_logits=np.array([[2.0, 0.0, -30.0]]),
        accuracy=np.array([0.8]),
        latent=np.zeros((1, 2)),
        repaired=None,
    )
    # identity net: the features are the baseline's raw outputs (pattern logits, corrupted logits, accuracy logit)
    baseline = BaselineModel(torch.nn.Identity(), np.zeros(7), np.ones(7), undrawn=np.array([False, False, True]))
    features = np.array([[3.0, 1.0, 9.0, 0.0, 0.5, 9.0, 0.0]], dtype=np.float32)  # pattern 1: sigmoid(1) = 0.73

    def softmax(z):
        return np.exp(z) / np.exp(z).sum()

    probs, _, accuracy = ensemble(interpreter, baseline, features, weight=1.0)
    np.testing.assert_allclose(probs, interpreter.pattern_probs)
    assert accuracy[0] == pytest.approx(0.8)
    probs, _, _ = ensemble(interpreter, baseline, features, weight=0.0)
    np.testing.assert_allclose(probs, baseline.probabilities(features)[0])
    np.testing.assert_array_equal(probs > 0.5, [[1, 1, 0]])  # the undrawn pattern 2 is never named
    probs, corrupted, accuracy = ensemble(interpreter, baseline, features, weight=0.5)
    np.testing.assert_array_equal(probs > 0.5, [[1, 1, 0]])  # pattern 1: (0.4 + 0.73) / 2 > 0.5
    expected = 0.5 * softmax(np.array([2.0, 0.0, -30.0])) + 0.5 * softmax(np.array([0.0, 0.5, -30.0]))
    np.testing.assert_allclose(np.exp(corrupted[0]), expected, atol=1e-6)
    assert accuracy[0] == pytest.approx(0.65)
    probs, _, _ = ensemble(interpreter, baseline, features, weight=0.8)
    np.testing.assert_array_equal(probs > 0.5, [[1, 0, 0]])  # pattern 1: 0.8 * 0.4 + 0.2 * 0.73 < 0.5


def test_the_set_threshold_is_the_grid_value_with_the_best_exact_match():
    """A middling set probability on a pattern the corrupted head already names is an error at 0.5, not at 0.7."""
    from zoo.readers.interpreter.metrics import choose_threshold

    probs = np.array([[0.99, 0.6, 0.1], [0.99, 0.1, 0.65], [0.99, 0.95, 0.1]])
    corrupted = np.array([[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    truth = np.array([[1, 0, 1], [1, 1, 0], [1, 1, 0]])
    assert choose_threshold(probs, corrupted, truth, grid=(0.5, 0.7, 0.99)) == 0.7
    assert choose_threshold(probs, corrupted, truth, grid=(0.8, 0.7)) == 0.8  # a tie: the first in the grid


def test_training_scores_validation_sets_at_the_threshold_evaluation_will_use():
    """best.safetensors is chosen by validation exact match; at 0.5 it would reward an epoch the report does not see."""
    from zoo.readers.interpreter.data import Example
    from zoo.readers.interpreter.train import Predictions, quick_metrics

    names = ("a", "b", "c")
    truth = [(0, 2), (0, 1), (0, 1)]
    examples = [
        Example(example_id=str(i), batch_id=i, pair_index=0, architecture=None, signature=None, degraded=None,
                clean=None, patterns=tuple(names[k] for k in s), targets=np.isin(np.arange(3), s).astype(np.float32),
                corrupted=s[1], accuracy=0.9, metrics={})
        for i, s in enumerate(truth)
    ]
    probs = np.array([[0.99, 0.6, 0.1], [0.99, 0.1, 0.65], [0.99, 0.95, 0.1]])
    corrupted = np.array([[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    pred = Predictions(examples, probs, corrupted, np.zeros(3), np.zeros((3, 1)), None)
    chosen = quick_metrics(pred, names)
    assert chosen["exact_match"] == 1.0 and chosen["set_threshold"] > 0.5
    assert quick_metrics(pred, names, threshold=0.5)["exact_match"] == 1 / 3


def test_eval_uses_a_fixed_set_threshold_when_the_config_gives_one(run_copy, interp_zoo):
    from zoo.readers.interpreter.evaluate import evaluate

    run = run_copy
    chosen = evaluate(run, interp_zoo, splits=["test"], refine_epochs=0)["thresholds"]
    assert all(t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99) for t in chosen.values())
    path = run / "config.json"
    stored = json.loads(path.read_text())
    stored["interpreter"]["set_threshold"] = 0.999
    path.write_text(json.dumps(stored))
    report = evaluate(run, interp_zoo, splits=["test"], refine_epochs=0)
    assert set(report["thresholds"].values()) == {0.999}
    assert report["test"]["macro_f1"] <= 1.0


def test_report_figures_are_those_of_the_predictions_in_their_own_order(run_copy, interp_zoo, source):
    """Predictions come back in batched() order (sorted by activation per chunk); the report must not pair them with
    the records in streamed order."""
    from zoo.readers.interpreter.data import batched
    from zoo.readers.interpreter.evaluate import evaluate
    from zoo.readers.interpreter.metrics import exact_match, top1
    from zoo.readers.interpreter.train import load_model, predict

    run = run_copy
    path = run / "config.json"
    stored = json.loads(path.read_text())
    stored["interpreter"]["set_threshold"] = 0.5
    path.write_text(json.dumps(stored))
    examples = list(stream(source, "test"))
    model, config, _ = load_model(run)
    pred = predict(model, batched(examples, config.eval_batch_size), torch.device("cpu"))
    assert [e.example_id for e in pred.examples] != [e.example_id for e in examples]  # the case this test is about
    test = evaluate(run, interp_zoo, splits=["test"], refine_epochs=0)["test"]
    assert test["exact_match"] == exact_match(pred.pattern_sets(0.5, source.set_space), pred.targets)
    assert test["corrupted_pattern_accuracy"] == top1(pred.corrupted_logits, np.array([e.corrupted for e in pred.examples]))
