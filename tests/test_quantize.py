"""Quantization puts each weight matrix on a small grid and leaves biases alone."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.subjects.families.mlp import Architecture
from zoo.subjects.population import from_weights, init_weights, to_weights
from zoo.subjects.quantize import quantize_

ARCHS = [Architecture(2, (6, 6), "relu", 4, 4), Architecture(1, (9,), "relu", 4, 4)]
LEVELS = {"int8": 255, "int4": 15, "ternary": 3, "binary": 2}


def quantized(scheme: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    before = [init_weights(a, i) for i, a in enumerate(ARCHS)]
    pop = from_weights(ARCHS, before)
    quantize_(pop, scheme)
    return before, to_weights(pop)


def weight_matrices(arch: Architecture, flat: np.ndarray):
    for entry in arch.layout():
        if entry.name.endswith("weight"):
            yield entry.name, flat[entry.offset : entry.offset + entry.size]


@pytest.mark.parametrize("scheme", sorted(LEVELS))
def test_each_weight_matrix_takes_at_most_the_grid_s_levels(scheme):
    _, after = quantized(scheme)
    for arch, flat in zip(ARCHS, after):
        for name, values in weight_matrices(arch, flat):
            assert 2 <= len(np.unique(values)) <= LEVELS[scheme], name


@pytest.mark.parametrize(("scheme", "steps"), [("int8", 127), ("int4", 7)])
def test_integer_schemes_put_weights_on_multiples_of_max_over_steps(scheme, steps):
    before, after = quantized(scheme)
    for arch, a, b in zip(ARCHS, before, after):
        for (name, raw), (_, values) in zip(weight_matrices(arch, a), weight_matrices(arch, b)):
            units = values / (np.abs(raw).max() / steps)
            np.testing.assert_allclose(units, np.round(units), atol=1e-3, err_msg=name)
            assert not np.array_equal(raw, values), name


@pytest.mark.parametrize("scheme", sorted(LEVELS))
def test_biases_are_kept(scheme):
    before, after = quantized(scheme)
    for arch, a, b in zip(ARCHS, before, after):
        for entry in arch.layout():
            if entry.name.endswith("bias"):
                sl = slice(entry.offset, entry.offset + entry.size)
                assert np.array_equal(a[sl], b[sl])


def test_int8_stays_close_to_the_float_weights():
    before, after = quantized("int8")
    for a, b in zip(before, after):
        assert 0 < np.abs(a - b).max() < np.abs(a).max() / 100


def test_none_changes_nothing():
    before, after = quantized("none")
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
