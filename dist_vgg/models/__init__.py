"""The VGG family (paper Table 1): the table, one builder, initialisation, init-from-A and the dense head.
Imports nothing from data, train, launch or metrics."""

from dist_vgg.models.dense import DenseVGG, dense_logits
from dist_vgg.models.init import SCHEMES as INIT_SCHEMES
from dist_vgg.models.init import initialise
from dist_vgg.models.table import CONFIGS, get_config
from dist_vgg.models.transfer import MAPPINGS, TransferError, TransferReport, transfer_from_a
from dist_vgg.models.vgg import VGG, VGGSpec, build_vgg, count_parameters

__all__ = [
    "CONFIGS",
    "INIT_SCHEMES",
    "MAPPINGS",
    "VGG",
    "DenseVGG",
    "TransferError",
    "TransferReport",
    "VGGSpec",
    "build_vgg",
    "count_parameters",
    "dense_logits",
    "get_config",
    "initialise",
    "transfer_from_a",
]
