"""Read a legacy (zip-less) PyTorch ``.pth`` state dict with :mod:`pickle` and numpy, without torch.

The file holds pickles of a magic number, the protocol version and the system
info, then the state dict (its tensors refer to storages by key), the list of
storage keys and each storage's raw bytes. The unpickler allows only tensor
rebuilds and the storage types listed here and refuses every other global, so
a file cannot make it run code.
"""

import collections
import pickle
import struct

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    """A storage record of the pickle; its data follow the main object."""

    def __init__(self, dtype, key, numel):
        self.dtype = np.dtype(dtype)
        self.key = key
        self.numel = numel
        self.data = None


class _Tensor:
    """A tensor view (offset, size, stride in elements) into a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def numpy(self):
        base = self.storage.data[self.offset :]
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(base, self.size, tuple(s * item for s in self.stride))
        return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _Tensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGE_DTYPES[name]


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickler that only knows the few globals a state dict needs."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent record {kind!r}")
        storages = self.storages
        if key not in storages:
            storages[key] = _Storage(storage_type.dtype, key, numel)
        return storages[key]


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler for the header records (numbers, strings, dicts, lists): refuses every global."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights file header")


def _load_plain(f):
    return _PlainDataUnpickler(f).load()


def read_legacy_pth(path):
    """Read a PyTorch legacy-format (non-zip) state dict into numpy arrays.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pth`` file written by ``torch.save`` with
        ``_use_new_zipfile_serialization=False``.

    Returns
    -------
    dict of str to ndarray
        Parameter name -> array, in the file's order and layout.
    """
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path}: zip-format torch file; only the legacy format is supported")
        f.seek(0)
        if _load_plain(f) != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a legacy PyTorch file (bad magic number)")
        _load_plain(f)  # protocol version
        _load_plain(f)  # system info
        unpickler = _LegacyUnpickler(f)
        unpickler.storages = {}
        state = unpickler.load()
        for key in _load_plain(f):
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(count * storage.dtype.itemsize)
            if len(raw) != count * storage.dtype.itemsize:
                raise ValueError(f"{path}: truncated data for storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return {name: tensor.numpy() for name, tensor in state.items()}
