"""Data for the workers: one loader table (`workers.data.sources`: digits, CIFAR-10 binary, image folders, .npy
folders, clips and frame folders, generated sets), each data set decoded once per node into a uint8 (or float32)
cache (`workers.data.cache`) that every trial on the node reads (`workers.data.arrays.FileArray`), split by
indices (`workers.data.splits`), batched with prefetching (`workers.data.batches`) and prepared on the training
device (`workers.data.inputs`)."""

from workers.data.arrays import DatasetError
from workers.data.batches import Batches
from workers.data.dataset import DatasetInfo, DatasetSplits, dataset_info, from_arrays, load_dataset
from workers.data.inputs import InputTransform
from workers.data.splits import Split

__all__ = ["Batches", "DatasetError", "DatasetInfo", "DatasetSplits", "InputTransform", "Split", "dataset_info",
           "from_arrays", "load_dataset"]
