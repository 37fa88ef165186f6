"""The fixed probe corpus of a language: sequences with every per-token label, and a hash.

Like ``zoo.patterns.sampler.ProbeSet`` for pattern zoos: a language zoo fingerprints every
model on one corpus (signatures), scores probes and SAE latents against its labels, and
identifies it by ``hash``, which covers the grammar, the vocabulary, the tokens and every
label, byte order and dtype fixed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from zoo.languages.base import LabelSpec


@dataclass(frozen=True, eq=False)
class ProbeCorpus:
    grammar: str
    config: dict
    """the language config it was drawn from (``model_dump``)"""
    vocab: tuple[str, ...]
    tokens: np.ndarray
    lengths: np.ndarray
    labels: dict[str, np.ndarray]
    specs: tuple[LabelSpec, ...]
    seed: int
    hash: str

    def __len__(self) -> int:
        return len(self.tokens)

    @staticmethod
    def digest(config: dict, vocab, tokens: np.ndarray, labels: dict[str, np.ndarray], specs) -> str:
        h = hashlib.sha256(b"zoo-language-probe-v1\0")
        h.update(json.dumps(config, sort_keys=True).encode())
        h.update(json.dumps(list(vocab)).encode())
        h.update(json.dumps([[s.name, list(s.values)] for s in specs]).encode())
        h.update(np.asarray(tokens.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(tokens, dtype="<i8").tobytes())
        for name in sorted(labels):
            h.update(name.encode() + b"\0")
            h.update(np.ascontiguousarray(labels[name], dtype="<i8").tobytes())
        return h.hexdigest()


def probe_corpus(config, seed: int, n: int = 256) -> ProbeCorpus:
    """``n`` sentences of ``config``'s language drawn with ``seed``, labelled, and hashed."""
    from zoo.languages import language_for

    sample = language_for(config).sample(n, seed)
    data = config.model_dump(mode="json")
    digest = ProbeCorpus.digest(data, sample.vocab, sample.tokens, sample.labels, sample.specs)
    return ProbeCorpus(
        sample.grammar, data, sample.vocab, sample.tokens, sample.lengths, sample.labels, sample.specs,
        int(seed), digest,
    )
