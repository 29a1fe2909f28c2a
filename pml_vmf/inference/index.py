"""A faiss index of unit embeddings with the paths of the images they came from, saved as one folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DamagedFileError
from ..files import file_problem, file_sha256, staged_folder

INDEX_FILE = "index.faiss"
PATHS_FILE = "paths.json"
META_FILE = "index.json"
INDEX_FOLDER_FILES = (META_FILE, INDEX_FILE, PATHS_FILE)  # index.json first: it marks an index folder
KINDS = ("flat", "ivf", "hnsw")
FORMAT_VERSION = 1


def _faiss():
    try:
        import faiss
    except ImportError as error:  # faiss is an extra: faiss-cpu or faiss-gpu
        raise ImportError(
            'EmbeddingIndex needs faiss: pip install "pml-vmf[cpu]" (faiss-cpu) or "pml-vmf[gpu]".'
        ) from error
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
        self,
        dim: int,
        kind: str = "flat",
        *,
        nlist: Optional[int] = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 64,
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

    def add(self, embeddings: torch.Tensor, paths: Optional[Sequence[str]] = None) -> EmbeddingIndex:
        """Adds embeddings (normalised here) and their names; an IVF index is trained on the first batch added."""
        vectors = self._as_vectors(embeddings, "embeddings")
        paths = (
            [str(p) for p in paths] if paths is not None else [str(len(self.paths) + i) for i in range(len(vectors))]
        )
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

    def save(self, folder: Union[str, Path], *, overwrite: bool = False, **meta) -> Path:
        """Writes ``folder/index.faiss``, ``paths.json`` and ``index.json`` (format version, width, kind, settings,
        size, ``meta``) atomically: the folder appears complete or not at all.

        Args:
            folder: the index folder; it must not exist unless ``overwrite``, which replaces it whole.
            overwrite: replace an existing folder once the new index is complete.
            meta: JSON values recorded in ``index.json`` (the model, its fingerprint, the image folder).

        Raises:
            FileExistsError: when ``folder`` exists and ``overwrite`` is false.
        """
        faiss = _faiss()
        if self._index is None:
            raise ValueError("The index is empty: add embeddings before saving it.")
        settings = dict(
            dim=self.dim,
            kind=self.kind,
            nlist=self.nlist,
            nprobe=self.nprobe,
            hnsw_m=self.hnsw_m,
            ef_search=self.ef_search,
        )
        with staged_folder(Path(folder), overwrite=overwrite, what="index", owned_names=INDEX_FOLDER_FILES) as staging:
            faiss.write_index(self._index, str(staging / INDEX_FILE))
            (staging / PATHS_FILE).write_text(json.dumps(self.paths))
            # Sizes and checksums, checked on load: a flipped byte is named, and no read goes past what was written.
            files = {
                name: {"bytes": (staging / name).stat().st_size, "sha256": file_sha256(staging / name)}
                for name in (INDEX_FILE, PATHS_FILE)
            }
            record = {"format_version": FORMAT_VERSION, **settings, "size": len(self), **meta, "files": files}
            (staging / META_FILE).write_text(json.dumps(record, indent=1) + "\n")
        self.meta = record
        return Path(folder)

    @classmethod
    def load(cls, folder: Union[str, Path]) -> EmbeddingIndex:
        """Reads a folder :meth:`save` wrote, checking that its three files agree.

        Raises:
            FileNotFoundError: when ``folder`` holds no index.
            DamagedFileError: when a file is truncated, altered or disagrees with the others; the message names it.
            ValueError: when the index was written in a newer format version.
        """
        faiss = _faiss()
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(
                f"No index at {folder}: expected {META_FILE}, {INDEX_FILE} and {PATHS_FILE} (recipes/index.py writes them)."
            )
        meta = _read_json(folder / META_FILE, dict, max_bytes=1 << 20)
        missing = [key for key in ("format_version", "dim", "kind", "size") if key not in meta]
        if missing or meta["kind"] not in KINDS:
            raise DamagedFileError(
                f"{folder / META_FILE} lacks {', '.join(missing) or 'a known kind'}: not an index this pml-vmf wrote; build it again with recipes/index.py."
            )
        _check_meta(folder / META_FILE, meta)
        if meta["format_version"] > FORMAT_VERSION:
            raise ValueError(
                f"{folder / META_FILE} has format_version {meta['format_version']}; this pml-vmf reads up to {FORMAT_VERSION}: upgrade pml-vmf."
            )
        for name, expected in meta.get("files", {}).items():
            problem = file_problem(folder / name, expected)
            if problem:
                raise DamagedFileError(f"{problem}: build the index again.")
        index = cls(
            meta["dim"],
            meta["kind"],
            nlist=meta.get("nlist"),
            nprobe=meta.get("nprobe", 16),
            hnsw_m=meta.get("hnsw_m", 32),
            ef_search=meta.get("ef_search", 64),
        )
        if not (folder / INDEX_FILE).is_file():
            raise DamagedFileError(f"{folder / INDEX_FILE} is missing: the index folder is incomplete; build it again.")
        try:
            index._index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
            raise DamagedFileError(
                f"{folder / INDEX_FILE} cannot be read by faiss ({reason}): the file is truncated or damaged; build the index again."
            ) from None
        index._apply_search_settings()
        recorded = meta.get("files", {}).get(PATHS_FILE, {}).get("bytes")
        # Older indexes recorded no size: bound the read by a generous 4 kB a path.
        index.paths = _read_json(
            folder / PATHS_FILE, list, max_bytes=recorded if recorded is not None else 4096 * meta["size"] + 4096
        )
        if not all(isinstance(p, str) for p in index.paths):
            raise DamagedFileError(f"{folder / PATHS_FILE} must list image paths (strings): build the index again.")
        counts = {
            f"{INDEX_FILE} vectors": int(index._index.ntotal),
            f"{PATHS_FILE} entries": len(index.paths),
            f"{META_FILE} size": meta["size"],
        }
        if len(set(counts.values())) != 1 or index._index.d != index.dim:
            raise DamagedFileError(
                f"The files of {folder} disagree ({', '.join(f'{k} {v}' for k, v in counts.items())}; width "
                f"{index._index.d} against {index.dim} recorded): they come from different indexes or a damaged copy; build the index again."
            )
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


_META_TYPES = {
    "format_version": (int,), "dim": (int,), "size": (int,), "kind": (str,), "nlist": (int, type(None)), "nprobe": (int,),
    "hnsw_m": (int,), "ef_search": (int,), "model": (str,), "model_fingerprint": (str,), "images": (str,), "files": (dict,),
}  # fmt: skip


def _check_meta(path: Path, meta: dict) -> None:
    """Every recorded value of index.json of its type and range, or one error that names the key."""
    for key, types in _META_TYPES.items():
        if key in meta and (isinstance(meta[key], bool) or not isinstance(meta[key], types)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise DamagedFileError(
                f"{path}: {key} must be {names}, got {meta[key]!r}: not an index this pml-vmf wrote; build it again."
            )
    for key, least in (
        ("dim", 1),
        ("size", 0),
        ("format_version", 1),
        ("nprobe", 1),
        ("hnsw_m", 1),
        ("ef_search", 1),
        ("nlist", 1),
    ):
        if isinstance(meta.get(key), int) and meta[key] < least:
            raise DamagedFileError(f"{path}: {key} must be at least {least}, got {meta[key]}: build the index again.")
    for name, expected in meta.get("files", {}).items():
        if (
            name not in (INDEX_FILE, PATHS_FILE)
            or not isinstance(expected, dict)
            or not isinstance(expected.get("bytes"), int)
            or isinstance(expected.get("bytes"), bool)
            or not isinstance(expected.get("sha256"), str)
        ):
            raise DamagedFileError(
                f"{path}: files.{name} must record bytes and sha256 of {INDEX_FILE} or {PATHS_FILE}: build the index again."
            )


def _read_json(path: Path, kind: type, max_bytes: int):
    """A JSON value of ``kind`` from ``path``, reading at most ``max_bytes`` (a link to /dev/zero ends there)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise DamagedFileError(
                f"{path} is larger than the {max_bytes} bytes it can be: not the file the index wrote; build the index again."
            )
        value = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise DamagedFileError(f"{path} is missing: the index folder is incomplete; build it again.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(
            f"{path} is not valid JSON ({error}): the file is truncated or damaged; build the index again."
        ) from None
    if not isinstance(value, kind):
        raise DamagedFileError(
            f"{path} must hold a JSON {kind.__name__}, got {type(value).__name__}: build the index again."
        )
    return value


def recall_against_exact(approximate: SearchResult, exact: SearchResult) -> float:
    """Recall@k of an approximate search: the share of the exact top-k ids it also returns."""
    hits = [len(set(a) & set(e)) for a, e in zip(approximate.ids.tolist(), exact.ids.tolist())]
    return sum(hits) / max(1, exact.ids.numel())
