"""Quantization puts each weight matrix on a small grid and leaves biases alone."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.subjects.architecture import Architecture
from zoo.subjects.population import from_weights, init_weights, to_weights
from zoo.subjects.quantize import quantize_

ARCHS = [Architecture(2, (6, 6), "relu", 4, 4), Architecture(1, (9,), "relu", 4, 4)]
LEVELS = {"int8": 255, "int4": 15, "ternary": 3, "binary": 2}


def quantized(scheme: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    before = [init_weights(a, i) for i, a in enumerate(ARCHS)]
    pop = from_weights(ARCHS, before)
    quantize_(pop, scheme)
    return before, to_weights(pop)


@pytest.mark.parametrize("scheme", sorted(LEVELS))
def test_each_weight_matrix_lies_on_the_grid(scheme):
    _, after = quantized(scheme)
    for arch, flat in zip(ARCHS, after):
        for entry in arch.layout():
            if entry.name.endswith("weight"):
                values = np.unique(flat[entry.offset : entry.offset + entry.size])
                assert 2 <= len(values) <= LEVELS[scheme], entry.name


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
        assert np.abs(a - b).max() < np.abs(a).max() / 100


def test_none_changes_nothing():
    before, after = quantized("none")
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
