"""Python binding of tqm over its C API (libtqm_c.so) with ctypes: no build step.

    import tqm
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

The shared library is found through the environment variable TQM_LIB (a path
to libtqm_c.so), else in build/lib of the source tree this package lives in.
Errors raise tqm.TqmError, whose .code is the C API's stable status number
and .status its name ("TQM_DATA_LOSS", ...).
"""

import ctypes
import os
from collections import namedtuple

import numpy as np

__all__ = [
    "open",
    "TqmFile",
    "TensorInfo",
    "Quantized",
    "TqmError",
    "library_path",
    "version",
    "bfloat16_to_float32",
]

# ---- the shared library ----


def library_path():
    """The path of libtqm_c.so this module loads."""
    env = os.environ.get("TQM_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for rel in (("..", "..", "build", "lib"), ("..", "build", "lib")):
        candidate = os.path.normpath(os.path.join(here, *rel, "libtqm_c.so"))
        if os.path.exists(candidate):
            return candidate
    raise OSError(
        "libtqm_c.so not found: set TQM_LIB to its path or build the project "
        "(cmake --build build --target tqm_c)"
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


def _load():
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(library_path())
    status = ctypes.c_int
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
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib
    return lib


# ---- errors ----


class TqmError(Exception):
    """A failed C API call. .code: the stable status number; .status: its name."""

    def __init__(self, code, status, message):
        super().__init__("%s: %s" % (status, message))
        self.code = code
        self.status = status
        self.message = message


def _check(code):
    if code != 0:
        lib = _load()
        message = lib.tqm_last_error_message().decode("utf-8", "replace")
        raise TqmError(code, lib.tqm_status_name(code).decode(), message)


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
        _check(lib.tqm_open_ex(os.fsencode(self.path), ctypes.byref(opts), ctypes.byref(handle)))
        self._handle = handle
        self._metadata = None
        self._tensors = None

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
            raise ValueError("tqm file %s is closed" % self.path)
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
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def __contains__(self, name):
        return any(t.name == name for t in self.tensors)

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
        dtype = _RAW_NUMPY.get(t.source_dtype)
        if dtype is None:
            raise TqmError(6, "TQM_FAILED_PRECONDITION",
                           "tensor '%s': no numpy dtype for %s" % (t.name, t.source_dtype))
        return buf.view(dtype).reshape(t.shape)

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
