"""Using a trained model: embed images, index them with faiss, search, and classify by the vMF posterior."""

from .embedder import Embedder, EmbedderConfig, ExportNotFoundError, load_embedder
from .index import KINDS, EmbeddingIndex, SearchResult, recall_against_exact

__all__ = [
    "KINDS",
    "Embedder",
    "EmbedderConfig",
    "EmbeddingIndex",
    "ExportNotFoundError",
    "SearchResult",
    "load_embedder",
    "recall_against_exact",
]
