"""Reading NVlabs stylegan2-ada-pytorch snapshots (``network-snapshot-*.pkl``, the released
``ffhq.pkl``, ``metfaces.pkl``, ...) without running the code they carry.

A snapshot is a ``pickle.dump`` of a dict {G, D, G_ema, augment_pipe, training_set_kwargs}. Each
network in it is a torch_utils.persistence record, ``_reconstruct_persistent_obj(meta)`` with
meta = {type 'class', version 6, module_src, class_name, state}: module_src is the full source
of the module that defined the class (training/networks.py, training/augment.py) and state the
module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules`` holding more records, the
constructor arguments ``_init_kwargs`` as a dnnlib EasyDict). NVlabs' own loader ``exec``s
module_src and imports their source tree: loading a stranger's snapshot runs a stranger's code.

``read_snapshot`` never does. Its unpickler resolves the globals of ALLOWED_GLOBALS only, each to
a stand-in that builds plain data, and refuses any other global by name before anything is
called: a persistence record becomes a record of its class name and state (module_src is never
looked at), an EasyDict a dict, a numpy scalar a Python number, and a tensor storage, which
pickles as ``torch.storage._load_from_bytes(bytes of a torch.save)``, is read from those bytes
with ``torch.load(weights_only=True)`` (the real ``_load_from_bytes`` runs an unrestricted
torch.load on them). Tensors pickle so in every torch release so far, 1.7 (NVlabs' files) to
today's. TensorFlow-era pickles (the original StyleGAN2 release) are refused with what to do.

A pickle is a program, so a hostile one is read defensively: its opcodes are read once without
building anything, to refuse sizes beyond the file and memo indices out of sequence; no stand-in
takes state from pickle's BUILD; tensors are made only after the pickle is read, from views
checked to lie within their storages; what stand-ins decode, copy or view is bounded by the
file's size, however often the pickle passes them one value; and records and containers reached
twice (shared, or inside themselves) or nested too deep are refused, since NVlabs' networks are
trees a few levels deep. Every failure is a ValueError naming the file.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import mmap
import os
import pickle
import pickletools
import re
import reprlib
from pathlib import Path

import numpy as np
import torch

PERSISTENCE_VERSION = 6  # torch_utils/persistence.py's _version, in stylegan2-ada-pytorch and stylegan3
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
# torch.save's legacy format starts with its magic number pickled at protocol 2; a tensor storage
# pickles as the bytes of such a save (TypedStorage.__reduce__) in every torch release.
TORCH_LEGACY_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
PICKLE_PROTOCOLS = range(2, 6)  # pickle.dump writes PROTO and the protocol first (NVlabs' files: 3 or 4)
TF_NETWORK = ("dnnlib.tflib.network", "Network")
NUMERIC_TYPE = re.compile(r"[biufc]\d{1,2}")  # numpy type codes of plain numbers: f8, i4, b1, ...
DECODED_BYTES_PER_FILE_BYTE = 4  # what stand-ins may decode and view in all, per byte of the file (see _Reading)
MAX_DEPTH = 32  # NVlabs' modules nest 5 levels deep at most (G's synthesis.b1024.conv0.affine)
MAX_TENSOR_DIMS = 16  # NVlabs' tensors have 4 at most
MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")  # the opcodes that store into the memo at an index they name


@dataclasses.dataclass(frozen=True)
class Network:
    """One network of a snapshot: its recorded class name (Generator, Discriminator,
    AugmentPipe), constructor arguments (plain dicts, lists and numbers) and tensors (parameters
    and buffers under their dotted state_dict names)."""

    class_name: str
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]


def read_snapshot(path: str | os.PathLike) -> dict[str, Network]:
    """The networks of an NVlabs snapshot by their names in it (G, D, G_ema, augment_pipe), or a
    ValueError naming what the file holds instead (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"snapshot {path} does not exist")
    if file_kind(path) == "torch":
        raise ValueError(f"{path} is in torch.save's format (a zip archive or its legacy pickle), not an NVlabs "
                         "pickle; load_generator reads a state_dict saved so")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty, not an NVlabs pickle")
    # a map of the file, not a copy in memory: pickle reads from it twice (_check_opcodes, then load)
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            _check_opcodes(data)
            data.seek(0)
            return _Tree().networks(_SnapshotUnpickler(data, len(data)).load())
        except _Refused as error:
            raise ValueError(f"{path}: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError, IndexError,
                KeyError, OverflowError, MemoryError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"{path} is not a readable pickle ({type(error).__name__}: {error})") from None


def file_kind(path: str | os.PathLike) -> str:
    """"pickle" (pickle.dump's header, as NVlabs' snapshots start whatever their name), "torch"
    (torch.save's formats: a zip archive, or a pickle of its legacy magic number) or "other", from
    the file's first bytes."""
    with open(path, "rb") as file:
        head = file.read(len(TORCH_LEGACY_HEADER))
    if head.startswith(ZIP_MAGIC) or head == TORCH_LEGACY_HEADER:
        return "torch"
    if head[:1] == pickle.PROTO and head[1:2] and head[1] in PICKLE_PROTOCOLS:
        return "pickle"
    return "other"


def _check_opcodes(data) -> None:
    """Reads the pickle's opcodes without building anything (pickletools), so that sizes beyond
    the file fail here, and refuses a memo index out of sequence: CPython's unpickler grows its memo
    to the largest index a PUT names and zeroes it, 20 GB for one PUT of index 2**31 in a 10 kB
    file. Picklers number memo entries 0, 1, 2, ... as they write them."""
    writes = 0
    for opcode, argument, position in pickletools.genops(data):
        if opcode.name in MEMO_PUTS and argument > writes:
            raise _Refused(f"a memo index {argument} at byte {position}, after {writes} memo entries (picklers "
                           "number them 0, 1, 2, ...)")
        if opcode.name in MEMO_PUTS or opcode.name == "MEMOIZE":
            writes += 1


# ------------------------------------------------------------------------------ stand-ins

class _Refused(pickle.UnpicklingError):
    """The pickle asks for something this reader does not do (the message says what)."""


class _Sealed:
    """A stand-in the pickle may build or call but never give state: pickle's BUILD would set its
    attributes (a frozen record's fields, a function's __defaults__) behind every check. Each
    subclass says what it is in `stands_for`."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _Refused(f"the pickle sets state on {self.stands_for}")


@dataclasses.dataclass(frozen=True, eq=False)
class _Record(_Sealed):
    """A persistence record, read as data."""

    class_name: str
    state: dict
    stands_for = "a persistence record"


def _record(meta) -> _Record:
    """Stands in for torch_utils.persistence._reconstruct_persistent_obj, without module_src."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = reprlib.repr(meta.get("type")) if isinstance(meta, dict) else type(meta).__name__
        raise _Refused(f"a persistence record of type {kind}; NVlabs snapshots hold 'class' records only")
    if meta.get("version") != PERSISTENCE_VERSION:
        raise _Refused(f"torch_utils.persistence version {reprlib.repr(meta.get('version'))}; culturegan reads "
                       f"version {PERSISTENCE_VERSION} (stylegan2-ada-pytorch's and stylegan3's)")
    if not isinstance(meta.get("class_name"), str) or not isinstance(meta.get("state"), dict):
        raise _Refused("a persistence record without a class name and a state dict")
    return _Record(meta["class_name"], meta["state"])


class _BuiltEmpty(_Sealed):
    """A dict type as pickles build it: empty, then filled item by item. One built from another
    (a copy, which the pickle could ask for again and again of one large dict) is refused."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise _Refused(f"{self.stands_for} built as a copy of another; pickles fill one item by item")
        super().__init__()


class _Dict(_BuiltEmpty, dict):
    __slots__ = ()
    stands_for = "an EasyDict"


class _OrderedDict(_BuiltEmpty, collections.OrderedDict):
    __slots__ = ()
    stands_for = "an OrderedDict"


@dataclasses.dataclass(frozen=True, eq=False)
class _Storage(_Sealed):
    """A decoded tensor storage: its dtype, its element count when decoded, and the untyped storage,
    which only _Tensor.build touches (the pickle gets this stand-in, never the storage)."""

    dtype: torch.dtype
    untyped: torch.UntypedStorage
    numel: int
    stands_for = "a tensor storage"


def _storage(blob: bytes) -> _Storage:
    """The storage a torch.save blob holds (legacy format, checked by the caller), read with
    weights_only: torch's own _load_from_bytes would run any pickled code in it."""
    try:
        storage = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _Refused(f"a tensor storage holds more than tensor data ({error})") from None
    except Exception as error:  # damaged bytes make torch raise anything, its own asserts included
        raise _Refused(f"a tensor storage that torch cannot read, damaged or cut short ({type(error).__name__}: "
                       f"{error})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused(f"a tensor storage's bytes hold a {type(storage).__name__}, not a storage")
    untyped = storage._untyped_storage  # as torch._utils reads it (the public accessors warn of deprecation)
    return _Storage(storage.dtype, untyped, untyped.nbytes() // storage.dtype.itemsize)


@dataclasses.dataclass(frozen=True, eq=False)
class _Tensor(_Sealed):
    """A tensor as the pickle describes it, checked to lie within its storage (_Reading.tensor).
    The real tensor is made only once the pickle is read (build): pickle's BUILD on a tensor calls
    its __setstate__, which would set_ it anew (growing its storage by uninitialised memory) or
    set requires_grad and hooks."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    stands_for = "a tensor"

    def build(self) -> torch.Tensor:
        return torch.empty(0, dtype=self.storage.dtype).set_(self.storage.untyped, self.offset, self.size, self.stride)


def _dimensions(values, name: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > MAX_TENSOR_DIMS or not all(map(_is_index, values)):
        raise _Refused(f"a tensor {name} {reprlib.repr(values)}; expected up to {MAX_TENSOR_DIMS} integers >= 0")
    return tuple(values)


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63


def _check_within(storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
    """The view reads elements of its storage only (torch's set_ would grow the storage with
    whatever memory the process held), and no more of them than the storage has (a stride-0 view
    of one number would be written out by convert as a huge tensor)."""
    numel = math.prod(size)
    last = offset + sum((n - 1) * step for n, step in zip(size, stride)) if numel else offset - 1
    if numel > storage.numel or last >= storage.numel:
        raise _Refused(f"a tensor of size {list(size)}, stride {list(stride)} and offset {offset} outside its "
                       f"storage of {storage.numel} elements")


def _parameter(data, requires_grad=False, backward_hooks=None):
    """Stands in for torch._utils._rebuild_parameter: the parameter's data, as a plain tensor."""
    if not isinstance(data, _Tensor) or backward_hooks:
        raise _Refused("a parameter that is not a plain tensor")
    return data


class _NumpyType:
    """Stands in for numpy.dtype: a plain number type, its code checked before numpy parses it
    (numpy's own dtype would take any state the pickle gives, object fields included)."""

    __slots__ = ("code", "byte_order")

    def __new__(cls, code, align=False, copy=True):
        # the check is here, not in __init__: pickle's NEWOBJ builds an object with __new__ alone
        if not isinstance(code, str) or not NUMERIC_TYPE.fullmatch(code):
            raise _Refused(f"a numpy dtype {reprlib.repr(code)}; only plain number types are read")
        self = super().__new__(cls)
        self.code, self.byte_order = code, "="
        return self

    def __setstate__(self, state):
        # numpy's state: (version, byte order, subarray, names, fields, ...); a number has no parts
        if not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "=") or any(
                part is not None for part in state[2:5]):
            raise _Refused(f"a numpy dtype with the state {reprlib.repr(state)}; only plain number types are read")
        self.byte_order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.byte_order + self.code)


def _numpy_scalar(dtype, data=None):
    """Stands in for numpy's multiarray.scalar (how a numpy float64 pickles): a Python number."""
    if not isinstance(dtype, _NumpyType) or not isinstance(data, bytes) or len(data) != dtype.numpy().itemsize:
        raise _Refused("a numpy scalar that is not a plain number")
    return np.frombuffer(data, dtype=dtype.numpy())[0].item()


class _Call(_Sealed):
    """A stand-in function the pickle may call."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)

    @property
    def stands_for(self) -> str:
        return f"the function {self.function.__name__}"


class _Reading:
    """The stand-ins that decode, copy or view what the pickle gives them, for one file. A pickle may
    give one value (from its memo) any number of times, so each text and each storage blob is
    decoded once (the same object comes back), and what they make in all may not exceed
    DECODED_BYTES_PER_FILE_BYTE times the file's size: an honest snapshot holds each storage once
    and one tensor on each, so its storages (never larger than their blobs), its tensors and the
    latin-1 texts that carry the blobs at protocol 2 come to three times its size at most."""

    def __init__(self, file_size: int):
        self.allowance = DECODED_BYTES_PER_FILE_BYTE * file_size
        self.decoded = {}  # id(value) -> (value, what it decoded to); holding the value keeps its id its own

    def latin1(self, text, encoding):
        """Stands in for _codecs.encode, how protocol 2 pickles bytes."""
        if not isinstance(text, str) or encoding != "latin1":
            raise _Refused(f"_codecs.encode with encoding {reprlib.repr(encoding)}; pickles encode bytes as latin1")
        return self._once(text, len(text), lambda: text.encode("latin1"))

    def storage(self, blob):
        """Stands in for torch.storage._load_from_bytes."""
        if not isinstance(blob, bytes):
            raise _Refused(f"a tensor storage pickled as {type(blob).__name__}, not as bytes")
        if not blob.startswith(TORCH_LEGACY_HEADER):
            raise _Refused("a tensor storage that is not in torch.save's legacy format, the one storages always "
                           "pickle in; others (a zip archive, which could inflate without end) are not read")
        return self._once(blob, len(blob), lambda: _storage(blob))

    def tensor(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
        """Stands in for torch._utils._rebuild_tensor_v2. Its elements count against the allowance
        too: many tensors may view one storage. Hooks (callables) and metadata (conjugate and
        negative bits, which no saved weight has) are refused; requires_grad does not matter to a
        state_dict."""
        if not isinstance(storage, _Storage):
            raise _Refused(f"a tensor built on a {type(storage).__name__}, not on a storage")
        if backward_hooks or metadata:
            raise _Refused("a tensor with backward hooks or metadata")
        size, stride = _dimensions(size, "size"), _dimensions(stride, "stride")
        if not _is_index(storage_offset):
            raise _Refused(f"a tensor at offset {reprlib.repr(storage_offset)}; expected an integer >= 0")
        if len(size) != len(stride):
            raise _Refused(f"a tensor with {len(size)} sizes and {len(stride)} strides")
        _check_within(storage, storage_offset, size, stride)
        self._spend(math.prod(size) * storage.dtype.itemsize)
        return _Tensor(storage, storage_offset, size, stride)

    def set(self, items=()):
        """Stands in for set: protocols 2 and 3 pickle a set as set(list of its items)."""
        self._spend(len(items))
        return set(items)

    def _once(self, value, cost: int, decode):
        known = self.decoded.get(id(value))
        if known is None:
            self._spend(cost)
            known = self.decoded[id(value)] = (value, decode())
        return known[1]

    def _spend(self, cost: int) -> None:
        self.allowance -= cost
        if self.allowance < 0:
            raise _Refused(f"the pickle decodes or copies more than {DECODED_BYTES_PER_FILE_BYTE} times the file's "
                           "size; a snapshot holds each tensor once")


# (module, name) in the pickle -> what it builds. The classes here are _Sealed stand-ins, whose
# state a pickle cannot set, and _NumpyType, which checks the state it is given.
_STAND_INS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _Call(_record),
    ("dnnlib.util", "EasyDict"): _Dict,
    ("collections", "OrderedDict"): _OrderedDict,
    ("torch._utils", "_rebuild_parameter"): _Call(_parameter),
    ("numpy", "dtype"): _NumpyType,
    ("numpy.core.multiarray", "scalar"): _Call(_numpy_scalar),  # numpy 1 wrote these
    ("numpy._core.multiarray", "scalar"): _Call(_numpy_scalar),  # numpy 2
}
# (module, name) -> the method of _Reading (one per file read) that stands in for it
_READING_STAND_INS = {
    ("builtins", "set"): "set",
    ("__builtin__", "set"): "set",  # protocol 2
    ("_codecs", "encode"): "latin1",
    ("torch.storage", "_load_from_bytes"): "storage",
    ("torch._utils", "_rebuild_tensor_v2"): "tensor",
}
ALLOWED_GLOBALS = frozenset(_STAND_INS) | frozenset(_READING_STAND_INS)


class _SnapshotUnpickler(pickle.Unpickler):
    def __init__(self, file, file_size: int):
        super().__init__(file)
        reading = _Reading(file_size)
        self.stand_ins = {**_STAND_INS, **{name: _Call(getattr(reading, method))
                                           for name, method in _READING_STAND_INS.items()}}

    def find_class(self, module: str, name: str):
        if (module, name) == TF_NETWORK:
            raise _Refused("a TensorFlow-era StyleGAN/StyleGAN2 pickle (dnnlib.tflib.network.Network), which "
                           "culturegan does not read: convert it with NVlabs stylegan2-ada-pytorch's `python "
                           "legacy.py --source=IN.pkl --dest=OUT.pkl` (no TensorFlow needed) and load OUT.pkl")
        stand_in = self.stand_ins.get((module, name))
        if stand_in is None:
            raise _Refused(f"the pickle refers to {module}.{name}, which is not on culturegan's allow-list: an "
                           "NVlabs snapshot holds persistence records, dicts, numbers and tensors only, and "
                           "culturegan never imports or calls anything else from a pickle")
        return stand_in

    def persistent_load(self, pid):
        raise _Refused("the pickle refers to data outside it (a persistent id); NVlabs snapshots are self-contained")


# ------------------------------------------------------------------------------ records to networks

class _Tree:
    """Reads the networks out of an unpickled snapshot, each record and container once. NVlabs'
    networks are trees a few levels deep that share nothing (each is a deep copy): a record or
    container reached twice (shared by two parents, or inside itself) would be read again,
    exponentially often or forever, so it is refused, as is nesting deeper than MAX_DEPTH."""

    def __init__(self):
        self.reached = set()  # ids of the pickle's objects read so far (alive: the snapshot holds them)

    def networks(self, contents) -> dict[str, Network]:
        if isinstance(contents, _Record):
            raise _Refused(f"the file holds one pickled {contents.class_name}, not a snapshot (a dict of networks); "
                           "NVlabs' training writes dict(G=..., D=..., G_ema=..., ...)")
        if not isinstance(contents, dict):
            raise _Refused(f"the file holds a pickled {type(contents).__name__}, not an NVlabs snapshot (a dict of "
                           "networks)")
        self._reach(contents, "the snapshot", 0)
        networks = {name: self._network(record, name) for name, record in contents.items()
                    if isinstance(record, _Record)}
        if not networks:
            raise _Refused(f"the file holds a dict without networks (keys {sorted(map(str, contents))})")
        return networks

    def _network(self, record: _Record, name) -> Network:
        if record.state.get("_init_args"):
            raise _Refused(f"{name}: {record.class_name} was constructed with positional arguments, which "
                           "culturegan does not rebuild (NVlabs' training passes keyword arguments only)")
        tensors = self._tensors(record, "", name)
        kwargs = self._plain(record.state.get("_init_kwargs", {}), f"{name}: {record.class_name}'s arguments", 1)
        if not isinstance(kwargs, dict):
            raise _Refused(f"{name}: {record.class_name}'s recorded arguments are a {type(kwargs).__name__}, not a "
                           "dict")
        return Network(record.class_name, kwargs, tensors)

    def _tensors(self, record: _Record, prefix: str, name) -> dict[str, torch.Tensor]:
        """The record's parameters and persistent buffers, and its children's, as state_dict names."""
        where, depth = f"{name}: module {prefix.rstrip('.') or record.class_name}", prefix.count(".") + 1
        self._reach(record, where, depth)
        self._reach(record.state, where, depth)
        transient = record.state.get("_non_persistent_buffers_set") or set()
        if not isinstance(transient, set):
            raise _Refused(f"{where}: its non-persistent buffers are a {type(transient).__name__}, not a set")
        tensors = {}
        for group in ("_parameters", "_buffers"):
            for key, tensor in self._entries(record.state, group, where, depth).items():
                if tensor is None or group == "_buffers" and key in transient:
                    continue
                if not isinstance(tensor, _Tensor):
                    raise _Refused(f"{name}: {prefix}{key} is a {type(tensor).__name__}, not a tensor")
                tensors[prefix + key] = tensor.build()
        for key, child in self._entries(record.state, "_modules", where, depth).items():
            if child is None:
                continue
            if not isinstance(child, _Record):
                raise _Refused(f"{name}: submodule {prefix}{key} is a {type(child).__name__}, not a network record")
            tensors.update(self._tensors(child, f"{prefix}{key}.", name))
        return tensors

    def _entries(self, state: dict, group: str, where: str, depth: int) -> dict:
        entries = state.get(group, {})
        if not isinstance(entries, dict) or not all(isinstance(key, str) for key in entries):
            raise _Refused(f"{where}: the module state's {group} is not a dict of names")
        self._reach(entries, f"{where}: {group}", depth)
        return entries

    def _plain(self, value, where: str, depth: int):
        """value as JSON data (dicts with string keys, lists, numbers, strings, None)."""
        if isinstance(value, (dict, list, tuple)):
            self._reach(value, where, depth)
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise _Refused(f"{where} have non-string keys")
            return {key: self._plain(item, where, depth + 1) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._plain(item, where, depth + 1) for item in value]
        if isinstance(value, int) and value.bit_length() > 64:
            raise _Refused(f"{where} hold an integer of {value.bit_length()} bits")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise _Refused(f"{where} hold a {type(value).__name__}, not plain data")

    def _reach(self, value, where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _Refused(f"{where}: nested more than {MAX_DEPTH} levels deep; NVlabs' networks nest a few")
        if isinstance(value, (dict, list, tuple)) and not value:
            return  # nothing to read twice (and Python has one empty tuple, which any two places share)
        if id(value) in self.reached:
            raise _Refused(f"{where}: a record or container reached twice (shared by two parents, or inside "
                           "itself); NVlabs' networks share nothing")
        self.reached.add(id(value))


__all__ = ["ALLOWED_GLOBALS", "Network", "file_kind", "read_snapshot"]
