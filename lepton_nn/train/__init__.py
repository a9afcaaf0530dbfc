"""Floor 7: training. ``Trainer`` (fit / evaluate / predict), callbacks, progress, History.

Example::

    from lepton_nn.nn import Dense, Sequential
    from lepton_nn.train import EarlyStopping, Trainer

    trainer = Trainer(Sequential([Dense(16, "relu"), Dense(1)]), "bce", "adam", ["roc_auc"])
    history = trainer.fit(X, y, epochs=50, validation_split=0.2,
                          callbacks=[EarlyStopping(patience=5, restore_best_weights=True)])
    proba = trainer.predict_proba(X_new)  # (N,) P(positive)
"""

from .callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    monitor_mode,
)
from .guard import DivergenceWarning
from .history import History
from .progress import ProgressBar
from .trainer import OPTIMIZERS, TASKS, NonFiniteLossWarning, Trainer

__all__ = [
    "Trainer",
    "History",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "CSVLogger",
    "LambdaCallback",
    "LearningRateScheduler",
    "ProgressBar",
    "DivergenceWarning",
    "NonFiniteLossWarning",
    "monitor_mode",
    "TASKS",
    "OPTIMIZERS",
]
