"""Tabular data: CSV reading, preprocessing, label encoding, splits and mini-batches.

Typical use::

    table = read_csv("credit_data.csv", target="Status")
    train, test = train_test_split(table, stratify=table.target, seed=0)
    pre = Preprocessor().fit(train)
    X_train, X_test = pre.transform(train), pre.transform(test)
    enc = LabelEncoder(positive="bad").fit(train.target)
    y_train, y_test = enc.transform(train.target), enc.transform(test.target)
"""

from __future__ import annotations

from lepton_nn.data.batching import Batches, iterate_batches, n_batches
from lepton_nn.data.csv_reader import read_csv
from lepton_nn.data.labels import LabelEncoder, compute_class_weight, compute_sample_weight
from lepton_nn.data.preprocess import Preprocessor
from lepton_nn.data.split import KFold, StratifiedKFold, train_test_split
from lepton_nn.data.stream import TableStream, stream
from lepton_nn.data.table import DEFAULT_NA, Table

__all__ = [
    "DEFAULT_NA",
    "Batches",
    "KFold",
    "LabelEncoder",
    "Preprocessor",
    "StratifiedKFold",
    "Table",
    "TableStream",
    "compute_class_weight",
    "compute_sample_weight",
    "iterate_batches",
    "n_batches",
    "read_csv",
    "stream",
    "train_test_split",
]
