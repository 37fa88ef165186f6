"""A dense transformer record loads as a TransformerLens ``HookedTransformer`` with the same logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.export.transformer_lens import (
    TransformerLensError,
    from_transformer_lens_state_dict,
    hook_names,
    hooked_transformer_config,
    to_hooked_transformer,
    to_transformer_lens_state_dict,
)
from zoo.runtime import torch_threads
from zoo.subjects.families import UnsupportedFamily
from zoo.subjects.families.transformer import Architecture
from zoo.subjects.transformer_module import build_model, init_weights


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def arch(layers, d, heads, ffn="dense", m=4, k=0, bias=True) -> Architecture:
    return Architecture(layers, d, heads, ffn, m, k, bias, 7, 7)


DENSE = [arch(1, 8, 1), arch(2, 16, 4), arch(3, 12, 2), arch(2, 8, 2, bias=False)]


def trained_like(a: Architecture, seed: int) -> np.ndarray:
    """Init weights moved off their init (biases and LayerNorms nonzero / non-one), so that a
    swapped or transposed tensor cannot hide behind zeros, ones or symmetric noise."""
    w = init_weights(a, seed)
    return w + np.random.default_rng(seed).normal(0.0, 0.3, w.shape).astype(np.float32)


def test_the_state_dict_has_transformer_lens_names_and_shapes():
    a = arch(2, 16, 4)
    state = to_transformer_lens_state_dict(a, trained_like(a, 0))
    shapes = {name: tuple(v.shape) for name, v in state.items()}
    assert shapes["embed.W_E"] == (7, 16) and shapes["pos_embed.W_pos"] == (7, 16)
    for i in range(2):
        for w in ("W_Q", "W_K", "W_V"):
            assert shapes[f"blocks.{i}.attn.{w}"] == (4, 16, 4)  # [n_heads, d_model, d_head]
            assert shapes[f"blocks.{i}.attn.b_{w[-1]}"] == (4, 4)
        assert shapes[f"blocks.{i}.attn.W_O"] == (4, 4, 16) and shapes[f"blocks.{i}.attn.b_O"] == (16,)
        assert shapes[f"blocks.{i}.mlp.W_in"] == (16, 64) and shapes[f"blocks.{i}.mlp.W_out"] == (64, 16)
        assert shapes[f"blocks.{i}.mlp.b_in"] == (64,) and shapes[f"blocks.{i}.mlp.b_out"] == (16,)
        assert shapes[f"blocks.{i}.ln1.w"] == shapes[f"blocks.{i}.ln2.b"] == (16,)
    assert shapes["ln_final.w"] == shapes["ln_final.b"] == (16,)
    assert shapes["unembed.W_U"] == (16, 1) and shapes["unembed.b_U"] == (1,)
    assert len(state) == 2 + 2 * 16 + 4


def test_head_h_of_W_Q_is_the_zoo_query_rows_of_head_h():
    a = arch(1, 16, 4)
    w = trained_like(a, 1)
    qkv = build_model(a, w).blocks[0].attn.qkv.weight.detach()  # [3d, d]: q rows, k rows, v rows, head-major
    state = to_transformer_lens_state_dict(a, w)
    for h in range(4):
        torch.testing.assert_close(state["blocks.0.attn.W_Q"][h], qkv[4 * h : 4 * h + 4].T, rtol=0, atol=0)
        torch.testing.assert_close(state["blocks.0.attn.W_V"][h], qkv[32 + 4 * h : 32 + 4 * h + 4].T, rtol=0, atol=0)


@pytest.mark.parametrize("a", DENSE, ids=lambda a: a.describe() + (" no bias" if not a.bias else ""))
def test_the_round_trip_gives_back_the_same_weights(a):
    w = trained_like(a, 2)
    back = from_transformer_lens_state_dict(a, to_transformer_lens_state_dict(a, w))
    np.testing.assert_array_equal(back, w)


def test_a_no_bias_record_gets_zero_biases():
    a = arch(2, 8, 2, bias=False)
    state = to_transformer_lens_state_dict(a, trained_like(a, 3))
    for name in ("blocks.1.attn.b_K", "blocks.0.attn.b_O", "blocks.0.mlp.b_in", "blocks.1.ln2.b", "ln_final.b"):
        assert not state[name].any(), name
    assert state["unembed.b_U"].any()  # the head always has its bias


@pytest.mark.parametrize("a", DENSE, ids=lambda a: a.describe() + (" no bias" if not a.bias else ""))
def test_the_hooked_transformer_gives_the_zoo_logits(a):
    pytest.importorskip("transformer_lens", reason="TransformerLens is in the test and lens extras")
    w = trained_like(a, 4)
    tokens = torch.randint(0, 7, (64, 7), generator=torch.Generator().manual_seed(5))
    zoo_model = build_model(a, w)
    tl_model = to_hooked_transformer({"architecture": a.to_dict(), "clean_weights": w.tolist()})
    with torch.no_grad():
        expected = zoo_model(tokens)
        torch.testing.assert_close(tl_model(tokens)[:, -1, 0], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(to_hooked_transformer(zoo_model)(tokens)[:, -1, 0], expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.1  # the logits vary, so the comparison can fail


def test_each_zoo_hookpoint_is_the_named_transformer_lens_hook_at_the_last_position():
    pytest.importorskip("transformer_lens", reason="TransformerLens is in the test and lens extras")
    a = arch(2, 16, 4)
    w = trained_like(a, 6)
    tokens = torch.randint(0, 7, (32, 7), generator=torch.Generator().manual_seed(7))
    own = build_model(a, w).activations(tokens)
    _, cache = to_hooked_transformer(build_model(a, w)).run_with_cache(tokens)
    names = hook_names(a)
    assert list(names) == list(own)
    for zoo_name, tl_name in names.items():
        torch.testing.assert_close(cache[tl_name][:, -1].reshape(32, -1), own[zoo_name], atol=1e-5, rtol=0)


def test_the_degraded_model_of_a_record_is_converted_when_asked():
    pytest.importorskip("transformer_lens", reason="TransformerLens is in the test and lens extras")
    a = arch(1, 8, 2)
    row = {"architecture": a.to_dict(), "clean_weights": trained_like(a, 8), "degraded_weights": trained_like(a, 9)}
    tokens = torch.randint(0, 7, (16, 7))
    with torch.no_grad():
        out = to_hooked_transformer(row, which="degraded")(tokens)[:, -1, 0]
        torch.testing.assert_close(out, build_model(a, row["degraded_weights"])(tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("a", "message"),
    [
        (arch(1, 16, 2, "sparse", 8, 4), "TransformerLens has no sparse (GroupMax) feed-forward: only dense"),
        (arch(1, 16, 2, "sparse_low_rank", 8, 4), "TransformerLens has no sparse_low_rank (GroupMax) feed-forward"),
    ],
)
def test_a_group_max_record_is_refused_in_one_line(a, message):
    row = {"architecture": a.to_dict(), "clean_weights": init_weights(a, 0)}
    for convert in (lambda: to_hooked_transformer(row), lambda: hooked_transformer_config(a),
                    lambda: to_transformer_lens_state_dict(a, row["clean_weights"])):  # fmt: skip
        with pytest.raises(TransformerLensError) as error:
            convert()
        assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_an_mlp_record_is_refused_in_one_line():
    from zoo.subjects.families.mlp import Architecture as MLPArchitecture

    mlp = MLPArchitecture(n_layers=1, widths=(8,), activation="relu", vocab_size=7, seq_len=7)
    with pytest.raises(UnsupportedFamily, match=r"^TransformerLens export reads transformer subjects, not 'mlp' ones$"):
        to_hooked_transformer({"architecture": mlp.to_dict(), "clean_weights": np.zeros(mlp.n_params)})


def test_without_transformer_lens_3_the_conversion_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # importing it raises ImportError
    a = arch(1, 8, 2)
    with pytest.raises(TransformerLensError, match=r"^TransformerLens 3\.x \(HookedTransformer\) is not installed: "):
        to_hooked_transformer({"architecture": a.to_dict(), "clean_weights": init_weights(a, 0)})


def test_a_record_of_a_generated_zoo_loads_with_the_logits_of_zoo_load_model(tmp_path):
    pytest.importorskip("transformer_lens", reason="TransformerLens is in the test and lens extras")
    import zoo

    recipe = {
        "batches": 1,
        "architecture": {"family": "transformer", "d_model": [16], "heads": [2], "layers": {"min": 2, "max": 2}},
        "patterns": {"train_size": 60, "val_size": 20, "benchmark_size": 40},
        "training": {"epochs": 2},
        "corruption": {"degraded_per_batch": 1, "min_degradation": 0.0},
    }
    z = zoo.generate(recipe, tmp_path / "zoo", workers=0, quiet=True)
    tokens = torch.as_tensor(z.probe_set.tokens).long()
    for which in ("clean", "degraded"):
        row = z.row(0)
        with torch.no_grad():
            lens = to_hooked_transformer(row, which=which)(tokens)[:, -1, 0]
            torch.testing.assert_close(lens, z.load_model(row, which=which)(tokens), atol=1e-5, rtol=0)


def language_model(layers=2, d=16, heads=4, vocab=9, seq_len=12) -> Architecture:
    return Architecture(layers, d, heads, "dense", 4, 0, True, vocab, seq_len, head="next_token")


def test_a_language_model_unembeds_to_its_vocabulary_and_round_trips():
    a = language_model()
    w = trained_like(a, 10)
    state = to_transformer_lens_state_dict(a, w)
    assert tuple(state["unembed.W_U"].shape) == (16, 9) and tuple(state["unembed.b_U"].shape) == (9,)
    assert hooked_transformer_config(a)["d_vocab_out"] == 9 and hooked_transformer_config(a)["n_ctx"] == 12
    np.testing.assert_array_equal(from_transformer_lens_state_dict(a, state), w)


def test_a_language_model_gives_the_zoo_next_token_logits_and_hookpoints_at_every_position():
    pytest.importorskip("transformer_lens", reason="TransformerLens is in the test and lens extras")
    from zoo.subjects.families import get_family

    a = language_model()
    module = get_family("transformer").build_module(a, trained_like(a, 11))
    tokens = torch.randint(0, 9, (16, 12), generator=torch.Generator().manual_seed(12))
    logits, cache = to_hooked_transformer(module).run_with_cache(tokens)
    with torch.no_grad():
        torch.testing.assert_close(logits, module(tokens), atol=1e-5, rtol=0)  # [16, 12, 9]
        own = module.activations(tokens)
    for zoo_name, tl_name in hook_names(a).items():
        torch.testing.assert_close(cache[tl_name], own[zoo_name], atol=1e-5, rtol=0)
