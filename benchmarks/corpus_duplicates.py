"""Near-duplicate documents in the corpus: the distribution of shingle Jaccard indices and
what the sketches cost.

    python benchmarks/corpus_duplicates.py [--root DIR] [--top 40] [--json out.json]

Prints the time to sketch every document, the time to compare every pair, how many pairs sit in
each Jaccard band, the quantiles over random pairs, and the most similar pairs
(see ``sparsecircuits.data.corpus``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time

import numpy as np

from sparsecircuits.data import corpus as corpus_module
from sparsecircuits.data.corpus import (
    document_sketch,
    load_corpus,
    near_duplicate_pairs,
    shingle_jaccard,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    corpus = load_corpus(args.root)
    docs = corpus.train + corpus.heldout
    loaded = time.perf_counter()
    for doc in docs:
        document_sketch(doc)
    sketched = time.perf_counter()
    pairs = near_duplicate_pairs(docs, threshold=0.05)
    compared = time.perf_counter()
    chars = sum(len(d) for d in docs)
    print(f"{len(docs)} documents, {chars / 1e6:.1f} M characters; load {loaded - start:.2f} s, "
          f"sketch {sketched - loaded:.2f} s, compare {len(docs) * (len(docs) - 1) // 2} pairs "
          f"{compared - sketched:.2f} s")
    values = np.array([p[0] for p in pairs])
    bands = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.01]
    counts = {f"[{lo}, {hi})": int(((values >= lo) & (values < hi)).sum())
              for lo, hi in itertools.pairwise(bands)}
    print("pairs per Jaccard band:", counts)
    rng = random.Random(0)
    sample = np.array([shingle_jaccard(*rng.sample(docs, 2)) for _ in range(20_000)])
    quantiles = dict(zip(("50%", "90%", "99%", "99.9%"),
                         np.quantile(sample, [0.5, 0.9, 0.99, 0.999]).round(3).tolist(),
                         strict=True))
    print("20000 random pairs, Jaccard quantiles:", quantiles)
    threshold = corpus_module.NEAR_DUPLICATE
    print(f"pairs at or above the threshold {threshold}: {int((values >= threshold).sum())}")
    for jaccard, a, b in pairs[: args.top]:
        print(f"  {jaccard:.3f}  {a}  {b}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"documents": len(docs), "characters": chars,
                       "sketch_s": sketched - loaded, "compare_s": compared - sketched,
                       "bands": counts, "random_pair_quantiles": quantiles,
                       "pairs": pairs}, f, indent=1)


if __name__ == "__main__":
    main()
