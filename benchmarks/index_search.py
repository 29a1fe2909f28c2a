"""Index build and search: exact (flat) against IVF and HNSW on random unit vectors, measured side by side.

    python benchmarks/index_search.py --sizes 100000 1000000 --dim 512 --queries 1000

For each collection size, each kind of :class:`~pml_vmf.inference.EmbeddingIndex`: build seconds (IVF training
included), query seconds per 1,000 queries at k=10, recall@10 against the flat index's exact answers, and the index's
size in memory (its serialised bytes), for a few search settings of each. Random unit vectors are the hard case for approximate search (no cluster
structure): recall on real embeddings is higher. Prints a markdown table; ``--kinds`` picks kinds, ``--out`` appends
the rows to a CSV.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from pml_vmf.files import read_rows, write_rows
from pml_vmf.inference import KINDS, EmbeddingIndex, recall_against_exact


def measure(
    size: int,
    dim: int,
    num_queries: int,
    kinds: list,
    nprobes: list,
    ef_searches: list,
    nlist: int | None = None,
    seed: int = 0,
) -> list:
    """Rows for a collection of ``size`` random unit vectors, queries being fresh random vectors: one per kind and
    search setting (IVF's ``nprobe``, HNSW's ``efSearch``; one build per kind)."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.nn.functional.normalize(torch.randn(size, dim, generator=generator), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(num_queries, dim, generator=generator), dim=1)
    return measure_vectors(data, queries, kinds, nprobes, ef_searches, nlist)


def measure_vectors(
    data: torch.Tensor, queries: torch.Tensor, kinds: list, nprobes: list, ef_searches: list, nlist=None
) -> list:
    """The rows of :func:`measure` for given vectors and queries."""
    import faiss

    size, dim, num_queries = len(data), data.shape[1], len(queries)
    rows, exact = [], None
    for kind in ["flat"] + [k for k in kinds if k != "flat"]:
        index = EmbeddingIndex(dim, kind, nlist=nlist)
        started = time.perf_counter()
        index.add(data)
        built = time.perf_counter() - started
        for setting in {"flat": [None], "ivf": nprobes, "hnsw": ef_searches}[kind]:
            if kind == "ivf":
                index.nprobe = index._index.nprobe = setting
            elif kind == "hnsw":
                index.ef_search = index._index.hnsw.efSearch = setting
            started = time.perf_counter()
            result = index.search(queries, 10)
            searched = time.perf_counter() - started
            exact = result if kind == "flat" else exact
            rows.append({
                "size": size, "dim": dim, "kind": kind, "settings": _settings(index), "build_s": round(built, 2),
                "search_s_per_1000_queries": round(searched * 1000 / num_queries, 3),
                "recall_at_10_vs_flat": round(recall_against_exact(result, exact), 4),
                "index_mib": round(len(faiss.serialize_index(index._index)) / 2**20, 1),
                "threads": torch.get_num_threads(),
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows if "flat" in kinds else [r for r in rows if r["kind"] != "flat"]


def embedded_folder_rows(model: Path, images: Path, num_queries: int, args) -> list:
    """End to end on real images: embed the folder (timed), then the index rows with its first images as queries."""
    from pml_vmf import load_embedder

    embedder = load_embedder(model)
    started = time.perf_counter()
    embeddings, _ = embedder.embed_folder(images, batch_size=128, num_workers=1)
    seconds = time.perf_counter() - started
    print(f"embedded {len(embeddings)} images at {embedder.config.image_size} px in {seconds:.1f} s "
          f"({len(embeddings) / seconds:.0f} images/s, {torch.get_num_threads()} threads)", flush=True)  # fmt: skip
    rows = measure_vectors(embeddings, embeddings[:num_queries], args.kinds, args.nprobe, args.ef_search, args.nlist)
    return [dict(row, embed_s=round(seconds, 1), images=str(images)) for row in rows]


def _settings(index: EmbeddingIndex) -> str:
    if index.kind == "ivf":
        return f"nlist={index.nlist} nprobe={index.nprobe}"
    if index.kind == "hnsw":
        return f"M={index.hnsw_m} efSearch={index.ef_search}"
    return "exact"


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--nlist", type=int, help="IVF lists (default 4 sqrt(N))")
    parser.add_argument("--nprobe", nargs="+", type=int, default=[16, 128], help="IVF lists visited per query")
    parser.add_argument("--ef-search", nargs="+", type=int, default=[64, 256], help="HNSW candidates per query")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", type=Path, help="with --images: index real embeddings instead of random vectors")
    parser.add_argument("--images", type=Path, help="a folder of images, embedded (timed) with --model")
    args = parser.parse_args(argv)
    if args.model is not None:
        rows = embedded_folder_rows(args.model, args.images, args.queries, args)
    else:
        rows = [
            row
            for size in args.sizes
            for row in measure(size, args.dim, args.queries, args.kinds, args.nprobe, args.ef_search, args.nlist)
        ]
    print("| vectors | kind | settings | build s | search s / 1,000 queries | recall@10 vs flat | index MiB |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']:,} | {r['kind']} | {r['settings']} | {r['build_s']} | {r['search_s_per_1000_queries']} | "
              f"{r['recall_at_10_vs_flat']} | {r['index_mib']} |")  # fmt: skip
    if args.out is not None:
        write_rows(args.out, [*read_rows(args.out), *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
