"""Reading pickled files without running code from them.

A pickle can name any Python callable, which unpickling then calls: a crafted ``.pth`` or ``.pkl`` would run
a shell command the moment it is read. Every file hvpl reads is therefore unpickled with an allow-list:
``torch.load(weights_only=True)`` (tensors, dicts, lists, tuples, strings, numbers) plus, where a format needs
them, numpy arrays (the RNG state in a checkpoint, the arrays of a detectron2 ``.pkl``). Anything else stops the
read with an :class:`HVPLError` naming the file and the refused name.
"""
from __future__ import annotations

import collections
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from hvpl.utils.errors import HVPLError

# numpy's array pickling helpers, under the module names numpy 1 and numpy 2 write into a pickle
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _numpy_globals() -> list:
    """Entries for ``torch.serialization.safe_globals``: what pickled numpy arrays and scalars refer to."""
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes["All"] if code not in "Mm"}
    named = [(fn, f"{module}.{name}") for module in _NUMPY_MODULES
             for fn, name in ((_RECONSTRUCT, "_reconstruct"), (_SCALAR, "scalar"))]
    return [np.ndarray, np.dtype, *sorted(dtype_classes, key=str), *named]


def _refusal(path: Path, exc: Exception) -> HVPLError:
    """The error for a file the allow-list refused (the name it asked for, without torch's advice to load
    with weights_only=False)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"the Python object {found.group(1)}" if found else "a Python object"
    return HVPLError(f"{path}: refused to load: it names {what}, which this file format never holds "
                     f"(unpickling it could run code)")


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _is_refusal(exc: Exception) -> bool:
    return isinstance(exc, pickle.UnpicklingError) and re.search(r"GLOBAL [\w.]+", str(exc)) is not None


def load_torch_file(path: str | Path, what: str, numpy: bool = False):
    """``torch.load`` of ``path`` to CPU with the weights-only allow-list (``numpy``: also numpy arrays).

    Raises HVPLError: a file asking for anything else (``refused to load``), or one that is not a readable torch
    file (``not a readable {what}``).
    """
    path = Path(path)
    try:
        if numpy:
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or refused: all user errors
        if _is_refusal(exc):
            raise _refusal(path, exc) from exc
        raise HVPLError(f"{path}: cannot read {what}: not a complete file of its format ({_first_line(exc)})") \
            from exc


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers, numbers, strings and numpy arrays; refuses every other global."""

    _ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict, ("numpy", "ndarray"): np.ndarray,
                ("numpy", "dtype"): np.dtype,
                **{(module, "_reconstruct"): _RECONSTRUCT for module in _NUMPY_MODULES},
                **{(module, "scalar"): _SCALAR for module in _NUMPY_MODULES}}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(np.dtypes, name)
        raise pickle.UnpicklingError(f"unsupported GLOBAL {module}.{name}")


def load_array_pickle(path: str | Path, what: str):
    """A plain pickle of arrays (detectron2 ``.pkl`` weights: ``{"model": {name: ndarray}, ...}``), read with
    :class:`_ArrayUnpickler`. Raises HVPLError like :func:`load_torch_file`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001
        if _is_refusal(exc):
            raise _refusal(path, exc) from exc
        raise HVPLError(f"{path}: cannot read {what}: not a complete file of its format ({_first_line(exc)})") \
            from exc
