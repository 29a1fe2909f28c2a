"""Dataset readers for the DML protocols, splits, transforms and the m-per-class sampler."""

from .dataset_files import DatasetNotFoundError
from .decoded_image_cache import DecodedImageCache, split_eval_transform
from .fashion_mnist import read_fashion_mnist
from .image_dataset import ImageDataset, UnreadableImageError, load_rgb, rgb_on_white
from .labelled_images import LabelledImages, RetrievalSplits, class_disjoint_halves, hold_out_validation
from .protocols import PROTOCOL_COUNTS, READERS, load_protocol
from .sampler import MPerClassBatchSampler
from .transforms import build_transforms, eval_transform_from_settings, eval_transform_settings

__all__ = [
    "DatasetNotFoundError",
    "DecodedImageCache",
    "ImageDataset",
    "LabelledImages",
    "MPerClassBatchSampler",
    "PROTOCOL_COUNTS",
    "READERS",
    "RetrievalSplits",
    "UnreadableImageError",
    "build_transforms",
    "eval_transform_from_settings",
    "eval_transform_settings",
    "class_disjoint_halves",
    "hold_out_validation",
    "load_protocol",
    "load_rgb",
    "rgb_on_white",
    "read_fashion_mnist",
    "split_eval_transform",
]
