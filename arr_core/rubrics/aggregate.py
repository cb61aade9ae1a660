"""Pooling verified criteria: normalise, de-duplicate, and select a diverse subset deterministically.

ARR (Auto-Rubric as Reward) pools the query-specific criteria that passed verification and keeps a
non-redundant subset before categorising them into themes. The paper's released code embeds every
criterion with a 4B text-embedding model and runs an unseeded coding-rate (MCR²-style) greedy
selection. Here, on purpose:

- Text vectors are plain hashed TF-IDF features (word 1–2-grams and character 3–5-grams, hashed
  with blake2b into ``n_features`` buckets, sublinear tf, smooth idf over the pool, L2-normalised).
  No model download; the same text always gives the same vector. An embedding model can be added
  later behind the same ``vectors`` argument of :func:`select_diverse`.
- Near-duplicates (cosine ≥ ``threshold`` on those vectors) are merged into the first-seen text;
  the merged text's *support* (how many verified criteria it stands for) is kept.
- Selection is a greedy coding-rate maximisation, ``R(S) = ½·logdet(I + α·G_S)`` with ``G_S`` the
  cosine Gram matrix of the chosen vectors, each step's gain weighted by ``1 + log(support)`` so that
  criteria many pairs agreed on are preferred among equally novel ones. Ties are broken by a seeded
  permutation, so the result is a pure function of (criteria, k, seed).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_BULLET = re.compile(r"^\s*(?:[-*•·]+|\(?\d+[.):]|\(?[a-zA-Z][.)]|rubric\s*\d+\s*:|criterion\s*\d+\s*:|tip\s*:)\s*",
                     re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class PooledCriterion:
    """A de-duplicated criterion: display text, how many input criteria it stands for, first index."""

    text: str
    support: int
    first_index: int


def normalize_criterion(text: str) -> str:
    """Display form: no list bullets/numbering, single spaces, no wrapping quotes; '' if nothing is left.

    Applied repeatedly so "1. - Tip: ..." loses all three prefixes.
    """
    if not isinstance(text, str):
        raise TypeError(f"criterion must be a string, got {type(text).__name__}")
    out = _SPACE.sub(" ", text).strip()
    while True:
        stripped = _BULLET.sub("", out, count=1).strip().strip("\"'“”‘’`").strip()
        if stripped == out:
            break
        out = stripped
    return out


def criterion_key(text: str) -> str:
    """Identity for exact de-duplication: lower-case alphanumeric words joined by single spaces."""
    return " ".join(_WORD.findall(text.lower()))


def _bucket(feature: str, n_features: int) -> int:
    h = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") % n_features


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    feats = [f"w:{w}" for w in words]
    feats += [f"b:{a} {b}" for a, b in zip(words[:-1], words[1:], strict=True)]
    joined = f" {' '.join(words)} "
    for n in (3, 4, 5):
        feats += [f"c{n}:{joined[i:i + n]}" for i in range(max(0, len(joined) - n + 1))]
    return feats


def text_vectors(texts: Sequence[str], *, n_features: int = 1 << 13) -> np.ndarray:
    """Hashed TF-IDF vectors, shape (n, n_features), float64, rows L2-normalised (zero rows stay zero).

    The idf is computed over ``texts`` themselves, so vectors depend on the pool they come from.
    """
    n = len(texts)
    counts = np.zeros((n, n_features), dtype=np.float64)
    for i, t in enumerate(texts):
        for f in _features(t):
            counts[i, _bucket(f, n_features)] += 1.0
    tf = np.where(counts > 0, 1.0 + np.log(np.maximum(counts, 1.0)), 0.0)
    df = (counts > 0).sum(axis=0)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    x = tf * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def deduplicate(criteria: Sequence[str], *, threshold: float = 0.9) -> list[PooledCriterion]:
    """Normalise, drop empties, merge exact (by :func:`criterion_key`) and near duplicates.

    Near duplicates: cosine similarity of :func:`text_vectors` ≥ ``threshold``; each text is merged
    into the earliest kept text it is that close to. The output keeps first-appearance order.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"dedup threshold must be in (0, 1], got {threshold}")
    kept: list[str] = []
    support: list[int] = []
    first: list[int] = []
    by_key: dict[str, int] = {}
    for i, raw in enumerate(criteria):
        text = normalize_criterion(raw)
        key = criterion_key(text)
        if not key:
            continue
        if key in by_key:
            support[by_key[key]] += 1
            continue
        by_key[key] = len(kept)
        kept.append(text)
        support.append(1)
        first.append(i)
    if not kept:
        return []
    vecs = text_vectors(kept)
    sims = vecs @ vecs.T
    parent = list(range(len(kept)))
    for j in range(len(kept)):
        for i in range(j):
            if parent[i] == i and sims[i, j] >= threshold:
                parent[j] = i
                break
    merged: dict[int, int] = {}
    for j, p in enumerate(parent):
        merged[p] = merged.get(p, 0) + support[j]
    return [PooledCriterion(kept[i], merged[i], first[i]) for i in range(len(kept)) if parent[i] == i]


def select_diverse(vectors: np.ndarray, k: int, *, seed: int = 0, weights: Sequence[float] | None = None,
                   alpha: float = 4.0) -> list[int]:
    """Greedy weighted coding-rate selection of ``k`` row indices of ``vectors`` (n, d).

    Step gain for candidate c given chosen S: ``w_c · (logdet(I + α·G_{S∪c}) − logdet(I + α·G_S))``.
    Candidates are visited in a permutation drawn from ``seed``; the first maximum wins, so the seed
    only decides exact ties. Returns indices in selection order; all indices when k ≥ n.
    """
    n = vectors.shape[0]
    if k < 0:
        raise ValueError(f"k must be ≥ 0, got {k}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have one entry per vector ({n}), got shape {w.shape}")
    order = np.random.default_rng(seed).permutation(n)
    gram = vectors @ vectors.T
    chosen: list[int] = []
    base = 0.0
    for _ in range(min(k, n)):
        best, best_gain, best_logdet = -1, -math.inf, 0.0
        for c in order:
            if c in chosen:
                continue
            idx = chosen + [int(c)]
            _, logdet = np.linalg.slogdet(np.eye(len(idx)) + alpha * gram[np.ix_(idx, idx)])
            gain = w[c] * (logdet - base)
            if gain > best_gain + 1e-12:
                best, best_gain, best_logdet = int(c), gain, float(logdet)
        chosen.append(best)
        base = best_logdet
    return chosen


def select_criteria(criteria: Sequence[str], *, max_rubrics: int, seed: int = 0,
                    dedup_threshold: float = 0.9) -> list[str]:
    """De-duplicate ``criteria`` and keep at most ``max_rubrics`` diverse ones, most supported first.

    The returned list is ordered by (support desc, first appearance), so equal inputs give an equal
    list and a rubric set's id does not depend on the greedy visiting order.
    """
    if max_rubrics < 1:
        raise ValueError(f"max_rubrics must be ≥ 1, got {max_rubrics}")
    pooled = deduplicate(criteria, threshold=dedup_threshold)
    if len(pooled) > max_rubrics:
        vecs = text_vectors([p.text for p in pooled])
        weights = [1.0 + math.log(p.support) for p in pooled]
        picked = set(select_diverse(vecs, max_rubrics, seed=seed, weights=weights))
        pooled = [p for i, p in enumerate(pooled) if i in picked]
    pooled.sort(key=lambda p: (-p.support, p.first_index))
    return [p.text for p in pooled]
