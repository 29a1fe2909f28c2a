"""A faiss index of unit embeddings with the paths of the images they came from, saved as one folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

INDEX_FILE = "index.faiss"
PATHS_FILE = "paths.json"
META_FILE = "index.json"
KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    try:
        import faiss
    except ImportError as error:  # faiss is an extra: faiss-cpu or faiss-gpu
        raise ImportError('EmbeddingIndex needs faiss: pip install "pml-vmf[cpu]" (faiss-cpu) or "pml-vmf[gpu]".') from error
    return faiss


@dataclass
class SearchResult:
    """The ``k`` nearest items of each query: ``scores`` are cosine similarities (``(Q, k)``, best first),
    ``ids`` their positions in the index (-1 where fewer than ``k`` were found), ``paths`` their names."""

    scores: torch.Tensor
    ids: torch.Tensor
    paths: list


class EmbeddingIndex:
    """Cosine search over L2-normalised embeddings with faiss: exact (``flat``, inner product) by default, or
    approximate for large collections (``ivf``: inverted lists, ``hnsw``: a neighbour graph).

    Args:
        dim: the embedding width.
        kind: ``flat`` | ``ivf`` | ``hnsw``.
        nlist: IVF lists (default ``4 * sqrt(N)`` at :meth:`add`, between 1 and N / 39, faiss's minimum training
            points per list).
        nprobe: IVF lists visited per query: more is slower and closer to exact.
        hnsw_m: HNSW neighbours per node.
        ef_search: HNSW candidate-list size per query: more is slower and closer to exact.
    """

    def __init__(
        self, dim: int, kind: str = "flat", *, nlist: Optional[int] = None, nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 64
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"Index kind must be one of {', '.join(KINDS)}, got {kind!r}.")
        self.dim, self.kind = int(dim), kind
        self.nlist, self.nprobe, self.hnsw_m, self.ef_search = nlist, nprobe, hnsw_m, ef_search
        self.paths: list = []
        self.meta: dict = {}  # what index.json recorded, once loaded (the model, the image folder)
        self._index = None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def add(self, embeddings: torch.Tensor, paths: Optional[Sequence[str]] = None) -> "EmbeddingIndex":
        """Adds embeddings (normalised here) and their names; an IVF index is trained on the first batch added."""
        vectors = self._as_vectors(embeddings, "embeddings")
        paths = [str(p) for p in paths] if paths is not None else [str(len(self.paths) + i) for i in range(len(vectors))]
        if len(paths) != len(vectors):
            raise ValueError(f"{len(vectors)} embeddings but {len(paths)} paths: give one path per embedding.")
        if self._index is None:
            self._index = self._new_index(len(vectors))
            if not self._index.is_trained:
                self._index.train(vectors)
        self._index.add(vectors)
        self.paths += paths
        return self

    def search(self, queries: torch.Tensor, k: int = 10) -> SearchResult:
        """The ``k`` most similar indexed items of each query (normalised here)."""
        if len(self) == 0:
            raise ValueError("The index is empty: add embeddings before searching.")
        vectors = self._as_vectors(queries, "queries")
        scores, ids = self._index.search(vectors, min(int(k), len(self)))
        paths = [[self.paths[i] if i >= 0 else None for i in row] for row in ids.tolist()]
        return SearchResult(torch.from_numpy(scores), torch.from_numpy(ids), paths)

    def save(self, folder: Union[str, Path], **meta) -> Path:
        """Writes ``folder/index.faiss``, ``paths.json`` and ``index.json`` (width, kind, settings, ``meta``)."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / INDEX_FILE))
        (folder / PATHS_FILE).write_text(json.dumps(self.paths))
        settings = dict(dim=self.dim, kind=self.kind, nlist=self.nlist, nprobe=self.nprobe, hnsw_m=self.hnsw_m, ef_search=self.ef_search)
        (folder / META_FILE).write_text(json.dumps({**settings, "size": len(self), **meta}, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "EmbeddingIndex":
        """Reads a folder :meth:`save` wrote."""
        faiss = _faiss()
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"No index at {folder}: expected {META_FILE}, {INDEX_FILE} and {PATHS_FILE} (recipes/index.py writes them).")
        meta = json.loads((folder / META_FILE).read_text())
        index = cls(meta["dim"], meta["kind"], nlist=meta["nlist"], nprobe=meta["nprobe"], hnsw_m=meta["hnsw_m"], ef_search=meta["ef_search"])
        index._index = faiss.read_index(str(folder / INDEX_FILE))
        index._apply_search_settings()
        index.paths = json.loads((folder / PATHS_FILE).read_text())
        index.meta = meta
        return index

    def _new_index(self, num_vectors: int):
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            if self.nlist is None:
                self.nlist = int(max(1, min(4 * np.sqrt(num_vectors), num_vectors // 39)))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            index.referenced_objects = [quantizer]  # the IVF index uses it; Python must not free it first
        self._index = index
        self._apply_search_settings()
        return index

    def _apply_search_settings(self) -> None:
        if self.kind == "ivf":
            self._index.nprobe = self.nprobe
        elif self.kind == "hnsw":
            self._index.hnsw.efSearch = self.ef_search

    def _as_vectors(self, embeddings: torch.Tensor, what: str) -> np.ndarray:
        embeddings = torch.as_tensor(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"{what} have shape {tuple(embeddings.shape)}, but this index holds {self.dim}-d embeddings: the model "
                "that embeds them must be the one the index was built with."
            )
        return np.ascontiguousarray(F.normalize(embeddings.detach().float().cpu(), dim=1).numpy())


def recall_against_exact(approximate: SearchResult, exact: SearchResult) -> float:
    """Recall@k of an approximate search: the share of the exact top-k ids it also returns."""
    hits = [len(set(a) & set(e)) for a, e in zip(approximate.ids.tolist(), exact.ids.tolist())]
    return sum(hits) / max(1, exact.ids.numel())
