"""Evaluation time at Stanford Online Products scale: 60,502 x 512 random embeddings, faiss against PML's fallback.

Runs RecallAtKCalculator (precision@1, R-precision, MAP@R, Recall@1,10,100,1000) once with faiss-cpu (faiss-gpu with
--device cuda) and once with the blocked torch search, then, for reference, PML's AccuracyCalculator in one call over
the whole set (faiss, k="max_bin_count", so without Recall@K), each in a fresh process so that peak memory is its own.

    python benchmarks/eval_time.py
    python benchmarks/eval_time.py --num 10000     # quick
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import time

import torch

from pml_vmf.evaluation import build_accuracy_calculator, retrieval_metrics
from pml_vmf.evaluation.retrieval_metrics import faiss_available
from pml_vmf.pml_api import AccuracyCalculator

METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=60502, help="embeddings (SOP test set: 60,502)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=11316)
    parser.add_argument("--knn-batch-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
    )
    print(f"{args.num} x {args.dim} embeddings, {args.classes} classes, Recall@1,10,100,1000 + {', '.join(METRICS)}")
    print("| search | seconds | peak RSS (MiB) | MAP@R | Recall@1 |\n|---|---:|---:|---:|---:|")
    searches = (["faiss"] if faiss_available() else []) + ["torch"] + (["pml whole set"] if faiss_available() else [])
    context = multiprocessing.get_context("spawn")
    for knn in searches:
        with context.Pool(1) as pool:  # a fresh process per search: ru_maxrss is then that search's peak
            seconds, peak, metrics = pool.apply(measure, (knn, args))
        print(
            f"| {knn} | {seconds:.1f} | {peak:.0f} | {metrics['mean_average_precision_at_r']:.4f} | "
            f"{metrics.get('recall_at_1', metrics['precision_at_1']):.4f} |"
        )


def random_embeddings(args: argparse.Namespace) -> tuple:
    """Classes of about 5 images around random centres, like SOP's products; the same data in every process."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.classes, (args.num,), generator=generator)
    centres = torch.randn(args.classes, args.dim, generator=generator)
    return (centres[labels] + 2.0 * torch.randn(args.num, args.dim, generator=generator)).to(args.device), labels.to(
        args.device
    )


def measure(knn: str, args: argparse.Namespace) -> tuple:
    device = torch.device(args.device)
    embeddings, labels = random_embeddings(args)
    knn_batch_size = args.knn_batch_size
    if knn == "pml whole set":
        calculator = AccuracyCalculator(include=METRICS, k="max_bin_count", device=device)
    else:
        calculator = build_accuracy_calculator(
            (1, 10, 100, 1000), METRICS, knn=knn, knn_batch_size=knn_batch_size, device=device
        )
    started = time.perf_counter()
    metrics = retrieval_metrics(calculator, embeddings, labels)
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, metrics


if __name__ == "__main__":
    main()
