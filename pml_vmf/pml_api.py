"""The one place pml_vmf imports pytorch-metric-learning from, so that a move in PML v3 is a one-file change."""

from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import BaseDistance, CosineSimilarity, DotProductSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper, is_distributed
from pytorch_metric_learning.utils.inference import CustomKNN, FaissKNN
from pytorch_metric_learning.utils.inference import return_results as return_knn_results

__all__ = [
    "AccuracyCalculator",
    "BaseDistance",
    "BaseMetricLossFunction",
    "BaseMiner",
    "CosineSimilarity",
    "CustomKNN",
    "DistributedLossWrapper",
    "DistributedMinerWrapper",
    "DotProductSimilarity",
    "FaissKNN",
    "c_f",
    "is_distributed",
    "lmu",
    "losses",
    "miners",
    "return_knn_results",
]
