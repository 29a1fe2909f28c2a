"""Search an index with query images: ``python recipes/search.py --index INDEX --query IMAGE_OR_FOLDER -k 10``.

Prints each query's nearest indexed images with their cosine similarity; ``--grid FILE`` also draws them as a picture
(nothing is written into the index folder, which may be shared and read-only). ``--classify`` also prints the most
probable training class and its probability under the vMF posterior, for a model trained with vMF; a model calibrated
with recipes/calibrate.py answers "unknown" for a query whose open-set score falls below its threshold. The model is the one the index was built with (``--model`` overrides it); a model whose
fingerprint (weights and eval transform) differs from the one recorded in the index is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pml_vmf.data import DatasetNotFoundError
from pml_vmf.data.image_folder import IMAGE_EXTENSIONS, image_header_error, list_images
from pml_vmf.inference import EmbeddingIndex, ModelNotFoundError, load_embedder


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--query", required=True, type=Path, help="an image, or a folder of images")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--model", type=Path, help="default: the model the index was built with")
    parser.add_argument("--classify", action="store_true", help="nearest class mean and its vMF posterior probability")
    parser.add_argument("--grid", type=Path, help="write the queries and their results as a picture (PNG) here")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"-k is the number of results per query, at least 1; got {args.k}.")
    try:
        index = EmbeddingIndex.load(args.index)
        model = args.model or index.meta.get("model")
        if model is None:
            raise ModelNotFoundError(f"{args.index} does not record the model it was built with: pass it with --model.")
        embedder = load_embedder(model)
        _check_same_model(index, embedder, model)
        queries = _query_images(args.query)
        embeddings = embedder.embed_images(queries)
        result = index.search(embeddings, args.k)
        classes = _classes(embedder, embeddings) if args.classify else None
    except (ModelNotFoundError, DatasetNotFoundError, FileNotFoundError, ValueError) as error:
        print(f"search.py: {error}", file=sys.stderr)
        return 2
    for q, query in enumerate(queries):
        print(f"{query}")
        if classes is not None:
            print(f"  class: {classes[q]}")
        for score, path in zip(result.scores[q].tolist(), result.paths[q]):
            print(f"  {score:.4f}  {path}")
    if args.grid is not None:
        try:
            _plot(queries, result, args.grid)
        except OSError as error:  # a read-only folder, a full disk, an indexed image since deleted
            print(f"search.py: the picture was not written: {error}", file=sys.stderr)
            return 2
        print(f"Retrieval grid: {args.grid}")
    return 0


def _classes(embedder, embeddings) -> list:
    """Each query's answer: the class and its posterior probability, or "unknown" with its score and threshold."""
    from pml_vmf.inference import UNKNOWN

    labels, probabilities = embedder.classify(embeddings)
    open_set, names = embedder.config.open_set, embedder.config.class_names
    scores = embedder.open_set_scores(embeddings)[open_set["score"]] if open_set is not None else None
    answers = []
    for q, (label, probability) in enumerate(zip(labels.tolist(), probabilities.tolist())):
        if label == UNKNOWN:
            answers.append(
                f"unknown (of no known class: {open_set['score']} {scores[q]:.4g} below the threshold "
                f"{open_set['threshold']:.4g})"
            )
        else:
            answers.append(f"{names[label] if names else label} (vMF posterior {probability:.3f})")
    return answers


def _check_same_model(index: EmbeddingIndex, embedder, model) -> None:
    """Refuses a model other than the one that built the index: its embeddings would rank the index at random."""
    recorded = index.meta.get("model_fingerprint")
    if recorded is not None and recorded != embedder.fingerprint:
        raise ValueError(
            f"{model} is not the model {index.meta.get('model', 'unknown')} the index was built with (fingerprints "
            f"{embedder.fingerprint[:12]} and {recorded[:12]} differ): search with that model, or rebuild the index with "
            f"this one (recipes/index.py --model {model} --overwrite)."
        )


def _query_images(query: Path) -> list:
    if query.is_dir():
        return list_images(query)
    if not query.is_file():
        raise FileNotFoundError(f"Query {query} does not exist.")
    reason = image_header_error(query)
    if reason is not None:
        raise ValueError(
            f"Query {query} is not an image PIL can read ({reason}); give an image ({', '.join(IMAGE_EXTENSIONS)}) or a folder."
        )
    return [query]


def _plot(queries: list, result, path: Path) -> None:
    from PIL import Image

    from pml_vmf.data import rgb_on_white
    from pml_vmf.evaluation.plots import plot_search_grid

    def load(p):
        with Image.open(p) as image:
            return rgb_on_white(image)  # as the model saw it: transparency on white, deep images scaled

    plot_search_grid(
        [load(q) for q in queries], [[load(p) for p in row if p] for row in result.paths], result.scores, path
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
