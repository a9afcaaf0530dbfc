"""ONNX in and out: ``load`` an ONNX file as a trainable lepton_nn network, ``export`` a
lepton_nn network (or ``.lnn`` file) to ONNX, ``convert`` between the two files.

The ``onnx`` package (``pip install "lepton-nn[onnx]"``) is imported only when one of these
runs. Importing from here what ``lepton_nn.runtime.load("model.onnx")`` needs
(:func:`~lepton_nn.onnx.importer.onnx_to_manifest`) never imports autograd or layers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load", "export", "convert", "onnx_to_manifest"]


def onnx_to_manifest(source: Any, int8: bool = True):
    """ONNX model -> (``.lnn`` manifest, arrays, report); see :mod:`.importer`."""
    from .importer import onnx_to_manifest as run

    return run(source, int8)


def load(source: Any, *, limits: Any = None):
    """An ONNX model (path, bytes or ``onnx.ModelProto``) as a lepton_nn network in eval
    mode, trainable like any other (``model.train()`` to fine-tune). The converted manifest
    goes through the validator and budget of ``lepton_nn.load`` (``limits``: see
    :class:`~lepton_nn.runtime.validate.Limits`)."""
    import lepton_nn.compress.qdq  # noqa: F401 - the QuantizeDequantize layer of QDQ files
    from lepton_nn.io import module_from_lnn
    from lepton_nn.runtime.validate import Limits, validate

    manifest, arrays, _ = onnx_to_manifest(source, int8=False)  # float layers: trainable
    validate(manifest, arrays, Limits.of(limits))
    return module_from_lnn(manifest["model"], arrays)


def export(model_or_path: Any, path: Any, example_input: Any = None, opset: int | None = None,
           dynamic_batch: bool = True):  # fmt: skip
    """Write a lepton_nn network or ``.lnn`` file as ONNX; see :mod:`.exporter`."""
    from .exporter import export as run

    return run(model_or_path, path, example_input, opset, dynamic_batch)


def convert(src: Any, dst: Any, **kwargs: Any) -> dict:
    """``.onnx`` -> ``.lnn`` or ``.lnn`` -> ``.onnx`` by the extensions; see :mod:`.commands`."""
    from .commands import convert as run

    return run(src, dst, **kwargs)
