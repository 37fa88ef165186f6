"""Formal languages with per-token ground truth: Dyck-k, Expr, a small English PCFG.

Each language is a probabilistic grammar (``grammar.Grammar``) with a seeded, vectorized
sampler that emits token ids (``<pad> <bos> <eos>`` then the words) under a length cap
(rejection), integer label arrays from the derivation with named label vocabularies
(``base.LabelSpec``), and an O(length) validator::

    from zoo.languages import language_for, parse_language, probe_corpus
    config = parse_language({"grammar": "dyck", "k": 2, "p_nest": 0.3, "max_len": 64})
    lang = language_for(config)
    sample = lang.sample(10_000, seed=0)     # tokens [n, 64], lengths, labels {"depth": ..}
    assert lang.validate(sample.tokens).all()
    corpus = probe_corpus(config, seed=0)    # fixed, labelled, hashed

How the language task plugs in (``zoo.config.LanguageTask``, the ``language:`` block of a
zoo config; ``zoo.factory.language`` runs it): ``grammars`` holds ``{share, grammar}``
entries (``grammar`` is the discriminated union of ``config``), beside the probe-corpus
size. Per batch the factory draws a grammar config, builds ``language_for(config)`` and trains the
transformer family on ``sample(n, seed).tokens`` by next-token cross-entropy with PAD masked
(targets are ``tokens[:, 1:]``; ``len(language.vocab)`` is the model's vocabulary). The record
keeps ``config.model_dump()``, the batch seed, and the signature on
``probe_corpus(config, zoo_seed)`` (its ``hash`` goes in the record as the probe-set hash). The
validity metric samples N ≥ 128 generations from BOS and reports ``validate(generations).mean()``;
generations run to the first EOS, and what follows it is ignored. Next-token accuracy on legal
continuations reads ``legal_next(tokens)`` (bool ``[n, T, V]``). Per-token labels of the probe
corpus are the targets ``zoo probe`` and the SAE scoring read; Dyck and Expr labels are functions
of the tokens (``annotate``), so valid generations can be labelled too.
"""

from __future__ import annotations

import functools

from zoo.languages.base import Language, LabelSpec, LanguageSample
from zoo.languages.config import GRAMMARS, DyckConfig, EnglishConfig, ExprConfig, LanguageConfig, parse_language
from zoo.languages.grammar import BOS, EOS, PAD, Grammar
from zoo.languages.probe import LanguageProbes, ProbeCorpus, probe_corpus

__all__ = [
    "BOS", "EOS", "GRAMMARS", "PAD", "DyckConfig", "EnglishConfig", "ExprConfig", "Grammar", "LabelSpec",
    "Language", "LanguageConfig", "LanguageProbes", "LanguageSample", "ProbeCorpus", "language_for", "parse_language", "probe_corpus",
]


@functools.lru_cache(maxsize=64)
def language_for(config) -> Language:
    """The language of a (frozen, hashable) config; cached per process."""
    from zoo.languages.dyck import Dyck
    from zoo.languages.english import English
    from zoo.languages.expr import Expr

    kinds = {"dyck": Dyck, "expr": Expr, "english": English}
    return kinds[config.grammar](config)
