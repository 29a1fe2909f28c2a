"""Using a trained model: embed images, index them with faiss, search, classify by the vMF posterior and reject
queries of no known class.

Reads model folders (JSON + safetensors) and indexes (faiss + JSON) only, never a pickle; imports nothing of the
training stack (accelerate, the recipe config, plots).
"""

from ..models import EmbedderConfig, ModelNotFoundError
from .embedder import UNKNOWN, Embedder, load_embedder
from .index import KINDS, EmbeddingIndex, SearchResult, recall_against_exact

__all__ = [
    "KINDS",
    "Embedder",
    "EmbedderConfig",
    "EmbeddingIndex",
    "ModelNotFoundError",
    "SearchResult",
    "UNKNOWN",
    "load_embedder",
    "recall_against_exact",
]
