"""A faiss k-NN for PML's AccuracyCalculator whose reference index is built once per evaluation, on this process's GPU."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Callable, Optional

import torch

from ..pml_api import return_knn_results

LOGGER = logging.getLogger(__name__)
# faiss-gpu's brute-force search takes k up to this (faiss/gpu/utils/DeviceDefs.cuh); larger k searches on the CPU.
MAX_GPU_K = 2048


def _faiss():
    import faiss  # an extra (faiss-cpu or faiss-gpu): imported when a search runs

    return faiss


def faiss_gpu_count() -> int:
    """The GPUs faiss can use: 0 with faiss-cpu."""
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _gpu_index(cpu_index, device_id: int):
    faiss = _faiss()
    resources = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(resources, device_id, cpu_index)
    index.referenced_resources = resources  # keep them alive as long as the index
    return index


class FaissIndexKNN:
    """PML's ``knn_func`` interface, ``(query, k, reference, ref_includes_query) -> (distances, indices)``, over a
    flat L2 faiss index (PML's ``FaissKNN`` default; on L2-normalised embeddings its ranking is the cosine one).

    PML's ``FaissKNN`` builds the index anew at every call and copies it to every GPU of the machine. A blocked
    evaluation searches the same reference once per block of queries, so :meth:`indexed` builds the index once and
    searches it as often as needed. On CUDA tensors the index lives on the tensors' own GPU (the process's own, under
    DDP); when that GPU cannot hold it (PML issues 353, 566, 694), or for ``k`` above faiss-gpu's limit, it falls back
    to the CPU index with a warning that says why.

    Args:
        index_init_fn: builds an empty CPU index for a width ``d``; default ``faiss.IndexFlatL2``.
    """

    def __init__(self, index_init_fn: Optional[Callable] = None) -> None:
        self.index_init_fn = index_init_fn

    def __call__(self, query: torch.Tensor, k: int, reference: torch.Tensor, ref_includes_query: bool = False) -> tuple:
        with self.indexed(reference) as search:
            return search(query, k, ref_includes_query)

    @staticmethod
    def _gpu_device(reference: torch.Tensor) -> Optional[int]:
        """The GPU to index on: that of CUDA embeddings (this process's own), where faiss has GPU support."""
        if reference.is_cuda and faiss_gpu_count() > 0:
            return reference.device.index or 0
        return None

    @contextlib.contextmanager
    def indexed(self, reference: torch.Tensor) -> Iterator[Callable]:
        """Builds the index of ``reference`` once and yields ``search(query, k, ref_includes_query=False)``.

        The search returns ``(distances, indices)`` on the device of ``query``, as PML's kNN functions do.
        """
        faiss = _faiss()
        reference = reference.detach().float()
        init = self.index_init_fn or faiss.IndexFlatL2
        cpu_index = init(reference.shape[1])
        cpu_index.add(reference.cpu().numpy())
        gpu_index = None
        device_id = self._gpu_device(reference)
        if device_id is not None:
            try:
                gpu_index = _gpu_index(cpu_index, device_id)
            except (RuntimeError, MemoryError) as error:
                LOGGER.warning(
                    "faiss could not put the index of %d x %d reference embeddings on %s (%s); searching on the "
                    "CPU instead, which is slower but exact. Free GPU memory before evaluating (smaller "
                    "train.batch_size, empty the cache) to search on the GPU.",
                    *reference.shape,
                    reference.device,
                    str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__,
                )

        def search(query: torch.Tensor, k: int, ref_includes_query: bool = False) -> tuple:
            k_searched = k + int(ref_includes_query)
            index = gpu_index if gpu_index is not None and k_searched <= MAX_GPU_K else cpu_index
            if index is cpu_index and gpu_index is not None:
                LOGGER.warning("k = %d is above faiss-gpu's limit of %d: searching on the CPU.", k_searched, MAX_GPU_K)
            distances, indices = index.search(query.detach().float().cpu().numpy(), k_searched)
            distances = torch.from_numpy(distances).to(query.device)
            indices = torch.from_numpy(indices).to(query.device)
            return return_knn_results(distances, indices, ref_includes_query)

        yield search
