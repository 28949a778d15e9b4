"""The file error type of every reader, and ``.npy`` members read only after their header checks.

:class:`FileFormatError` is what :func:`flexsparse.load` raises for any file whose content is
not a valid tensor (a ValueError whose message starts with ``path:``); the store's
``IncompleteResultError`` derives from it.

:func:`read_member` reads one ``.npy`` member of a zip (a ``.npz`` file or a store tile) the
way a corrupt file cannot abuse: the header is parsed first (no pickles, no object or
structured dtypes, the expected dtype kinds and number of dimensions when given), and the
member's stored size must equal ``header + prod(shape) * itemsize`` before any array is
allocated -- a header that claims a huge shape over a few bytes is refused instead of
allocating it. Cost: one header parse, then one read of the member.
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

__all__ = ["FileFormatError", "read_member"]

_KIND_NAMES = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex", "S": "bytes", "U": "str"}


class FileFormatError(ValueError):
    """A file whose content is not a valid tensor in its format.

    The message starts with ``path:`` (``path:line:`` for the text formats).
    """


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo | str, path: Any, what: str,
                kinds: str = "biufc", ndim: int | None = None) -> np.ndarray:
    """The array of the ``.npy`` member ``info`` of ``zf``, checked before it is read.

    Args:
        zf: the open zip (a ``.npz`` file or a store container).
        info: the member (or its name).
        path: the file, for messages.
        what: the member's role, for messages (e.g. ``"'data'"``).
        kinds: allowed dtype kinds.
        ndim: required number of dimensions (``None``: any).

    Raises:
        FileFormatError: a malformed header, a disallowed dtype or shape, or a stored size
            that does not match the header (truncated or corrupt).
    """
    if isinstance(info, str):
        info = zf.getinfo(info)
    fmt = np.lib.format
    with zf.open(info) as fh:
        try:
            version = fmt.read_magic(fh)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = reader(fh)
        except (ValueError, EOFError) as exc:
            raise FileFormatError(f"{path}: member {what} is not a valid .npy array ({exc})") from None
        header_len = fh.tell()
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise FileFormatError(f"{path}: member {what} has dtype {dtype}; expected "
                              + "/".join(_KIND_NAMES[k] for k in kinds))
    if ndim is not None and len(shape) != ndim:
        raise FileFormatError(f"{path}: member {what} has shape {shape}; expected a "
                              f"{'scalar' if ndim == 0 else f'{ndim}-D array'}")
    expected = header_len + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size != expected:
        raise FileFormatError(f"{path}: member {what} holds {info.file_size} bytes but its header {shape} "
                              f"{dtype} needs {expected} (truncated or corrupt)")
    with zf.open(info) as fh:
        return fmt.read_array(fh, allow_pickle=False)
