"""Read PyTorch state-dict files into NumPy arrays without PyTorch and without running pickles.

Pretrained weights published for PyTorch are pickles, and unpickling runs whatever callables the
file names. This reader resolves only the handful of globals a state dict of tensors needs
(``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the typed storage classes)
to inert stand-ins; any other global is refused, so a hostile file cannot execute code.

Supported layout: the legacy (pre-1.6, non-zip) serialization that ``torch.save`` wrote with
``_use_new_zipfile_serialization=False`` and that older checkpoints use::

    pickle(magic number 0x1950a86a20f9469cfc6c)  pickle(protocol version 1001)
    pickle(sys info: {"little_endian": ..., ...})
    pickle(the object; each storage is a persistent id
           ("storage", <storage class>, key, location, numel, view metadata))
    pickle([storage keys in file order])
    for each key: int64 little-endian numel, then numel * itemsize raw bytes

Tensors are rebuilt from (storage, storage offset, size, stride), so views into shared or offset
storages come out exactly as PyTorch would build them.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import zipfile
from typing import Any, BinaryIO, Dict, List, Tuple

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: Dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchPickleError(ValueError):
    """A file that is not a plain legacy PyTorch state dict, or one that asks for a forbidden global."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclasses.dataclass
class _Storage:
    """A storage named in the pickle; its bytes follow the pickle, so they are filled in later."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _PendingTensor:
    """What ``_rebuild_tensor_v2`` was asked to build, materialised once storages are read."""

    storage: _Storage
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       *_metadata):
    if not isinstance(storage, _Storage):
        raise TorchPickleError(f"tensor built from {type(storage).__name__}, expected a storage")
    if backward_hooks:
        raise TorchPickleError("tensor carries backward hooks; a state dict of plain tensors has none")
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a tensor state dict needs; the storages are collected by key."""

    def __init__(self, file: BinaryIO, storages: Dict[str, _Storage] | None = None):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if self.storages is not None:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return _rebuild_tensor_v2
            if module == "torch" and name in STORAGE_DTYPES:
                return _StorageType(name)
        raise TorchPickleError(
            f"refusing to load global {module}.{name}: only collections.OrderedDict, "
            f"torch._utils._rebuild_tensor_v2 and torch.<Type>Storage are allowed"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if self.storages is None:
            raise TorchPickleError(f"unexpected persistent id {pid!r} outside the tensor pickle")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise TorchPickleError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise TorchPickleError(f"persistent id {pid!r} names no storage type")
        if view_metadata is not None:
            raise TorchPickleError(f"storage views (pre-0.4 files) are not supported: {pid!r}")
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, int(numel)))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise TorchPickleError(f"storage {key!r} is declared twice with different type or size")
        return storage


def _load_plain(file: BinaryIO) -> Any:
    """One pickle that may hold only builtin values (header fields, the storage key list)."""
    return _RestrictedUnpickler(file).load()


def _read_storage_bytes(file: BinaryIO, storage: _Storage) -> None:
    header = file.read(8)
    if len(header) != 8:
        raise TorchPickleError(f"file ends before the data of storage {storage.key!r}")
    numel = int.from_bytes(header, "little", signed=True)
    if numel != storage.numel:
        raise TorchPickleError(
            f"storage {storage.key!r} holds {numel} elements, the pickle declared {storage.numel}"
        )
    nbytes = numel * storage.dtype.itemsize
    raw = file.read(nbytes)
    if len(raw) != nbytes:
        raise TorchPickleError(f"file ends inside the data of storage {storage.key!r}")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialise(tensor: _PendingTensor) -> np.ndarray:
    """Gather the tensor's elements from its storage by offset and strides (a fresh native array)."""
    for value in (tensor.offset, *tensor.size, *tensor.stride):
        if not isinstance(value, int) or value < 0:
            raise TorchPickleError(f"bad tensor geometry {tensor.offset}, {tensor.size}, {tensor.stride}")
    if len(tensor.size) != len(tensor.stride):
        raise TorchPickleError(f"tensor size {tensor.size} and stride {tensor.stride} differ in rank")
    index = np.asarray(tensor.offset, dtype=np.int64)
    for extent, step in zip(tensor.size, tensor.stride):
        index = index[..., None] + np.arange(extent, dtype=np.int64) * step
    if index.size and int(index.max()) >= tensor.storage.numel:
        raise TorchPickleError(
            f"tensor of size {tensor.size} at offset {tensor.offset} runs past its storage "
            f"{tensor.storage.key!r} of {tensor.storage.numel} elements"
        )
    return tensor.storage.data[index].astype(tensor.storage.dtype.newbyteorder("="))


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
    """The name -> array mapping stored in a legacy PyTorch state-dict file at ``path``."""
    if zipfile.is_zipfile(path):
        raise TorchPickleError(
            f"{path} uses the zip serialization of torch >= 1.6; only the legacy layout is supported"
        )
    with open(path, "rb") as file:
        return _load_legacy(file, path)


def _load_legacy(file: BinaryIO, path: str) -> Dict[str, np.ndarray]:
    try:
        magic = _load_plain(file)
        if magic != LEGACY_MAGIC_NUMBER:
            raise TorchPickleError(f"{path} is not a legacy PyTorch file (magic number {magic!r})")
        version = _load_plain(file)
        if version != LEGACY_PROTOCOL_VERSION:
            raise TorchPickleError(f"{path}: unsupported protocol version {version!r}")
        sys_info = _load_plain(file)
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
            raise TorchPickleError(f"{path}: only little-endian files are supported ({sys_info!r})")
        storages: Dict[str, _Storage] = {}
        state = _RestrictedUnpickler(file, storages).load()
        keys: List[str] = _load_plain(file)
    except (pickle.UnpicklingError, EOFError) as error:
        raise TorchPickleError(f"{path}: malformed PyTorch pickle ({error})") from error
    if not isinstance(state, dict):
        raise TorchPickleError(f"{path} holds a {type(state).__name__}, expected a state dict")
    if sorted(keys) != sorted(storages):
        raise TorchPickleError(f"{path}: storage key list does not match the storages the pickle uses")
    for key in keys:
        _read_storage_bytes(file, storages[key])
    arrays = {}
    for name, value in state.items():
        if not isinstance(value, _PendingTensor):
            raise TorchPickleError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        arrays[name] = _materialise(value)
    return arrays
