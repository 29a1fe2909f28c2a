"""Embed a folder of images and index it: ``accelerate launch recipes/index.py --model M --images F --out INDEX``.

M is an export folder (``recipes/export.py``) or a run folder. Every image under F, at any depth, is embedded in
batches (files that are not images, or whose header cannot be read, are skipped with a warning that names them), on
every process under ``accelerate launch``; the main process writes INDEX/ (``index.faiss``, ``paths.json``,
``index.json``, which records the absolute image paths, the model and its fingerprint) into a temporary folder renamed
into place. An existing INDEX is left as it is unless ``--overwrite`` (then it is replaced whole). ``--kind flat`` (exact inner-product search, the default) suits up to a few million images;
``ivf`` and ``hnsw`` are approximate and faster at scale (their recall against flat search: BENCHMARKS.md).

    accelerate launch recipes/index.py --model exports/emoji --images data/emoji/test --out indexes/emoji
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from accelerate import Accelerator

from pml_vmf.data import DatasetNotFoundError
from pml_vmf.errors import one_line
from pml_vmf.files import check_out_folder
from pml_vmf.inference import KINDS, EmbeddingIndex, ModelNotFoundError, load_embedder
from pml_vmf.inference.index import INDEX_FOLDER_FILES
from pml_vmf.training.builders import multiprocess_without_cuda


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="an export folder or a run folder")
    parser.add_argument("--images", required=True, type=Path, help="a folder of images (any depth)")
    parser.add_argument("--out", required=True, type=Path, help="the index folder to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out folder (once the new index is complete)"
    )
    parser.add_argument("--kind", default="flat", choices=KINDS)
    parser.add_argument("--nlist", type=int, help="ivf: inverted lists (default 4 sqrt(N))")
    parser.add_argument("--nprobe", type=int, default=16, help="ivf: lists visited per query")
    parser.add_argument("--hnsw-m", type=int, default=32, help="hnsw: neighbours per node")
    parser.add_argument("--ef-search", type=int, default=64, help="hnsw: candidates per query")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:  # before the long work, not after
        check_out_folder(args.out, args.overwrite, "index", INDEX_FOLDER_FILES)
    except FileExistsError as error:
        print(f"index.py: {error}", file=sys.stderr)
        return 2
    accelerator = Accelerator(cpu=multiprocess_without_cuda())
    try:
        embedder = load_embedder(args.model, device=accelerator.device)
        started = time.perf_counter()
        # Absolute paths: the index is searched from any directory, and may be moved.
        embeddings, paths = embedder.embed_folder(
            args.images.resolve(), batch_size=args.batch_size, num_workers=args.num_workers, accelerator=accelerator
        )
        seconds = time.perf_counter() - started
        if accelerator.is_main_process:
            index = EmbeddingIndex(
                embedder.embedding_size,
                args.kind,
                nlist=args.nlist,
                nprobe=args.nprobe,
                hnsw_m=args.hnsw_m,
                ef_search=args.ef_search,
            )
            index.add(embeddings, paths)
            model = dict(model=str(args.model.resolve()), model_fingerprint=embedder.fingerprint)
            index.save(args.out, overwrite=args.overwrite, images=str(args.images.resolve()), **model)
            print(f"Indexed {len(paths)} images ({embedder.embedding_size}-d, {args.kind}) in {seconds:.1f} s of embedding "
                  f"on {accelerator.num_processes} process(es): {args.out}")  # fmt: skip
    except (
        ModelNotFoundError,
        DatasetNotFoundError,
        ValueError,
        OSError,
    ) as error:  # OSError: a read-only or full disk
        print(f"index.py: {one_line(error)}", file=sys.stderr)  # a worker's error comes with its traceback: one line
        return 2
    finally:
        accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
