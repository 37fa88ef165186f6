"""Pattern directions in the interpreter's latent and the edits its decoder trains on."""

from __future__ import annotations

import pytest
import torch

from zoo.readers.interpreter.directions import LatentMeans, edited_sets, mean_difference, sample_edits

HAS = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.float32)
LATENT = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 8.0]])


def test_a_direction_is_the_mean_latent_with_the_pattern_less_the_mean_without():
    directions, counts = mean_difference(LATENT, HAS)
    assert counts.tolist() == [[2, 2], [2, 2], [3, 1]]
    torch.testing.assert_close(directions[0], LATENT[:2].mean(0) - LATENT[2:].mean(0))
    torch.testing.assert_close(directions[2], LATENT[[0, 2, 3]].mean(0) - LATENT[1])


def test_a_pattern_seen_on_one_side_only_has_no_direction():
    directions, counts = mean_difference(LATENT, torch.ones(4, 1))
    assert counts.tolist() == [[4, 0]] and directions.abs().sum() == 0


def test_undecayed_latent_means_are_the_mean_difference_over_every_update():
    means = LatentMeans(3, 2, decay=1.0)
    means.update(LATENT[:1], HAS[:1])
    means.update(LATENT[1:], HAS[1:])
    directions, known = means.directions()
    torch.testing.assert_close(directions, mean_difference(LATENT, HAS)[0])
    assert known.all()


def test_latent_means_forget_old_models():
    means = LatentMeans(3, 2, decay=1e-6)
    means.update(LATENT + 100.0, HAS)
    means.update(LATENT, HAS)
    torch.testing.assert_close(means.directions()[0], mean_difference(LATENT, HAS)[0], atol=1e-3, rtol=0)


def test_latent_means_round_trip_through_their_state_tensors():
    means = LatentMeans(3, 2)
    means.update(LATENT, HAS)
    restored = LatentMeans(3, 2)
    restored.load_state_tensors(means.state_tensors())
    torch.testing.assert_close(restored.directions()[0], means.directions()[0])


def test_edits_add_a_missing_pattern_or_remove_a_present_one_among_the_editable():
    has = HAS.repeat(50, 1)
    editable = torch.tensor([True, True, False])
    pattern, sign = sample_edits(has, editable, torch.Generator().manual_seed(0))
    present = has[torch.arange(len(has)), pattern].bool()
    assert set(sign.tolist()) == {1.0, -1.0}
    assert (present[sign > 0] == False).all() and present[sign < 0].all()  # noqa: E712
    assert not (pattern == 2).any()  # never edited: not editable


def test_a_model_with_nothing_editable_gets_no_edit():
    pattern, sign = sample_edits(torch.zeros(3, 2), torch.tensor([False, False]), torch.Generator().manual_seed(0))
    assert sign.tolist() == [0.0, 0.0, 0.0]


def test_edits_are_drawn_from_the_generator_alone():
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        draws.append(sample_edits(HAS.repeat(20, 1), torch.ones(3, dtype=torch.bool), torch.Generator().manual_seed(7)))
    assert all(torch.equal(a, b) for a, b in zip(*draws))


@pytest.mark.parametrize("sign, expected", [(1.0, [1, 1, 1]), (-1.0, [0, 0, 1]), (0.0, [1, 0, 1])])
def test_the_edited_set_adds_or_removes_the_edited_pattern(sign, expected):
    out = edited_sets(HAS[:1], torch.tensor([1 if sign > 0 else 0]), torch.tensor([sign]))
    assert out[0].tolist() == expected
