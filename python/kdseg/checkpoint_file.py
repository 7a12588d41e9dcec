"""Reading a kdseg checkpoint as data, never as code (docs/checkpoint.md; the C++ reader is
src/kdseg/io/checkpoint_file.{h,cpp}).

torch.load runs the pickle inside a .pt file, and a pickle may call any Python function it names:
a file can run a command the moment it is loaded. kdseg's files (LibTorch's torch::pickle_save of
a dict) name only a few functions, so this reader unpickles with an allow-list of exactly those
and refuses anything else by name, before it could run:

  torch._utils._rebuild_tensor_v2          a tensor: a view of a storage record
  torch.FloatStorage, torch.LongStorage, … the storage's element type (the record holds the bytes)
  torch.jit._pickle.restore_type_tag       a dict's or list's TorchScript type (kept as is)
  torch.jit._pickle.build_intlist, build_tensorlist, build_doublelist, build_boollist
  collections.OrderedDict                  an empty dict (a tensor's backward hooks)

The allowed names are bound to this module's own functions (torch's own rebuild functions are not
called), so the same code reads the files under torch 1.13 and torch >= 2.6 alike; torch's
weights_only=True refuses kdseg's files on 1.13 ("Unsupported class
torch.jit._pickle.restore_type_tag").

content_digest(d) is the SHA-256 of the canonical encoding of a checkpoint dict's entries other
than "digest", byte for byte what the C++ writer stores as d["digest"].
"""
import collections
import hashlib
import io
import pickle
import struct
import zipfile

import torch

# torch.<Name>Storage → element type
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# element type → the name the digest uses (the C++ reader's PickleTensor::dtype)
DTYPE_NAMES = {
    torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
    torch.bfloat16: "bfloat16", torch.int64: "int64", torch.int32: "int32", torch.int16: "int16",
    torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool",
}


class CheckpointError(ValueError):
    """A file that is not a kdseg checkpoint, is damaged, or asks to run code."""


class _StorageType:
    __slots__ = ("dtype",)  # no __dict__: a BUILD opcode cannot add attributes

    def __init__(self, dtype):
        self.dtype = dtype


def _identity(value, *unused):
    return value


def _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, *unused):
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise CheckpointError("a tensor without a storage")
    ints = (isinstance(offset, int) and all(isinstance(s, int) and s >= 0 for s in size)
            and all(isinstance(s, int) and s >= 0 for s in stride) and len(size) == len(stride))
    if not ints or offset < 0:
        raise CheckpointError("a tensor's shape")
    numel = 1
    for s in size:
        numel *= s
    last = offset + sum((n - 1) * s for n, s in zip(size, stride) if n > 0)
    if numel > 0 and last >= storage.numel() or numel == 0 and offset > storage.numel():
        raise CheckpointError("a tensor reaches past its storage")
    t = storage.as_strided(tuple(size), tuple(stride), offset)
    if requires_grad is True and t.is_floating_point():
        t.requires_grad_(True)
    return t


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "restore_type_tag"): _identity,
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
}
_ALLOWED.update({("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()})


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler whose only globals are _ALLOWED (find_class is the one way a pickle reaches
    a Python object: GLOBAL, STACK_GLOBAL, INST, OBJ and the EXT opcodes all go through it)."""

    def __init__(self, file, records, prefix):
        super().__init__(file)
        self._records, self._prefix, self._storages = records, prefix, {}

    def find_class(self, module, name):
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise CheckpointError(
                "refused: the file asks to call %s.%s when loaded, which a kdseg checkpoint never "
                "does (nothing was run); a kdseg checkpoint holds only tensors, numbers, strings, "
                "lists and dicts: do not open this file with torch.load either"
                % (module[:80], name[:80]))
        if isinstance(allowed, _StorageType):  # a fresh one: the file cannot alter the shared one
            return _StorageType(allowed.dtype)
        return allowed

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[4], int)):
            raise CheckpointError("a tensor storage reference")
        dtype, key, numel = pid[1].dtype, pid[2], pid[4]
        if key in self._storages:
            t = self._storages[key]
            if t.dtype != dtype:
                raise CheckpointError('tensor storage "%s" read as two types' % key)
            return t
        name = self._prefix + "data/" + key
        if name not in self._records:
            raise CheckpointError('tensor storage "%s" has no record' % key)
        raw = self._records[name]()  # zipfile checks the record's CRC-32
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if numel < 0 or len(raw) != numel * itemsize:
            raise CheckpointError('tensor storage "%s": its size' % key)
        if dtype == torch.bool and any(b > 1 for b in raw):
            raise CheckpointError("a boolean tensor holding a value other than 0 or 1")
        t = torch.frombuffer(bytearray(raw), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        self._storages[key] = t
        return t


def load_dict(path):
    """The object pickled in the torch.save / torch::pickle_save archive at `path`, unpickled with
    the allow-list: tensors are CPU tensors. Raises CheckpointError naming the file."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise CheckpointError("not a kdseg checkpoint (no data.pkl record)")
            prefix = pkl[0][:-len("data.pkl")]
            records = {n: (lambda n=n: z.read(n)) for n in names}
            with z.open(pkl[0]) as f:
                data = f.read()
            return _Unpickler(io.BytesIO(data), records, prefix).load()
    except CheckpointError as e:
        raise CheckpointError("%s: %s" % (path, e)) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise CheckpointError("%s: not a kdseg checkpoint, or damaged (%s)" % (path, e)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RuntimeError, struct.error, UnicodeDecodeError, OverflowError,
            MemoryError, RecursionError) as e:
        raise CheckpointError("%s: damaged checkpoint (%s: %s)"
                              % (path, type(e).__name__, e)) from None


def _u64(v):
    return struct.pack("<Q", v)


def _scalar(v):
    if v is None:
        return b"N"
    if isinstance(v, bool):
        return b"B\x01" if v else b"B\x00"
    if isinstance(v, int):
        if not -(1 << 63) <= v < (1 << 63):
            raise CheckpointError("an integer wider than 64 bits")
        return b"I" + struct.pack("<q", v)
    if isinstance(v, float):
        return b"F" + struct.pack("<d", v)
    if isinstance(v, str):
        b = v.encode("utf-8")
        return b"S" + _u64(len(b)) + b
    return None


def _hash(h, v, skip_key=None):
    s = _scalar(v)
    if s is not None:
        h.update(s)
    elif isinstance(v, (list, tuple)):
        h.update((b"L" if isinstance(v, list) else b"T") + _u64(len(v)))
        for item in v:
            _hash(h, item)
    elif isinstance(v, dict):
        keys = []
        for k in v:
            if skip_key is not None and k == skip_key:
                continue
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise CheckpointError("a dict key that is a %s" % type(k).__name__)
            keys.append((_scalar(k), k))
        keys.sort(key=lambda e: e[0])
        h.update(b"D" + _u64(len(keys)))
        for enc, k in keys:
            h.update(enc)
            _hash(h, v[k])
    elif isinstance(v, torch.Tensor):
        if v.dtype not in DTYPE_NAMES:
            raise CheckpointError("a tensor of type %s" % v.dtype)
        t = v.detach().cpu().contiguous()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.view(torch.int16)
        elif t.dtype == torch.bool:
            t = t.to(torch.uint8)
        data = t.numpy().tobytes()
        h.update(b"A" + _scalar(DTYPE_NAMES[v.dtype]) + _u64(v.dim())
                 + b"".join(struct.pack("<q", s) for s in v.shape) + _u64(len(data)))
        h.update(data)
    else:
        raise CheckpointError("a value of type %s" % type(v).__name__)


def content_digest(d):
    """"sha256:<64 hex>" of the checkpoint dict `d`'s entries other than "digest" (canonical
    encoding: docs/checkpoint.md)."""
    h = hashlib.sha256()
    _hash(h, d, skip_key="digest")
    return "sha256:" + h.hexdigest()
