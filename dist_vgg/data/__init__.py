"""Data: the shard format (`format`), and the input pipelines that read it (DALI and the CPU path).

The trainer and evaluation use only the names exported here. They load on first use, so that
`from dist_vgg.data import format` (data_prep) does not import torch, PIL or DALI."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "RESIZE_FILTER": "augment",
    "preprocessing_for": "augment",
    "resolve_augment": "augment",
    "AugmentConfig": "config",
    "DataConfig": "config",
    "DatasetInfo": "dataset",
    "dataset_info": "dataset",
    "build_eval_loader": "factory",
    "build_train_loader": "factory",
    "choose_loader": "factory",
    "EvalBatch": "loader",
    "SyntheticLoader": "loader",
    "TrainLoader": "loader",
}
__all__ = [  # noqa: RUF022 - grouped like _EXPORTS
    "RESIZE_FILTER",
    "preprocessing_for",
    "resolve_augment",
    "AugmentConfig",
    "DataConfig",
    "DatasetInfo",
    "dataset_info",
    "build_eval_loader",
    "build_train_loader",
    "choose_loader",
    "EvalBatch",
    "SyntheticLoader",
    "TrainLoader",
]

if TYPE_CHECKING:
    from dist_vgg.data.augment import RESIZE_FILTER, preprocessing_for, resolve_augment
    from dist_vgg.data.config import AugmentConfig, DataConfig
    from dist_vgg.data.dataset import DatasetInfo, dataset_info
    from dist_vgg.data.factory import build_eval_loader, build_train_loader, choose_loader
    from dist_vgg.data.loader import EvalBatch, SyntheticLoader, TrainLoader


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dist_vgg.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dist_vgg.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
