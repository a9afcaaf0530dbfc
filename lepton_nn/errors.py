"""One hierarchy of errors: catch ``LeptonError`` to catch them all."""

from __future__ import annotations


class LeptonError(Exception):
    """Base class of every error lepton_nn raises on purpose."""


class ShapeError(LeptonError, ValueError):
    """An array has the wrong shape; the message names the layer or op and both shapes."""


class DataError(LeptonError, ValueError):
    """Input data cannot be used; the message names the file, row and column where known."""


class DataWarning(UserWarning):
    """Data were used with a fallback (values read as missing, unseen categories); the
    message counts them and names the file, rows and column where known."""


class ModelFormatError(LeptonError, ValueError):
    """A model file is damaged, hostile or of another format version."""


class GradcheckError(LeptonError, AssertionError):
    """An analytic gradient disagrees with central differences."""


class MissingExtraError(LeptonError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


class BackendError(LeptonError, RuntimeError):
    """A kernel backend was asked for but cannot be used here."""


class NotBuiltError(LeptonError, RuntimeError):
    """A lazy layer was used (say, for ``parameters()``) before its weights exist."""


class CompileError(LeptonError, RuntimeError):
    """A step given to ``lepton_nn.compile`` cannot be captured or replayed as it is."""


class UnsupportedOpError(CompileError):
    """The step ran an op, optimizer or side effect that the compiled step has no twin for;
    the message names it."""


class SignatureError(CompileError, ShapeError):
    """A compiled step was called with inputs of other shapes or dtypes than it captured;
    the message gives both signatures."""


class ControlFlowError(CompileError):
    """The step recorded different ops on two calls (data-dependent Python control flow, or
    an array the step computes outside the captured ops); the message names the first
    difference."""
