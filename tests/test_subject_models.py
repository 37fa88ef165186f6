"""Subject models as standard nn.Modules, rebuilt from flat arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.subjects.families.mlp import MLPSpace
from zoo.subjects.families.mlp import Architecture, sample_architecture
from zoo.subjects.mlp import SubjectMLP, build_model, flatten_model
from zoo.subjects.population import init_weights


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid", "leaky_relu"])
def test_model_maps_token_ids_to_one_logit_each(activation):
    model = build_model(Architecture(2, (8, 8), activation, 7, 7), init_weights(Architecture(2, (8, 8), activation, 7, 7), 0))
    tokens = torch.randint(0, 7, (5, 7))
    assert model(tokens).shape == (5,)


def test_one_hot_is_inside_the_model():
    arch = Architecture(1, (4,), "relu", 3, 2)
    model = build_model(arch, init_weights(arch, 0))
    tokens = torch.tensor([[2, 0]])
    first = model.layers[0](torch.tensor([[0, 0, 1, 1, 0, 0]], dtype=torch.float32))
    assert torch.allclose(model.head(torch.relu(first)).squeeze(-1), model(tokens))


def test_flat_weights_round_trip():
    arch = Architecture(3, (5, 6, 7), "tanh", 4, 6)
    flat = init_weights(arch, 3)
    assert np.array_equal(flatten_model(build_model(arch, flat)), flat)


def test_layout_names_match_the_module():
    arch = Architecture(2, (5, 6), "relu", 4, 6)
    assert [e.name for e in arch.layout()] == list(SubjectMLP(arch).state_dict())
    assert arch.n_params == sum(p.numel() for p in SubjectMLP(arch).parameters())


def test_wrong_weight_count_is_refused():
    arch = Architecture(1, (4,), "relu", 3, 2)
    with pytest.raises(ValueError, match="needs"):
        build_model(arch, np.zeros(arch.n_params + 1, dtype=np.float32))


def test_architecture_dict_round_trip():
    arch = Architecture(2, (5, 6), "gelu", 7, 7)
    assert Architecture.from_dict(arch.to_dict()) == arch


def test_sampled_architectures_stay_in_range():
    space = MLPSpace(layers={"min": 2, "max": 3}, width={"min": 10, "max": 12}, activations=["tanh"])
    rng = np.random.default_rng(0)
    archs = [sample_architecture(space, 7, 7, rng) for _ in range(50)]
    assert {a.n_layers for a in archs} == {2, 3}
    assert {w for a in archs for w in a.widths} <= {10, 11, 12}
    assert {a.activation for a in archs} == {"tanh"}
