"""The family seam: what every registered family must offer, and how the rest of zoo dispatches on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zoo.config import FamilyShare, ZooConfig, parse_config
from zoo.factory.plan import plan_batch
from zoo.subjects.families import (
    FAMILIES, UnknownFamily, UnsupportedFamily, architecture_of, get_family, require_family, sample_architecture,
)
from zoo.subjects.families.mlp import MLPSpace
from zoo.subjects.families.mlp import sample_architecture as sample_mlp

FAMILY_NAMES = sorted(FAMILIES)


def _architectures(name: str, n: int = 6) -> list:
    family = get_family(name)
    rng = np.random.default_rng(0)
    space = family.space(**({"width": {"min": 3, "max": 9}} if name == "mlp" else {}))
    return [family.sample(space, 7, 7, rng) for _ in range(n)]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_architecture_round_trips_through_the_record_json(name):
    for arch in _architectures(name):
        assert architecture_of(arch.to_json()) == arch
        assert architecture_of(json.loads(arch.to_json())) == arch
        assert json.loads(arch.to_json())["family"] == name


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_layout_tiles_the_flat_weights(name):
    family = get_family(name)
    for arch in _architectures(name):
        layout = arch.layout()
        assert layout[0].offset == 0
        assert all(a.offset + a.size == b.offset for a, b in zip(layout, layout[1:]))
        assert family.init_weights(arch, 1).shape == (arch.n_params,)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_signature_sites_read_hookpoints_of_their_width(name):
    family = get_family(name)
    for arch in _architectures(name):
        points = family.hookpoints(arch)
        sites = family.signature_sites(arch)
        for site in sites:
            assert points[site.pre] == points[site.post] == site.width
        n = sum(site.width for site in sites)
        assert len(family.neuron_layers(arch)) == len(family.neuron_kinds(arch)) == n


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_population_logits_and_hookpoints_equal_each_rebuilt_module(name):
    family = get_family(name)
    archs = _architectures(name)
    weights = [family.init_weights(a, i) for i, a in enumerate(archs)]
    from zoo.subjects.train import SubjectJob

    tokens = torch.randint(0, 7, (len(archs), 16, 7))
    jobs = [
        SubjectJob(a, i, i, 1e-2, tokens[i].numpy(), np.ones(16, np.float32), tokens[i].numpy(), np.ones(16, np.float32), init=w)
        for i, (a, w) in enumerate(zip(archs, weights))
    ]
    for group in family.train(jobs, ZooConfig().training, torch.device("cpu"), epochs=1):
        out = family.logits(group.population, tokens[group.indices])
        trained = family.weights(group.population)
        points = family.activations(group.population, tokens[group.indices])
        for slot, i in enumerate(group.indices):
            module = family.build_module(archs[i], trained[slot])
            with torch.no_grad():
                torch.testing.assert_close(out[slot], module(tokens[i]), atol=1e-5, rtol=1e-5)
                own = module.activations(tokens[i])
            assert list(own) == list(family.hookpoints(archs[i]))
            for point, width in family.hookpoints(archs[i]).items():
                torch.testing.assert_close(points[point][slot, :, :width], own[point], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_population_built_from_weights_equals_the_trained_one(name):
    family = get_family(name)
    archs = _architectures(name)
    from zoo.subjects.train import SubjectJob

    tokens = torch.randint(0, 7, (len(archs), 16, 7))
    jobs = [
        SubjectJob(a, i, i, 1e-2, tokens[i].numpy(), np.ones(16, np.float32), tokens[i].numpy(), np.ones(16, np.float32),
                   init=family.init_weights(a, i))
        for i, a in enumerate(archs)
    ]
    for group in family.train(jobs, ZooConfig().training, torch.device("cpu"), epochs=1):
        members = [archs[i] for i in group.indices]
        assert len({family.population_key(a) for a in members}) == 1
        trained = family.weights(group.population)
        rebuilt = family.population(members, trained, "cpu")
        assert all(np.array_equal(a, b) for a, b in zip(family.weights(rebuilt), trained))
        torch.testing.assert_close(family.logits(rebuilt, tokens[group.indices]), family.logits(group.population, tokens[group.indices]))
        ours, theirs = family.activations(rebuilt, tokens[group.indices]), family.activations(group.population, tokens[group.indices])
        assert list(ours) == list(theirs)
        for point in ours:
            torch.testing.assert_close(ours[point], theirs[point])


def test_a_single_space_draws_exactly_as_the_family_does():
    space = MLPSpace()
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert [sample_architecture(space, 7, 7, a) for _ in range(20)] == [sample_mlp(space, 7, 7, b) for _ in range(20)]


def test_a_mixture_draws_each_space_by_its_share():
    narrow = MLPSpace(width={"min": 4, "max": 4})
    wide = MLPSpace(width={"min": 40, "max": 40})
    mix = [FamilyShare(share=0.75, space=narrow), FamilyShare(share=0.25, space=wide)]
    rng = np.random.default_rng(0)
    widths = [sample_architecture(mix, 7, 7, rng).widths[0] for _ in range(2000)]
    assert np.mean(np.array(widths) == 4) == pytest.approx(0.75, abs=0.03)


def test_a_mixed_zoo_config_plans_batches_from_both_spaces():
    config = parse_config(
        {"architecture": [{"share": 0.5, "space": {"width": {"min": 4, "max": 4}}}, {"share": 0.5, "space": {"width": {"min": 9, "max": 9}}}]}
    )
    widths = {plan_batch(config, b).architecture.widths[0] for b in range(20)}
    assert widths == {4, 9}


def test_an_unknown_family_is_one_line_naming_it():
    with pytest.raises(UnknownFamily, match="'rnn'"):
        architecture_of({"family": "rnn", "n_layers": 1})


def test_a_reader_refuses_a_family_it_does_not_read():
    arch = _architectures("mlp")[0]
    assert require_family(arch.to_json(), ("mlp",), "zoo probe") == arch
    with pytest.raises(UnsupportedFamily, match="zoo probe reads transformer subjects, not 'mlp' ones"):
        require_family(arch.to_json(), ("transformer",), "zoo probe")


def test_architecture_split_options_hold_out_mlps_only():
    from zoo.export.splits import BatchFacts, SplitOptions, ood_split

    options = SplitOptions(ood_depths=[1], ood_activations=["gelu"])
    assert ood_split(BatchFacts(("palindrome",), 1, (8,), "relu", "mlp"), options) == "ood_architecture"
    assert ood_split(BatchFacts(("palindrome",), 1, (32,), "gelu", "transformer"), options) is None


def test_a_reader_refuses_a_zoo_with_other_families_before_any_work():
    from zoo.subjects.families import require_families

    require_families(["mlp", "mlp"], ("mlp",), "zoo interpret")
    with pytest.raises(UnsupportedFamily, match="zoo interpret reads mlp subjects; this zoo also holds 2 transformer records"):
        require_families(["mlp", "transformer", "transformer"], ("mlp",), "zoo interpret")


def test_an_empty_mixture_is_refused_in_one_line():
    from zoo.config import ConfigError

    with pytest.raises(ConfigError, match="^architecture: List should have at least 1 item"):
        parse_config({"architecture": []})


def test_shares_that_do_not_sum_to_one_are_refused_in_one_line():
    from zoo.config import ConfigError

    with pytest.raises(ConfigError, match="^architecture: the shares sum to 0.9, not 1$"):
        parse_config({"architecture": [{"share": 0.5, "space": {}}, {"share": 0.4, "space": {}}]})


def test_each_part_of_a_mixture_trains_with_its_own_recipe():
    config = parse_config(
        {
            "training": {"lr": {"min": 0.01, "max": 0.01}},
            "architecture": [
                {"share": 0.5, "space": {"width": {"min": 4, "max": 4}}},
                {"share": 0.5, "space": {"width": {"min": 9, "max": 9}}, "training": {"lr": {"min": 0.001, "max": 0.001}}},
            ],
        }
    )
    plans = [plan_batch(config, b) for b in range(20)]
    assert {p.architecture.widths[0]: p.lr for p in plans} == pytest.approx({4: 0.01, 9: 0.001})
    assert {p.part for p in plans} == {0, 1}
