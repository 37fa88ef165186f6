"""Where torch computes: ``auto`` picks CUDA, then Apple's mps, then the CPU; mps fallbacks are one line."""

from __future__ import annotations

import warnings

import pytest
import torch

from zoo.runtime import DeviceError, fallback_note, note_cpu_fallbacks, pick_device, resolve_device

TORCH_FALLBACK_WARNING = (
    "The operator 'aten::_fused_adam_' is not currently supported on the MPS backend and will fall back to "
    "run on the CPU. This may have performance implications. (Triggered internally at "
    "/Users/runner/work/pytorch/aten/src/ATen/mps/MPSFallback.mm:14.)"
)


@pytest.mark.parametrize(
    ("cuda", "mps", "chosen"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_takes_cuda_then_mps_then_the_cpu(cuda, mps, chosen):
    assert pick_device("auto", cuda=cuda, mps=mps) == chosen


@pytest.mark.parametrize(("cuda", "mps"), [(True, True), (False, False)])
def test_an_explicit_device_is_kept_whatever_else_is_present(cuda, mps):
    assert pick_device("cpu", cuda=cuda, mps=mps) == "cpu"
    if cuda:
        assert pick_device("cuda", cuda=cuda, mps=mps) == "cuda"
        assert pick_device("mps", cuda=cuda, mps=mps) == "mps"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_an_absent_device_asked_for_by_name_is_refused_naming_the_setting(device):
    with pytest.raises(DeviceError, match=rf"^probes.device is '{device}' but torch sees no "):
        pick_device(device, cuda=False, mps=False, setting="probes.device")


def test_resolve_device_asks_torch_what_it_sees():
    mps = torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")


def test_torch_s_mps_fallback_warning_becomes_one_note_line():
    note = fallback_note(TORCH_FALLBACK_WARNING)
    assert note == "zoo: note: aten::_fused_adam_ has no mps kernel in this torch; it runs on the CPU (slower)"
    assert fallback_note("some other warning") is None


def test_the_fallback_hook_prints_one_line_and_leaves_other_warnings_alone(monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *rest, **kw: shown.append(str(message)))
    note_cpu_fallbacks()
    note_cpu_fallbacks()  # idempotent: one hook, one line
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(TORCH_FALLBACK_WARNING, UserWarning, stacklevel=1)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == fallback_note(TORCH_FALLBACK_WARNING) + "\n"
    assert shown == ["an unrelated warning"]


def test_importing_zoo_lets_mps_fall_back_to_the_cpu_unless_told_otherwise():
    """torch reads the variable once, when it is imported: ``import zoo`` sets it first."""
    import os
    import subprocess
    import sys

    show = "import zoo, os; print(os.environ.get('PYTORCH_ENABLE_MPS_FALLBACK'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
    for given, seen in ((None, "1"), ("0", "0")):
        run_env = env if given is None else {**env, "PYTORCH_ENABLE_MPS_FALLBACK": given}
        out = subprocess.run([sys.executable, "-c", show], env=run_env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == seen
