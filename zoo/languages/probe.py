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


_PROBES_KEY = b"zoo.language_probes"


@dataclass(frozen=True, eq=False)
class LanguageProbes:
    """A language zoo's probe set: one ``ProbeCorpus`` per grammar of its task, in task order.

    ``hash`` covers every corpus's hash in order; each record's signature is read on its own
    grammar's corpus, and ``probe.parquet`` stores them all (``to_arrow``/``from_arrow``)."""

    corpora: tuple[ProbeCorpus, ...]
    hash: str

    @classmethod
    def of(cls, corpora) -> LanguageProbes:
        h = hashlib.sha256(b"zoo-language-probes-v1\0")
        for corpus in corpora:
            h.update(corpus.hash.encode() + b"\0")
        return cls(tuple(corpora), h.hexdigest())

    def __len__(self) -> int:
        return sum(len(c) for c in self.corpora)

    def to_arrow(self):
        """One row per sentence: ``grammar_index``, ``tokens``, ``length``, and ``label:<name>`` per label
        (null where a grammar lacks it); configs, label vocabularies, seeds and hashes in the metadata."""
        import pyarrow as pa

        names = sorted({n for c in self.corpora for n in c.labels})
        columns: dict[str, list] = {"grammar_index": [], "tokens": [], "length": [], **{f"label:{n}": [] for n in names}}
        for index, corpus in enumerate(self.corpora):
            for row in range(len(corpus)):
                columns["grammar_index"].append(index)
                columns["tokens"].append(corpus.tokens[row].tolist())
                columns["length"].append(int(corpus.lengths[row]))
                for n in names:
                    columns[f"label:{n}"].append(corpus.labels[n][row].tolist() if n in corpus.labels else None)
        meta = [
            {"grammar": c.grammar, "config": c.config, "vocab": list(c.vocab), "seed": c.seed, "hash": c.hash,
             "specs": [[s.name, list(s.values), s.description] for s in c.specs]}
            for c in self.corpora
        ]  # fmt: skip
        types = {"grammar_index": pa.int32(), "tokens": pa.list_(pa.int64()), "length": pa.int32()}
        fields = [pa.field(n, types.get(n, pa.list_(pa.int64()))) for n in columns]
        table = pa.table({n: pa.array(v, f.type) for (n, v), f in zip(columns.items(), fields)})
        return table.replace_schema_metadata({_PROBES_KEY: json.dumps({"corpora": meta, "hash": self.hash}).encode()})

    @classmethod
    def from_arrow(cls, table) -> LanguageProbes:
        """The inverse of ``to_arrow``; ``ValueError`` when a corpus or the whole no longer hashes as stored."""
        raw = (table.schema.metadata or {}).get(_PROBES_KEY)
        if raw is None:
            raise ValueError("not a language probe set (no zoo.language_probes metadata)")
        meta = json.loads(raw)
        index = np.asarray(table.column("grammar_index").to_pylist())
        corpora = []
        for i, m in enumerate(meta["corpora"]):
            rows = np.flatnonzero(index == i)
            tokens = np.asarray([table.column("tokens")[int(r)].as_py() for r in rows], dtype=np.int64)
            specs = tuple(LabelSpec(name, tuple(values), text) for name, values, text in m["specs"])
            labels = {
                s.name: np.asarray([table.column(f"label:{s.name}")[int(r)].as_py() for r in rows], dtype=np.int64)
                for s in specs
            }
            digest = ProbeCorpus.digest(m["config"], m["vocab"], tokens, labels, specs)
            if digest != m["hash"]:
                raise ValueError(f"probe corpus {i} ({m['grammar']}) does not hash as stored: damaged")
            lengths = np.asarray(table.column("length").to_numpy()[rows], dtype=np.int64)
            corpora.append(ProbeCorpus(m["grammar"], m["config"], tuple(m["vocab"]), tokens, lengths, labels, specs, int(m["seed"]), digest))
        probes = cls.of(corpora)
        if probes.hash != meta["hash"]:
            raise ValueError("language probe set does not hash as stored: damaged")
        return probes


def is_language_probes(table) -> bool:
    return _PROBES_KEY in (table.schema.metadata or {})
