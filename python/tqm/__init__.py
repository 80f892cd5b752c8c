"""Python binding of tqm over its C API (libtqm_c.so) with ctypes.

safetensors-style API:

    import tqm, tqm.numpy, tqm.torch
    with tqm.safe_open("model.tqm", framework="np") as f:     # or "pt"
        for name in f.keys():
            w = f.get_tensor(name)            # float32 (dequantized) / own dtype
        rows = f.get_slice(name)[10:20]       # decodes only the chunks it needs
        f.metadata()                          # {str: str}
    tqm.numpy.save_file({"w": w}, "out.tqm", metadata={"k": "v"}, bits=4)
    tqm.torch.load_file("out.tqm")            # {name: torch.Tensor}

The lower-level TqmFile (tqm.open) has typed metadata, quantized access and
the lazy layer loader:

    with tqm.open("stories260K.tqm") as m:
        m.metadata["llama.dim"]                 # 64
        [t.name for t in m.tensors]             # tensor names, file order
        w = m.tensor("model.layers.0.mlp.up_proj.weight")   # float32 numpy array
        q = m.tensor("model.layers.0.mlp.up_proj.weight", dequantize=False)  # uint8 codes
        codes, scale, zero = m.quantized("model.layers.0.mlp.up_proj.weight")[:3]
        layer0 = m.layer(0)                     # {name: numpy array} via the lazy loader

Tensors stored verbatim (RAW storage: integers, bool, float64, float16 ...)
come back as arrays of their own dtype, bit-exact; bfloat16, which numpy
lacks, comes back as uint16 bit patterns (bfloat16_to_float32() converts).

The shared library: TQM_LIB (a path) when set; else the copy bundled in this
package at install time; else build/lib of the source tree this package lives
in; else the library directory recorded at install time and the standard
ones (libtqm_c.so*), else ctypes.util.find_library("tqm_c").
Errors raise tqm.TqmError subclasses that are also the matching built-in
exceptions (FileNotFoundError, KeyError, ValueError ...); .code is the C API's
stable status number and .status its name ("TQM_DATA_LOSS", ...).
"""

import ctypes
import ctypes.util
import errno as _errno
import glob
import os
import re
import sys
import sysconfig
from collections import namedtuple

import numpy as np

__version__ = "0.1.0"

__all__ = [
    "open",
    "safe_open",
    "TqmFile",
    "TqmSlice",
    "TensorInfo",
    "Quantized",
    "ChunkInfo",
    "PackStats",
    "TqmError",
    "TqmInvalidArgumentError",
    "TqmNotFoundError",
    "TqmFileNotFoundError",
    "TqmKeyError",
    "TqmDataLossError",
    "TqmUnimplementedError",
    "TqmResourceExhaustedError",
    "TqmFailedPreconditionError",
    "TqmPermissionError",
    "TqmOSError",
    "TqmOutOfRangeError",
    "TqmInternalError",
    "library_path",
    "version",
    "bfloat16_to_float32",
]

# ---- the shared library ----


def _library_dirs():
    """Where an installed libtqm_c lives: the directory recorded when this
    package was built (TQM_LIBDIR, see setup.py), then the standard ones."""
    dirs = []
    try:
        from . import _build_config

        dirs += list(getattr(_build_config, "LIBDIRS", []))
    except ImportError:
        pass
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for prefix in (sys.prefix, "/usr/local", "/usr", "/"):
        for lib in ("lib", "lib64"):
            if multiarch:
                dirs.append(os.path.join(prefix, lib, multiarch))
            dirs.append(os.path.join(prefix, lib))
    seen, out = set(), []
    for d in dirs:
        d = os.path.normpath(d)
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _library_in(directory):
    """libtqm_c.so in `directory`, else its highest versioned name, or None."""
    plain = os.path.join(directory, "libtqm_c.so")
    if os.path.isfile(plain):
        return plain
    def version(path):
        tail = path[len(plain) + 1:]
        return [int(x) if x.isdigit() else 0 for x in tail.split(".")]
    found = sorted(glob.glob(plain + ".*"), key=version, reverse=True)
    found = [p for p in found if os.path.isfile(p)]
    return found[0] if found else None


def library_path():
    """The path (or, found by the dynamic linker's cache, the name) of the
    libtqm_c shared library this module loads. Order: $TQM_LIB; the copy
    bundled in the package; the source tree's build/lib; the install-time
    library directory and the standard ones; ctypes.util.find_library."""
    env = os.environ.get("TQM_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = _library_in(here)
    if bundled:
        return bundled
    for rel in (("..", "..", "build", "lib"), ("..", "build", "lib")):
        candidate = os.path.normpath(os.path.join(here, *rel, "libtqm_c.so"))
        if os.path.exists(candidate):
            return candidate
    for d in _library_dirs():
        found = _library_in(d)
        if found:
            return found
    name = ctypes.util.find_library("tqm_c")
    if name:
        return name
    raise TqmFileNotFoundError(
        2,
        "TQM_NOT_FOUND",
        "libtqm_c.so not found: set TQM_LIB to its path, install the package with "
        "the library bundled (python/README.md), install tqm (cmake --install), or "
        "build the project (cmake --build build --target tqm_c)",
    )


_lib = None

_c_size = ctypes.c_size_t
_c_u64 = ctypes.c_uint64
_c_i32 = ctypes.c_int32
_c_i64 = ctypes.c_int64
_p = ctypes.POINTER


class _Affine(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero", ctypes.c_float)]


class _OpenOptions(ctypes.Structure):
    _fields_ = [
        ("threads", _c_i32),
        ("verify_checksums", _c_i32),
        ("dequantize", _c_i32),
        ("prefetch", _c_i32),
        ("budget_bytes", _c_u64),
    ]


class _View(ctypes.Structure):
    _fields_ = [
        ("tensor", _c_size),
        ("name", ctypes.c_char_p),
        ("numel", _c_u64),
        ("rows", _c_u64),
        ("cols", _c_u64),
        ("q", _p(ctypes.c_uint8)),
        ("f32", _p(ctypes.c_float)),
        ("affine", _p(_Affine)),
        ("affine_count", _c_size),
        ("in_place", _c_i32),
    ]


class _ChunkInfo(ctypes.Structure):
    _fields_ = [
        ("decoded_offset", _c_u64),
        ("decoded_size", ctypes.c_uint32),
        ("encoded_size", ctypes.c_uint32),
        ("file_offset", _c_u64),
        ("codec", _c_i32),
    ]


class _PackOptions(ctypes.Structure):
    _fields_ = [
        ("profile", _c_i32),
        ("granularity", _c_i32),
        ("group_size", ctypes.c_uint32),
        ("bits", _c_i32),
        ("quantize_all", _c_i32),
        ("entropy", _c_i32),
        ("lanes", _c_i32),
        ("zstd_level", _c_i32),
        ("threads", _c_i32),
        ("chunk_size", ctypes.c_uint32),
        ("max_table_entries", ctypes.c_uint32),
    ]


class _PackStats(ctypes.Structure):
    _fields_ = [
        ("tensors", _c_u64),
        ("quantized_tensors", _c_u64),
        ("raw_tensors", _c_u64),
        ("weights", _c_u64),
        ("source_bytes", _c_u64),
        ("file_bytes", _c_u64),
        ("seconds", ctypes.c_double),
    ]


def _load():
    global _lib
    if _lib is not None:
        return _lib
    path = library_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise TqmOSError(8, "TQM_OS_ERROR", "cannot load %s: %s" % (path, e), path)
    status = ctypes.c_int
    W = ctypes.c_void_p  # tqm_writer*
    F = ctypes.c_void_p  # tqm_file*
    L = ctypes.c_void_p  # tqm_layer*
    sigs = {
        "tqm_version": (ctypes.c_char_p, []),
        "tqm_status_name": (ctypes.c_char_p, [status]),
        "tqm_last_error_code": (status, []),
        "tqm_last_error_message": (ctypes.c_char_p, []),
        "tqm_open_options_init": (None, [_p(_OpenOptions)]),
        "tqm_open_ex": (status, [ctypes.c_char_p, _p(_OpenOptions), _p(F)]),
        "tqm_close": (None, [F]),
        "tqm_verify": (status, [F]),
        "tqm_metadata_count": (_c_size, [F]),
        "tqm_metadata_key": (status, [F, _c_size, _p(ctypes.c_char_p)]),
        "tqm_metadata_type": (status, [F, _c_size, _p(ctypes.c_int)]),
        "tqm_metadata_int": (status, [F, _c_size, _p(_c_i64)]),
        "tqm_metadata_float": (status, [F, _c_size, _p(ctypes.c_double)]),
        "tqm_metadata_bytes": (status, [F, _c_size, _p(ctypes.c_void_p), _p(_c_size)]),
        "tqm_tensor_count": (_c_size, [F]),
        "tqm_tensor_find": (status, [F, ctypes.c_char_p, _p(_c_size)]),
        "tqm_tensor_name": (status, [F, _c_size, _p(ctypes.c_char_p)]),
        "tqm_tensor_ndim": (status, [F, _c_size, _p(_c_size)]),
        "tqm_tensor_dims": (status, [F, _c_size, _p(_c_u64), _c_size]),
        "tqm_tensor_numel": (status, [F, _c_size, _p(_c_u64)]),
        "tqm_tensor_storage": (status, [F, _c_size, _p(ctypes.c_int)]),
        "tqm_tensor_source_dtype": (status, [F, _c_size, _p(ctypes.c_int)]),
        "tqm_tensor_layer": (status, [F, _c_size, _p(_c_i32)]),
        "tqm_tensor_bits": (status, [F, _c_size, _p(_c_i32)]),
        "tqm_tensor_group_size": (status, [F, _c_size, _p(ctypes.c_uint32)]),
        "tqm_tensor_byte_size": (status, [F, _c_size, _p(_c_u64)]),
        "tqm_tensor_affine_count": (status, [F, _c_size, _p(_c_size)]),
        "tqm_tensor_affine": (status, [F, _c_size, _p(_Affine), _c_size]),
        "tqm_tensor_read_u8": (status, [F, _c_size, ctypes.c_void_p, _c_size]),
        "tqm_tensor_read_f32": (status, [F, _c_size, ctypes.c_void_p, _c_size]),
        "tqm_tensor_decode": (status, [F, _c_size, ctypes.c_void_p, _c_size]),
        "tqm_layer_count": (_c_i32, [F]),
        "tqm_layer_pin": (status, [F, _c_i32, _p(L)]),
        "tqm_layer_release": (None, [L]),
        "tqm_layer_tensor_count": (_c_size, [L]),
        "tqm_layer_tensor": (status, [L, _c_size, _p(_View)]),
        "tqm_tensor_chunk_count": (status, [F, _c_size, _p(_c_size)]),
        "tqm_tensor_chunk": (status, [F, _c_size, _c_size, _p(_ChunkInfo)]),
        "tqm_tensor_decode_range": (status, [F, _c_size, _c_u64, _c_u64, ctypes.c_void_p, _c_size]),
        "tqm_tensor_read_f32_range": (status, [F, _c_size, _c_u64, _c_u64, ctypes.c_void_p, _c_size]),
        "tqm_chunks_decoded": (_c_u64, [F]),
        "tqm_pack_options_init": (None, [_p(_PackOptions)]),
        "tqm_writer_new": (status, [_p(_PackOptions), _p(W)]),
        "tqm_writer_free": (None, [W]),
        "tqm_writer_add_tensor": (
            status,
            [W, ctypes.c_char_p, ctypes.c_int, _p(_c_u64), _c_size, ctypes.c_void_p, _c_size, ctypes.c_uint32],
        ),
        "tqm_writer_set_metadata_int": (status, [W, ctypes.c_char_p, _c_i64]),
        "tqm_writer_set_metadata_float": (status, [W, ctypes.c_char_p, ctypes.c_double]),
        "tqm_writer_set_metadata_string": (status, [W, ctypes.c_char_p, ctypes.c_char_p, _c_size]),
        "tqm_writer_set_metadata_bytes": (status, [W, ctypes.c_char_p, ctypes.c_char_p, _c_size]),
        "tqm_writer_finish": (status, [W, ctypes.c_char_p, _p(_PackStats)]),
    }
    for name, (restype, argtypes) in sigs.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise TqmUnimplementedError(
                4, "TQM_UNIMPLEMENTED",
                "%s lacks %s: it is older than this Python package (%s); set TQM_LIB or "
                "reinstall" % (path, name, __version__),
            )
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib
    return lib


# ---- errors ----


class TqmError(Exception):
    """A failed C API call. .code: the stable status number; .status: its
    name; .message: the library's message (it names the file, tensor, field
    and offset). Each status has a subclass that is also the matching
    built-in exception (see _ERRORS), so `except KeyError` works."""

    def __init__(self, code, status, message, filename=None):
        super().__init__("%s: %s" % (status, message))
        self.code = code
        self.status = status
        self.message = message
        if isinstance(self, OSError):
            self.errno = _OS_ERRNO.get(code)
            self.strerror = message
            self.filename = filename

    def __str__(self):
        return "%s: %s" % (self.status, self.message)


class TqmInvalidArgumentError(TqmError, ValueError):
    """TQM_INVALID_ARGUMENT: a bad call (argument, option, buffer)."""


class TqmNotFoundError(TqmError, LookupError):
    """TQM_NOT_FOUND: no such file, key, tensor or layer."""


class TqmFileNotFoundError(TqmNotFoundError, FileNotFoundError):
    """TQM_NOT_FOUND for a path."""


class TqmKeyError(TqmNotFoundError, KeyError):
    """TQM_NOT_FOUND for a tensor name or a metadata key."""


class TqmDataLossError(TqmError, ValueError):
    """TQM_DATA_LOSS: the file is corrupt (structure, bounds, checksum)."""


class TqmUnimplementedError(TqmError, ValueError, NotImplementedError):
    """TQM_UNIMPLEMENTED: an unknown version, flag, section or codec."""


class TqmResourceExhaustedError(TqmError, MemoryError):
    """TQM_RESOURCE_EXHAUSTED: a limit was reached, or out of memory."""


class TqmFailedPreconditionError(TqmError, TypeError):
    """TQM_FAILED_PRECONDITION: the wrong value type or storage for the call."""


class TqmPermissionError(TqmError, PermissionError):
    """TQM_PERMISSION_DENIED: the operating system refused access."""


class TqmOSError(TqmError, OSError):
    """TQM_OS_ERROR: another operating-system error."""


class TqmOutOfRangeError(TqmError, IndexError):
    """TQM_OUT_OF_RANGE: an index or range past the end."""


class TqmInternalError(TqmError, RuntimeError):
    """TQM_INTERNAL: a bug in tqm."""


_ERRORS = {
    1: TqmInvalidArgumentError,
    2: TqmNotFoundError,
    3: TqmDataLossError,
    4: TqmUnimplementedError,
    5: TqmResourceExhaustedError,
    6: TqmFailedPreconditionError,
    7: TqmPermissionError,
    8: TqmOSError,
    9: TqmOutOfRangeError,
    10: TqmInternalError,
}
_STATUS = {
    1: "TQM_INVALID_ARGUMENT",
    2: "TQM_NOT_FOUND",
    3: "TQM_DATA_LOSS",
    4: "TQM_UNIMPLEMENTED",
    5: "TQM_RESOURCE_EXHAUSTED",
    6: "TQM_FAILED_PRECONDITION",
    7: "TQM_PERMISSION_DENIED",
    8: "TQM_OS_ERROR",
    9: "TQM_OUT_OF_RANGE",
    10: "TQM_INTERNAL",
}
_OS_ERRNO = {2: _errno.ENOENT, 7: _errno.EACCES, 8: _errno.EIO}


def _error(code, message, kind=None, filename=None):
    """The TqmError subclass for status `code`. kind "path" or "key" picks
    FileNotFoundError or KeyError for TQM_NOT_FOUND."""
    cls = _ERRORS.get(code, TqmError)
    if code == 2 and kind == "path":
        cls = TqmFileNotFoundError
    elif code == 2 and kind == "key":
        cls = TqmKeyError
    return cls(code, _STATUS.get(code, "TQM_UNKNOWN_STATUS"), message, filename)


def _check(code, kind=None, filename=None):
    if code != 0:
        lib = _load()
        message = lib.tqm_last_error_message().decode("utf-8", "replace")
        err = _error(code, message, kind, filename)
        err.status = lib.tqm_status_name(code).decode()
        raise err


# ---- files ----

STORAGE_NAMES = {1: "f32", 2: "u8/tensor", 3: "u8/row", 4: "u8/group", 5: "raw"}
DTYPE_NAMES = {
    1: "f32",
    2: "f16",
    3: "bf16",
    4: "q8_0",
    5: "f64",
    6: "i8",
    7: "i16",
    8: "i32",
    9: "i64",
    10: "u8",
    11: "u16",
    12: "u32",
    13: "u64",
    14: "bool",
}
# numpy dtype of each RAW element type (little-endian). bfloat16 has none:
# its bit patterns come back as uint16.
_RAW_NUMPY = {
    "f32": np.dtype("<f4"),
    "f16": np.dtype("<f2"),
    "bf16": np.dtype("<u2"),
    "f64": np.dtype("<f8"),
    "i8": np.dtype("i1"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "u8": np.dtype("u1"),
    "u16": np.dtype("<u2"),
    "u32": np.dtype("<u4"),
    "u64": np.dtype("<u8"),
    "bool": np.dtype("bool"),
}

TensorInfo = namedtuple(
    "TensorInfo",
    [
        "index",
        "name",
        "shape",
        "storage",
        "source_dtype",
        "layer",
        "numel",
        "affine",
        "bits",
        "group_size",
    ],
)
TensorInfo.__doc__ = """One tensor of a .tqm file.

shape: tuple (row-major, shape[0] = rows; () for a 0-d tensor, a 0 in it for an
empty one); storage: "f32", "u8/tensor", "u8/row", "u8/group" or "raw";
source_dtype: "f32", "f16", "bf16", "q8_0", "f64", "i8" ... "u64", "bool" (for
"raw" storage the type of the stored elements); layer: int or None;
affine: numpy float32 array of shape (n, 2) with (scale, zero) per tensor
(n = 1), per row (n = shape[0]) or per group (n = rows * groups per row,
row-major); empty for "f32" and "raw" storage; bits: code width of quantized
tensors (1..8; codes < 2**bits), else 0; group_size: elements per group along
the last dimension for "u8/group", else 0."""

Quantized = namedtuple("Quantized", ["codes", "scale", "zero", "bits", "group_size"])
Quantized.__doc__ = """The codes and affine parameters of a quantized tensor:
value = scale * (code - zero). codes: uint8 array of the tensor's shape;
scale, zero: float32 arrays of shape (1,) (per tensor), (rows,) (per row) or
(rows, groups_per_row) (per group, rows = the product of every dimension but
the last, groups_per_row = ceil(last / group_size))."""


ChunkInfo = namedtuple("ChunkInfo", ["decoded_offset", "decoded_size", "encoded_size", "file_offset", "codec"])
ChunkInfo.__doc__ = """One chunk of a tensor: bytes [decoded_offset, decoded_offset +
decoded_size) of the decoded tensor (codes, float32 or verbatim bytes),
encoded_size bytes at file_offset, codec id (spec/FORMAT.md)."""


def _raw_dtype(t):
    dtype = _RAW_NUMPY.get(t.source_dtype)
    if dtype is None:
        raise _error(6, "tensor '%s': no numpy dtype for %s" % (t.name, t.source_dtype))
    return dtype


def bfloat16_to_float32(bits):
    """float32 values of bfloat16 bit patterns (a uint16 array), exactly."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _param_shape(t):
    """Shape of the scale and zero arrays of Quantized for TensorInfo t."""
    n = len(t.affine)
    if t.storage == "u8/group" and t.shape:
        last = t.shape[-1]
        per_row = -(-last // t.group_size) if t.group_size else 0
        return (n // per_row, per_row) if per_row else (0, 0)
    return (n,)


def _dequantize(codes, t):
    """scale * (q - zero) in float32 with each element's pair, as the library."""
    flat = codes.reshape(-1)
    n = flat.size
    if n == 0:
        return np.zeros(0, np.float32)
    aff = t.affine
    if t.storage == "u8/group":
        last = t.shape[-1]
        per_row = -(-last // t.group_size)
        e = np.arange(n)
        index = e // last * per_row + (e % last) // t.group_size
    elif t.storage == "u8/row":
        index = np.arange(n) // (n // len(aff))
    else:
        index = np.zeros(n, dtype=np.int64)
    scale = aff[index, 0]
    zero = aff[index, 1]
    return scale * (flat.astype(np.float32) - zero)


class TqmFile:
    """An open .tqm file (memory-mapped; decoded on demand). Use tqm.open()."""

    def __init__(self, path, dequantize=False, threads=0, budget_bytes=0, verify=True, prefetch=0):
        lib = _load()
        self._lib = lib
        self._handle = None
        self.path = os.fspath(path)
        opts = _OpenOptions()
        lib.tqm_open_options_init(ctypes.byref(opts))
        opts.threads = threads
        opts.verify_checksums = 1 if verify else 0
        opts.dequantize = 1 if dequantize else 0
        opts.prefetch = prefetch
        opts.budget_bytes = budget_bytes
        handle = ctypes.c_void_p()
        _check(
            lib.tqm_open_ex(os.fsencode(self.path), ctypes.byref(opts), ctypes.byref(handle)),
            kind="path",
            filename=self.path,
        )
        self._handle = handle
        self._metadata = None
        self._tensors = None
        self._by_name = None

    # -- lifetime --

    def close(self):
        """Releases the mapping. Arrays already returned stay valid (they are copies)."""
        if self._handle is not None:
            self._lib.tqm_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _h(self):
        if self._handle is None:
            raise _error(1, "tqm file %s is closed" % self.path)
        return self._handle

    # -- metadata --

    @property
    def metadata(self):
        """dict key -> int | float | str | bytes, in file order."""
        if self._metadata is None:
            lib, h = self._lib, self._h()
            out = {}
            for i in range(lib.tqm_metadata_count(h)):
                key = ctypes.c_char_p()
                _check(lib.tqm_metadata_key(h, i, ctypes.byref(key)))
                t = ctypes.c_int()
                _check(lib.tqm_metadata_type(h, i, ctypes.byref(t)))
                if t.value == 1:
                    v = ctypes.c_int64()
                    _check(lib.tqm_metadata_int(h, i, ctypes.byref(v)))
                    value = v.value
                elif t.value == 2:
                    v = ctypes.c_double()
                    _check(lib.tqm_metadata_float(h, i, ctypes.byref(v)))
                    value = v.value
                else:
                    data = ctypes.c_void_p()
                    size = ctypes.c_size_t()
                    _check(lib.tqm_metadata_bytes(h, i, ctypes.byref(data), ctypes.byref(size)))
                    raw = ctypes.string_at(data, size.value) if size.value else b""
                    value = raw.decode("utf-8", "replace") if t.value == 3 else raw
                out[key.value.decode("utf-8", "replace")] = value
            self._metadata = out
        return dict(self._metadata)

    # -- tensors --

    def _info(self, i):
        lib, h = self._lib, self._h()
        name = ctypes.c_char_p()
        _check(lib.tqm_tensor_name(h, i, ctypes.byref(name)))
        ndim = ctypes.c_size_t()
        _check(lib.tqm_tensor_ndim(h, i, ctypes.byref(ndim)))
        dims = (ctypes.c_uint64 * 8)()
        _check(lib.tqm_tensor_dims(h, i, dims, 8))
        numel = ctypes.c_uint64()
        _check(lib.tqm_tensor_numel(h, i, ctypes.byref(numel)))
        storage = ctypes.c_int()
        _check(lib.tqm_tensor_storage(h, i, ctypes.byref(storage)))
        dtype = ctypes.c_int()
        _check(lib.tqm_tensor_source_dtype(h, i, ctypes.byref(dtype)))
        layer = ctypes.c_int32()
        _check(lib.tqm_tensor_layer(h, i, ctypes.byref(layer)))
        n_affine = ctypes.c_size_t()
        _check(lib.tqm_tensor_affine_count(h, i, ctypes.byref(n_affine)))
        bits = ctypes.c_int32()
        _check(lib.tqm_tensor_bits(h, i, ctypes.byref(bits)))
        group_size = ctypes.c_uint32()
        _check(lib.tqm_tensor_group_size(h, i, ctypes.byref(group_size)))
        affine = np.zeros((n_affine.value, 2), dtype=np.float32)
        if n_affine.value:
            _check(
                lib.tqm_tensor_affine(
                    h, i, affine.ctypes.data_as(ctypes.POINTER(_Affine)), n_affine.value
                )
            )
        return TensorInfo(
            index=i,
            name=name.value.decode("utf-8", "replace"),
            shape=tuple(int(dims[k]) for k in range(ndim.value)),
            storage=STORAGE_NAMES.get(storage.value, str(storage.value)),
            source_dtype=DTYPE_NAMES.get(dtype.value, str(dtype.value)),
            layer=None if layer.value < 0 else layer.value,
            numel=numel.value,
            affine=affine,
            bits=bits.value,
            group_size=group_size.value,
        )

    @property
    def tensors(self):
        """list of TensorInfo, in file order."""
        if self._tensors is None:
            self._tensors = [self._info(i) for i in range(self._lib.tqm_tensor_count(self._h()))]
        return list(self._tensors)

    @property
    def names(self):
        """Tensor names, in file order."""
        return [t.name for t in self.tensors]

    def info(self, name):
        """The TensorInfo of tensor `name` (KeyError when absent)."""
        if self._by_name is None:
            self._by_name = {t.name: t for t in self.tensors}
        t = self._by_name.get(name)
        if t is None:
            raise _error(2, "%s: no tensor '%s'" % (self.path, name), "key")
        return t

    def keys(self):
        """Tensor names, in file order."""
        return self.names

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name):
        if self._by_name is None:
            self._by_name = {t.name: t for t in self.tensors}
        return name in self._by_name

    def __len__(self):
        return self._lib.tqm_tensor_count(self._h())

    def __getitem__(self, name):
        return self.tensor(name)

    def tensor(self, name, dequantize=True):
        """The tensor `name` as a new numpy array of its shape.

        dequantize=True: float32 values (scale * (q - zero) for quantized tensors).
        dequantize=False: uint8 codes for quantized tensors (pair them with
        info(name).affine, or use quantized()); float32 tensors come back as
        float32 either way.
        Tensors of "raw" storage always come back as stored, bit-exact, in
        their own dtype (int64, bool, float64, float16, ...; bfloat16 as
        uint16 bit patterns, see bfloat16_to_float32).
        """
        t = self.info(name)
        h = self._h()
        if t.storage == "raw":
            return self._raw(t)
        if t.storage == "f32" or dequantize:
            out = np.empty(t.numel, dtype=np.float32)
            _check(self._lib.tqm_tensor_read_f32(h, t.index, out.ctypes.data, t.numel))
        else:
            out = np.empty(t.numel, dtype=np.uint8)
            _check(self._lib.tqm_tensor_read_u8(h, t.index, out.ctypes.data, t.numel))
        return out.reshape(t.shape)

    def _raw(self, t):
        size = ctypes.c_uint64()
        _check(self._lib.tqm_tensor_byte_size(self._h(), t.index, ctypes.byref(size)))
        buf = np.empty(size.value, dtype=np.uint8)
        _check(self._lib.tqm_tensor_decode(self._h(), t.index, buf.ctypes.data, size.value))
        return buf.view(_raw_dtype(t)).reshape(t.shape)

    def tensor_range(self, name, first, count, dequantize=True):
        """Elements [first, first + count) of tensor `name` (row-major) as a
        1-D numpy array, decoding only the chunks that hold them. dtype as
        tensor() gives it. TqmOutOfRangeError (an IndexError) past the end."""
        t = self.info(name)
        lib, h = self._lib, self._h()
        first, count = int(first), int(count)
        if first < 0 or count < 0:
            raise _error(9, "%s: tensor '%s': negative range [%d, %d + %d)"
                         % (self.path, name, first, first, count))
        if t.storage == "raw":
            dtype = _raw_dtype(t)
            out = np.empty(count * dtype.itemsize, dtype=np.uint8)
            _check(lib.tqm_tensor_decode_range(h, t.index, first, count, out.ctypes.data, out.size))
            return out.view(dtype)
        if t.storage == "f32" or dequantize:
            out = np.empty(count, dtype=np.float32)
            _check(lib.tqm_tensor_read_f32_range(h, t.index, first, count, out.ctypes.data, count))
        else:
            out = np.empty(count, dtype=np.uint8)
            _check(lib.tqm_tensor_decode_range(h, t.index, first, count, out.ctypes.data, count))
        return out

    def chunks(self, name):
        """The chunks of tensor `name`: a list of ChunkInfo (decoded_offset and
        decoded_size in bytes of the decoded tensor, encoded_size,
        file_offset, codec id)."""
        t = self.info(name)
        lib, h = self._lib, self._h()
        n = ctypes.c_size_t()
        _check(lib.tqm_tensor_chunk_count(h, t.index, ctypes.byref(n)))
        out = []
        for c in range(n.value):
            ci = _ChunkInfo()
            _check(lib.tqm_tensor_chunk(h, t.index, c, ctypes.byref(ci)))
            out.append(ChunkInfo(ci.decoded_offset, ci.decoded_size, ci.encoded_size,
                                 ci.file_offset, ci.codec))
        return out

    @property
    def chunks_decoded(self):
        """Chunks decoded so far by tensor reads on this file (tensor,
        tensor_range, quantized, slices; not the layer loader): what a read
        cost."""
        return int(self._lib.tqm_chunks_decoded(self._h()))

    def get_slice(self, name, framework="np"):
        """A TqmSlice of tensor `name`: index it ([a:b], [:, c:d], [i] ...)
        to decode only the rows asked for."""
        return TqmSlice(self, self.info(name), _framework(framework))

    def quantized(self, name):
        """The codes and (scale, zero) parameters of quantized tensor `name`
        as a Quantized tuple; TqmError (TQM_FAILED_PRECONDITION) for "f32" and
        "raw" storage."""
        t = self.info(name)
        codes = self.tensor(name, dequantize=False)
        if t.storage in ("f32", "raw"):
            _check(self._lib.tqm_tensor_read_u8(self._h(), t.index, None, 0))
        shape = _param_shape(t)
        return Quantized(
            codes=codes,
            scale=t.affine[:, 0].copy().reshape(shape),
            zero=t.affine[:, 1].copy().reshape(shape),
            bits=t.bits,
            group_size=t.group_size,
        )

    # -- layers --

    @property
    def num_layers(self):
        """1 + the highest layer number (0 when no tensor has one)."""
        return self._lib.tqm_layer_count(self._h())

    def layer(self, i, dequantize=True):
        """dict name -> numpy array of every tensor of layer `i` (None: the
        tensors of no layer), decoded through the lazy loader (in parallel,
        kept in its cache while the budget allows). Arrays are copies.
        dequantize applies to this call whatever the file was opened with:
        False gives the uint8 codes of quantized tensors, True float32.
        """
        lib, h = self._lib, self._h()
        pin = ctypes.c_void_p()
        _check(lib.tqm_layer_pin(h, -1 if i is None else int(i), ctypes.byref(pin)))
        try:
            out = {}
            infos = self.tensors
            for j in range(lib.tqm_layer_tensor_count(pin)):
                v = _View()
                _check(lib.tqm_layer_tensor(pin, j, ctypes.byref(v)))
                t = infos[v.tensor]
                shape = t.shape
                n = v.numel
                if t.storage == "raw":
                    # Views carry no pointer for verbatim bytes: decode them.
                    arr = self._raw(t)
                elif v.f32 and t.storage != "f32" and not dequantize:
                    # The loader holds float32 (opened with dequantize=True)
                    # but this call asks for codes: decode them from the file.
                    arr = self.tensor(t.name, dequantize=False)
                elif v.f32:
                    arr = np.ctypeslib.as_array(v.f32, shape=(n,)).copy()
                elif n == 0:
                    arr = np.empty(0, np.float32 if t.storage == "f32" or dequantize else np.uint8)
                else:
                    q = np.ctypeslib.as_array(v.q, shape=(n,)).copy()
                    # Same float32 arithmetic as the library: scale * (q - zero).
                    arr = _dequantize(q, t) if dequantize else q
                out[v.name.decode("utf-8", "replace")] = arr.reshape(shape)
            return out
        finally:
            lib.tqm_layer_release(pin)

    def verify(self):
        """Checks every checksum and decodes every chunk; raises TqmError on damage."""
        _check(self._lib.tqm_verify(self._h()))

    def __repr__(self):
        state = "closed" if self._handle is None else "%d tensors" % len(self)
        return "<tqm.TqmFile %s (%s)>" % (self.path, state)


def open(path, dequantize=False, threads=0, budget_bytes=0, verify=True, prefetch=0):
    """Opens a .tqm file. Options go to the loader: `dequantize` makes the
    loader's layer cache hold float32, `threads` decodes layers in parallel
    (0: all cores), `budget_bytes` caps the decoded layers kept (0: no cap),
    `verify` checks chunk checksums, `prefetch` decodes layers ahead."""
    return TqmFile(path, dequantize, threads, budget_bytes, verify, prefetch)


def version():
    """The C library's version string."""
    return _load().tqm_version().decode()


# ---- safetensors-style API ----

_FRAMEWORKS = {"np": "np", "numpy": "np", "pt": "pt", "torch": "pt", "pytorch": "pt"}

# safetensors' dtype names of what get_tensor returns.
_SAFETENSORS_DTYPE = {
    "f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64", "i8": "I8", "i16": "I16",
    "i32": "I32", "i64": "I64", "u8": "U8", "u16": "U16", "u32": "U32", "u64": "U64",
    "bool": "BOOL",
}


def _framework(framework):
    fw = _FRAMEWORKS.get(framework)
    if fw is None:
        raise _error(1, "framework %r: tqm supports 'np' (numpy) and 'pt' (torch)" % (framework,))
    return fw


def _to_framework(arr, info, framework, device="cpu"):
    """`arr` (numpy, as TqmFile.tensor returns it) for `framework`."""
    if framework == "np":
        return arr
    from . import torch as _tt

    return _tt._from_numpy(arr, info, device)


class TqmSlice:
    """A tensor of a file, indexed lazily: f.get_slice(name)[a:b] decodes the
    chunks that hold rows a..b only. Indexing follows numpy's basic indexing
    (ints, slices, Ellipsis); the first index selects rows, the others apply
    to the decoded rows. Anything else (arrays, None) decodes the whole tensor
    and indexes it with numpy."""

    def __init__(self, file, info, framework="np", device="cpu", dequantize=True):
        self._file = file
        self._info = info
        self._framework = framework
        self._device = device
        self._dequantize = dequantize

    def get_shape(self):
        return list(self._info.shape)

    @property
    def shape(self):
        return tuple(self._info.shape)

    def get_dtype(self):
        """safetensors' name of the dtype the slice yields ("F32", "I64", ...)."""
        t = self._info
        if t.storage == "raw":
            return _SAFETENSORS_DTYPE.get(t.source_dtype, t.source_dtype.upper())
        return "F32" if t.storage == "f32" or self._dequantize else "U8"

    def __len__(self):
        if not self._info.shape:
            raise TypeError("len() of a 0-d tensor")
        return self._info.shape[0]

    def __getitem__(self, key):
        arr = self._select(key)
        return _to_framework(arr, self._info, self._framework, self._device)

    def _rows(self, lo, hi):
        t = self._info
        per_row = 1
        for d in t.shape[1:]:
            per_row *= d
        flat = self._file.tensor_range(t.name, lo * per_row, (hi - lo) * per_row, self._dequantize)
        return flat.reshape((hi - lo,) + tuple(t.shape[1:]))

    def _select(self, key):
        t = self._info
        f = self._file
        if not isinstance(key, tuple):
            key = (key,)
        simple = all(
            (isinstance(k, (slice, int, np.integer)) and not isinstance(k, (bool, np.bool_)))
            or k is Ellipsis
            for k in key
        )
        if not t.shape or not simple or t.numel == 0 or (key and key[0] is Ellipsis):
            return f.tensor(t.name, self._dequantize)[key]
        rows = t.shape[0]
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(first, slice):
            idx = range(*first.indices(rows))
            if len(idx) == 0:
                return self._rows(0, 0)[(slice(None),) + rest]
            lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1]) + 1
            block = self._rows(lo, hi)
            # Re-base the row slice on the decoded block.
            step = idx.step
            start = idx[0] - lo
            stop = idx[-1] - lo + (1 if step > 0 else -1)
            if stop < 0:
                stop = None
            return block[(slice(start, stop, step),) + rest]
        i = int(first)
        if i < -rows or i >= rows:
            raise _error(9, "%s: tensor '%s': row %d out of range (%d rows)" % (f.path, t.name, i, rows))
        i %= rows
        return self._rows(i, i + 1)[(0,) + rest]

    def __repr__(self):
        return "<tqm.TqmSlice %s %s %s>" % (self._info.name, self.get_dtype(), self.shape)


def _metadata_text(value):
    """A typed metadata value as safetensors' str: ints and floats in Python's
    round-trip notation, strings as they are, bytes as base64."""
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float):
        return repr(value)
    return str(value)


class safe_open:
    """safetensors.safe_open for .tqm files:

        with tqm.safe_open("model.tqm", framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)

    framework: "np" (numpy arrays) or "pt" (torch tensors on `device`).
    dequantize: quantized tensors as float32 values (True, default) or as
    their uint8 codes. Other keyword arguments go to tqm.open (threads,
    budget_bytes, verify, prefetch). .file is the underlying TqmFile
    (typed metadata, quantized(), layer())."""

    def __init__(self, filename, framework="np", device="cpu", dequantize=True, **open_options):
        self._framework = _framework(framework)
        if self._framework == "np" and str(device) != "cpu":
            raise _error(1, "device %r: numpy arrays live on the cpu" % (device,))
        self._device = device
        self._dequantize = dequantize
        self.file = TqmFile(filename, **open_options)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self.file.close()

    def keys(self):
        """Tensor names, in file order (safetensors sorts them; tqm keeps the
        order they were written in)."""
        return self.file.names

    def __iter__(self):
        return iter(self.file.names)

    def __contains__(self, name):
        return name in self.file

    def __len__(self):
        return len(self.file)

    def metadata(self):
        """dict str -> str, as safetensors: ints and floats as text, strings
        as they are, bytes values in base64. typed_metadata() (or
        .file.metadata) keeps the types."""
        return {k: _metadata_text(v) for k, v in self.file.metadata.items()}

    def typed_metadata(self):
        """dict str -> int | float | str | bytes, in file order."""
        return self.file.metadata

    def get_tensor(self, name):
        t = self.file.info(name)
        arr = self.file.tensor(name, dequantize=self._dequantize)
        return _to_framework(arr, t, self._framework, self._device)

    def get_slice(self, name):
        return TqmSlice(self.file, self.file.info(name), self._framework, self._device, self._dequantize)

    def quantized(self, name):
        """Codes and (scale, zero) of a quantized tensor (numpy), as
        TqmFile.quantized."""
        return self.file.quantized(name)

    def __repr__(self):
        return "<tqm.safe_open %s>" % self.file.path


# ---- writing ----

_PROFILES = {"size": 0, "balanced": 1, "speed": 2}
_GRANULARITIES = {"tensor": 0, "row": 1, "group": 2}
# numpy dtype -> the C API's tqm_source_dtype.
_NUMPY_DTYPE_IDS = {
    np.dtype("float32"): 1,
    np.dtype("float16"): 2,
    np.dtype("float64"): 5,
    np.dtype("int8"): 6,
    np.dtype("int16"): 7,
    np.dtype("int32"): 8,
    np.dtype("int64"): 9,
    np.dtype("uint8"): 10,
    np.dtype("uint16"): 11,
    np.dtype("uint32"): 12,
    np.dtype("uint64"): 13,
    np.dtype("bool"): 14,
}
_BF16 = 3
_WRITE_KEEP = 1
_WRITE_BORROW = 2

PackStats = namedtuple(
    "PackStats", ["tensors", "quantized_tensors", "raw_tensors", "weights", "source_bytes", "file_bytes", "seconds"]
)


def _keep_predicate(keep):
    if keep is None or keep is False:
        return lambda name: False
    if keep is True:
        return lambda name: True
    if isinstance(keep, str):
        pattern = re.compile(keep)
        return lambda name: pattern.search(name) is not None
    if callable(keep):
        return keep
    names = set(keep)
    return lambda name: name in names


def _pack_options(profile="balanced", granularity="tensor", group_size=None, bits=8,
                  quantize_all=False, entropy=True, lanes=True, zstd_level=None, threads=0,
                  chunk_size=None, max_table_entries=None):
    lib = _load()
    o = _PackOptions()
    lib.tqm_pack_options_init(ctypes.byref(o))
    if profile not in _PROFILES:
        raise _error(1, "profile %r is not one of %s" % (profile, ", ".join(_PROFILES)))
    o.profile = _PROFILES[profile]
    g = str(granularity)
    if g.startswith("group:"):
        g, size = "group", g[len("group:"):]
        if not size.isdigit():
            raise _error(1, "granularity %r: want group:G with G a number" % (granularity,))
        group_size = int(size)
    if g not in _GRANULARITIES:
        raise _error(1, "granularity %r is not tensor, row, group or group:G" % (granularity,))
    o.granularity = _GRANULARITIES[g]
    if group_size is not None:
        o.group_size = int(group_size)
    o.bits = int(bits)
    o.quantize_all = 1 if quantize_all else 0
    o.entropy = 1 if entropy else 0
    o.lanes = 1 if lanes else 0
    if zstd_level is not None:
        o.zstd_level = int(zstd_level)
    o.threads = int(threads)
    if chunk_size is not None:
        o.chunk_size = int(chunk_size)
    if max_table_entries is not None:
        o.max_table_entries = int(max_table_entries)
    return o


def _save(items, filename, metadata=None, keep=None, **options):
    """Writes `items`, a list of (name, C-contiguous little-endian numpy array,
    tqm_source_dtype id), through the C writer (tqm_writer_*). Returns
    PackStats."""
    lib = _load()
    opts = _pack_options(**options)
    kept = _keep_predicate(keep)
    w = ctypes.c_void_p()
    _check(lib.tqm_writer_new(ctypes.byref(opts), ctypes.byref(w)))
    try:
        for name, arr, dtype_id in items:
            dims = (ctypes.c_uint64 * max(arr.ndim, 1))(*arr.shape)
            flags = _WRITE_BORROW | (_WRITE_KEEP if kept(name) else 0)
            data = arr.ctypes.data if arr.nbytes else None
            _check(lib.tqm_writer_add_tensor(w, name.encode("utf-8"), dtype_id, dims, arr.ndim,
                                             data, arr.nbytes, flags))
        for key, value in (metadata or {}).items():
            if not isinstance(key, str):
                raise _error(6, "metadata key %r is not a str" % (key,))
            k = key.encode("utf-8")
            if isinstance(value, bool):
                _check(lib.tqm_writer_set_metadata_int(w, k, int(value)))
            elif isinstance(value, (int, np.integer)):
                _check(lib.tqm_writer_set_metadata_int(w, k, int(value)))
            elif isinstance(value, (float, np.floating)):
                _check(lib.tqm_writer_set_metadata_float(w, k, float(value)))
            elif isinstance(value, str):
                v = value.encode("utf-8")
                _check(lib.tqm_writer_set_metadata_string(w, k, v, len(v)))
            elif isinstance(value, (bytes, bytearray, memoryview)):
                v = bytes(value)
                _check(lib.tqm_writer_set_metadata_bytes(w, k, v, len(v)))
            else:
                raise _error(6, "metadata '%s': %s is not str, int, float or bytes" % (key, type(value).__name__))
        stats = _PackStats()
        path = os.fspath(filename)
        _check(lib.tqm_writer_finish(w, os.fsencode(path), ctypes.byref(stats)), kind="path", filename=path)
        return PackStats(*(getattr(stats, f) for f, _ in _PackStats._fields_))
    finally:
        lib.tqm_writer_free(w)


def _numpy_item(name, arr):
    """(name, array ready for the writer, dtype id) for a numpy array."""
    if not isinstance(name, str):
        raise _error(6, "tensor name %r is not a str" % (name,))
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    dtype_id = _NUMPY_DTYPE_IDS.get(arr.dtype)
    if dtype_id is None:
        raise _error(6, "tensor '%s': numpy dtype %s cannot be stored (float16/32/64, "
                        "int8..int64, uint8..uint64, bool)" % (name, arr.dtype))
    # Not ascontiguousarray: it turns a 0-d array into a 1-d one.
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    return name, arr, dtype_id
