"""The interpreter across subject families: one reading path for every family, the MLP's own reader beside it.

A tiny mixed zoo (MLPs and one-block transformers) is trained on, evaluated and edited end to
end; the family-agnostic inputs are checked against what the zoo stored, and an MLP is read
the same whether or not transformers share its batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from interpreter_fixture import mixed_zoo, tiny_config  # noqa: F401
from zoo_fixture import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def records(mixed_zoo):  # noqa: F811
    from zoo.readers.interpreter.data import open_source, stream

    return list(stream(open_source(mixed_zoo), None))


@pytest.fixture(scope="module")
def mixed_run(mixed_zoo, tmp_path_factory) -> Path:  # noqa: F811
    """A tiny interpreter trained 4 epochs on the mixed train split (a few seconds)."""
    from zoo.readers.interpreter.train import train

    run = tmp_path_factory.mktemp("mixed-run") / "run"
    train(tiny_config(epochs=4, refine={"epochs": 2}), mixed_zoo, run, progress=False)
    return run


def test_the_mixed_zoo_holds_both_families_in_train(mixed_zoo, records):  # noqa: F811
    from zoo.readers.interpreter.data import open_source

    source = open_source(mixed_zoo)
    train = {e.family for e in records if source.assignment[e.batch_id] == "train"}
    assert train == {"mlp", "transformer"}


def test_a_transformer_neuron_reads_its_probe_values_the_signature_summarizes(records):
    """The family-agnostic token input: every neuron's value on every probe, the signature before it is summarized."""
    from zoo.readers.interpreter.data import collate

    example = next(e for e in records if e.family == "transformer")
    values = example.site_values  # [R, N]
    assert values.shape == (collate([example]).site_values.shape[1], example.signature.shape[0])
    # the zoo's first signature column is the mean over probes of the post-activation value
    np.testing.assert_allclose(values.mean(0), example.signature[:, 0], rtol=1e-4, atol=1e-5)
    batch = collate([example])
    kinds = batch.kind[0, : len(values)].tolist()
    assert kinds.count(2) == 4 * 8 and kinds.count(3) == 8 and kinds[-1] == 1  # ffn, resid, output
    assert not bool(batch.token_space[0]) and not bool(batch.first.any()) and not bool(batch.edges.any())


def test_an_mlp_is_read_the_same_beside_transformers(mixed_zoo, records):  # noqa: F811
    """Where a family offers no token space its reader is absent, and it does not leak into the others' rows."""
    from zoo.readers.interpreter.data import collate, open_source
    from zoo.readers.interpreter.train import build_model

    mlp = next(e for e in records if e.family == "mlp")
    others = [e for e in records if e.family == "transformer"][:2]
    torch.manual_seed(0)
    source = open_source(mixed_zoo)
    model = build_model(tiny_config(model={"decoder_reads_gradient": True}), source.describe()).eval()
    with torch.no_grad():
        alone = model(collate([mlp]))
        mixed = collate([mlp, *others])
        together = model(mixed)
        np.testing.assert_allclose(together.patterns[0], alone.patterns[0], atol=1e-5)
        np.testing.assert_allclose(together.latent[0], alone.latent[0], atol=1e-5)
        torch.nn.init.normal_(model.dec_in.weight), torch.nn.init.normal_(model.dec_bias.weight)
        delta = model.decode(mixed, together)
    assert float(delta.bias[0].abs().sum()) > 0  # the decoder writes the MLP ...
    for weights in (delta.w_in, delta.adj, delta.bias):  # ... and nothing of the transformers
        assert float(weights[1:].abs().sum()) == 0.0


def test_train_eval_and_edit_a_mixed_zoo_end_to_end(capsys, mixed_zoo, mixed_run):  # noqa: F811
    from zoo.readers.interpreter.evaluate import evaluate

    report = evaluate(mixed_run, mixed_zoo)
    split = next(s for s in ("test", "validation") if report.get(s, {}).get("by_family"))
    families = report[split]["by_family"]
    assert set(families) <= {"mlp", "transformer"} and sum(f["records"] for f in families.values()) == sum(
        1 for _ in json.loads((mixed_zoo / "splits.json").read_text())["batches"][split]
    ) * 2
    for fig in families.values():
        assert {"exact_match", "macro_f1", "corrupted_pattern_accuracy", "baselines", "refined_restored", "refined_side_effect"} <= set(fig)
        assert set(fig["baselines"]) == {"weight_statistics", "output_only", "interpreter+output_only"}
    if "transformer" in families:
        assert "transformer" in report[split]["repair_note"] and families["transformer"]["repair_restored"] is None
        assert families["transformer"]["refined_from"] == "degraded"
    assert "## By family" in (mixed_run / "report.md").read_text()
    from zoo.readers.interpreter.data import open_source, stream

    examples = list(stream(open_source(mixed_zoo), None))
    for family in ("mlp", "transformer"):
        ref = next(e.example_id for e in examples if e.family == family)
        code, out, err = run_cli(capsys, "interpret", "edit", "--run", mixed_run, "--data", mixed_zoo, "--model", ref,
                                 "--add", "palindrome", "--refine-epochs", "1", "--json")
        assert code == 0, err
        result = json.loads(out)
        assert ("does not write transformer weights" in (result["note"] or "")) == (family == "transformer")
        assert "edited_refined" in result["negative_accuracy"]


def test_a_whole_family_held_out_is_read_as_ood_architecture(mixed_zoo, tmp_path):  # noqa: F811
    """Trained on MLPs only, evaluated on the transformers it never saw."""
    import shutil

    from zoo.export.splits import options_from_cli, write_splits
    from zoo.readers.interpreter.evaluate import evaluate
    from zoo.readers.interpreter.train import train

    zoo_dir = Path(shutil.copytree(mixed_zoo, tmp_path / "zoo"))
    write_splits(zoo_dir, options_from_cli(ood_families="transformer", validation=0.2, test=0.2), overwrite=True)
    run = tmp_path / "run"
    train(tiny_config(epochs=2, refine={"epochs": 0}), zoo_dir, run, progress=False)
    report = evaluate(run, zoo_dir, splits=["ood_architecture"])
    assert set(report["ood_architecture"]["by_family"]) == {"transformer"}
    assert report["ood_architecture"]["macro_f1"] is not None


def test_a_mixed_run_resumes_where_it_stopped(mixed_zoo, tmp_path):  # noqa: F811
    """Resume on a mixed zoo: stopped after 1 epoch and rerun, it ends where the uninterrupted run ends."""
    from safetensors.torch import load_file

    from zoo.readers.interpreter.train import train

    config = tiny_config(epochs=2)
    train(config, mixed_zoo, tmp_path / "straight", progress=False)

    class Stop(Exception):
        pass

    def stop_after_one(epoch, metrics, run_dir):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(config, mixed_zoo, tmp_path / "resumed", progress=False, on_epoch=stop_after_one)
    state = train(config, mixed_zoo, tmp_path / "resumed", progress=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    straight, resumed = (load_file(tmp_path / name / "last.safetensors") for name in ("straight", "resumed"))
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key])
    assert float(straight["model.kinds.table"].abs().sum()) > 0  # the transformer kinds were learned


def test_mlp_batches_leave_the_kind_table_untouched_and_old_checkpoints_load(mixed_zoo, records):  # noqa: F811
    """The kinds only other families have get a gradient only from those families' neurons, and a checkpoint
    made before kinds existed (no ``kinds.table``) still loads, the table at zero."""
    from zoo.readers.interpreter.data import collate, open_source
    from zoo.readers.interpreter.train import build_model

    model = build_model(tiny_config(), open_source(mixed_zoo).describe())
    mlps = [e for e in records if e.family == "mlp"][:3]
    model(collate(mlps)).patterns.sum().backward()
    assert model.kinds.table.grad is None
    model(collate([*mlps, next(e for e in records if e.family == "transformer")])).patterns.sum().backward()
    assert float(model.kinds.table.grad.abs().sum()) > 0
    old = {k: v for k, v in model.state_dict().items() if k != "kinds.table"}
    fresh = build_model(tiny_config(), open_source(mixed_zoo).describe())
    fresh.load_weights(old)
    assert float(fresh.kinds.table.abs().sum()) == 0.0
    with pytest.raises(RuntimeError):
        fresh.load_weights({k: v for k, v in old.items() if k != "sig_proj.weight"})
