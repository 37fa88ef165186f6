"""The interpreter: reads a subject model's activation signature and weights, names the
patterns it was trained on and the one that was degraded, predicts its accuracy, and
decodes repaired weights (design section 7).

Modules: ``config`` (settings), ``data`` (shards -> padded neuron-token batches),
``model`` (the permutation-invariant encoder, heads and repair decoder), ``train``,
``evaluate`` (report and baselines), ``edit`` (latent directions), ``tune`` (Ray Tune
sweep) and ``commands`` (``zoo interpret``, ``zoo tune interpreter``). Kept light: the
CLI imports ``commands`` to build its parser; torch loads only when a command runs.
"""

from __future__ import annotations


class InterpreterError(ValueError):
    """Bad input for the interpreter (a run folder, a zoo, a pattern name): one line, exit 2."""
