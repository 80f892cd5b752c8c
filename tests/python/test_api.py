"""Tests of tqm's safetensors-style API with numpy: tqm.numpy.save_file /
load_file through the C writer, tqm.safe_open (keys, get_tensor, get_slice,
metadata), partial decoding of slices, the TqmFile protocol (iteration, in,
len, per-call flags) and the TqmError classes.

Run by ctest with TQM_LIB and PYTHONPATH set; by hand:
  PYTHONPATH=python TQM_LIB=build/lib/libtqm_c.so python3 tests/python/test_api.py
"""

import base64
import errno
import os
import sys
import tempfile
import unittest

try:
    import numpy as np
except ImportError:  # a python3 without numpy first on PATH: use Debian's
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath(
        "/usr/bin/python3"
    ):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "python"))

import tqm  # noqa: E402
import tqm.numpy  # noqa: E402

VECTORS = os.path.join(SOURCE, "spec", "vectors")


def mixed():
    """Arrays of every dtype the writer takes, with 0-d and empty ones."""
    rng = np.random.default_rng(7)
    d = {
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((48, 40)).astype(np.float32),
        "model.layers.1.attn.weight": (rng.standard_normal((16, 24)) * 3).astype(np.float16),
        "model.norm.weight": rng.standard_normal(40).astype(np.float32),  # 1-D: kept float32
        "f64": rng.standard_normal((3, 4)),
        "scalar.f32": np.array(2.5, dtype=np.float32),
        "scalar.i64": np.array(-(2**62), dtype=np.int64),
        "empty.f32": np.zeros((0, 4), dtype=np.float32),
        "empty.i64": np.zeros((3, 0), dtype=np.int64),
        "bool": rng.integers(0, 2, (5, 3)).astype(bool),
    }
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(t)
        a = rng.integers(info.min, info.max, (2, 3, 4), dtype=t, endpoint=True)
        a.flat[0], a.flat[1] = info.min, info.max
        d["int.%s" % np.dtype(t).name] = a
    return d


def half_step(q):
    """Per-element bound |x - dequantized| <= scale / 2 for Quantized q."""
    scale = q.scale
    shape = q.codes.shape
    if scale.size == 1:
        s = np.full(shape, scale.reshape(()))
    elif q.group_size:
        rows = int(np.prod(shape[:-1]))
        s = np.repeat(scale.reshape(rows, -1), q.group_size, axis=1)[:, : shape[-1]].reshape(shape)
    else:
        s = np.broadcast_to(scale.reshape((shape[0],) + (1,) * (len(shape) - 1)), shape)
    return s.astype(np.float64) / 2 * (1 + 1e-5) + 1e-12


class Writer(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "m.tqm")

    def tearDown(self):
        self.dir.cleanup()

    def check_round_trip(self, d, **options):
        stats = tqm.numpy.save_file(d, self.path, metadata={"note": "mixed"}, **options)
        self.assertEqual(stats.tensors, len(d))
        self.assertEqual(stats.file_bytes, os.path.getsize(self.path))
        back = tqm.numpy.load_file(self.path)
        self.assertEqual(list(back), list(d))  # file order = dict order
        with tqm.open(self.path) as m:
            m.verify()
            for name, want in d.items():
                got = back[name]
                info = m.info(name)
                self.assertEqual(got.shape, want.shape, name)
                if info.storage == "raw" or (info.storage == "f32" and want.dtype == np.float32):
                    self.assertEqual(got.dtype, want.dtype, name)
                    self.assertEqual(got.tobytes(), want.tobytes(), name)
                elif info.storage == "f32":  # float16 not quantized: float32, exactly
                    np.testing.assert_array_equal(got, want.astype(np.float32))
                else:
                    self.assertEqual(got.dtype, np.float32, name)
                    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    self.assertTrue((err <= half_step(m.quantized(name))).all(), name)
        return back

    def test_mixed_dtypes_round_trip(self):
        d = mixed()
        self.check_round_trip(d)
        with tqm.open(self.path) as m:
            storage = {t.name: t.storage for t in m.tensors}
        self.assertEqual(storage["model.layers.0.mlp.up_proj.weight"], "u8/tensor")
        self.assertEqual(storage["model.layers.1.attn.weight"], "u8/tensor")
        self.assertEqual(storage["model.norm.weight"], "f32")
        for name, a in d.items():
            if a.dtype != np.float32 and (a.ndim < 2 or a.dtype.kind != "f" or a.dtype == np.float64):
                self.assertEqual(storage[name], "raw", name)  # verbatim in its own dtype
        # float32 0-d and empty arrays are stored verbatim as float32.
        self.assertEqual((storage["scalar.f32"], storage["empty.f32"]), ("f32", "f32"))

    def test_pack_options(self):
        d = mixed()
        for options, storage, bits in (
            (dict(granularity="row"), "u8/row", 8),
            (dict(granularity="group:8", bits=4), "u8/group", 4),
            (dict(granularity="group", group_size=16, bits=3, profile="size"), "u8/group", 3),
            (dict(profile="speed", threads=1, chunk_size=64, entropy=False), "u8/tensor", 8),
            (dict(quantize_all=True, bits=6, granularity="row"), "u8/row", 6),
        ):
            self.check_round_trip(d, **options)
            with tqm.open(self.path) as m:
                t = m.info("model.layers.0.mlp.up_proj.weight")
                self.assertEqual((t.storage, t.bits), (storage, bits), options)
                self.assertEqual(m.info("model.norm.weight").storage,
                                 "f32" if not options.get("quantize_all") else "u8/tensor")
                if "group_size" in options:
                    self.assertEqual(t.group_size, 16)

    def test_keep_stores_verbatim(self):
        d = mixed()
        for keep in ("up_proj|attn", ["model.layers.0.mlp.up_proj.weight", "model.layers.1.attn.weight"],
                     lambda name: "layers" in name, True):
            back = self.check_round_trip(d, keep=keep)
            with tqm.open(self.path) as m:
                self.assertEqual(m.info("model.layers.0.mlp.up_proj.weight").storage, "f32")
                self.assertEqual(m.info("model.layers.1.attn.weight").storage, "raw")
            self.assertEqual(back["model.layers.1.attn.weight"].dtype, np.float16)
            self.assertEqual(back["model.layers.1.attn.weight"].tobytes(),
                             d["model.layers.1.attn.weight"].tobytes())

    def test_byte_order_and_layout_of_the_input(self):
        a = np.arange(12, dtype=">i4").reshape(3, 4)
        t = np.arange(12, dtype=np.int64).reshape(3, 4).T  # not C-contiguous
        tqm.numpy.save_file({"be": a, "t": t}, self.path)
        back = tqm.numpy.load_file(self.path)
        np.testing.assert_array_equal(back["be"], a)
        np.testing.assert_array_equal(back["t"], t)

    def test_metadata_typed_and_as_text(self):
        meta = {"s": "héllo", "i": -3, "f": 0.1, "b": b"\x00\xff", "flag": True}
        tqm.numpy.save_file({"x": np.arange(3)}, self.path, metadata=meta)
        with tqm.safe_open(self.path) as f:
            typed = f.typed_metadata()
            self.assertEqual(typed["s"], "héllo")
            self.assertEqual((typed["i"], typed["f"], typed["b"], typed["flag"]), (-3, 0.1, b"\x00\xff", 1))
            text = f.metadata()
            self.assertTrue(all(isinstance(v, str) for v in text.values()))
            self.assertEqual((text["s"], text["i"], text["f"]), ("héllo", "-3", "0.1"))
            self.assertEqual(base64.b64decode(text["b"]), b"\x00\xff")
            self.assertEqual(list(text)[:5], list(meta))
            self.assertIn("tqm.writer", text)

    def test_overwrites_an_existing_file(self):
        tqm.numpy.save_file({"a": np.arange(3)}, self.path)
        tqm.numpy.save_file({"b": np.arange(4)}, self.path)
        self.assertEqual(list(tqm.numpy.load_file(self.path)), ["b"])
        self.assertEqual(os.listdir(self.dir.name), ["m.tqm"])  # no temporary left

    def test_bad_input_raises_and_writes_nothing(self):
        cases = [
            ({"c": np.zeros(3, np.complex64)}, {}, TypeError),
            ({"o": np.array(["x"], dtype=object)}, {}, TypeError),
            ({1: np.zeros(3)}, {}, TypeError),
            ({"a": np.zeros((2, 2), np.float32)}, {"bits": 9}, ValueError),
            ({"a": np.zeros((2, 2), np.float32)}, {"granularity": "group"}, ValueError),
            ({"a": np.zeros((2, 2), np.float32)}, {"granularity": "col"}, ValueError),
            ({"a": np.zeros((2, 2), np.float32)}, {"profile": "fast"}, ValueError),
            ({"a": np.zeros((2, 2), np.float32)}, {"chunk_size": 6}, ValueError),
        ]
        for tensors, options, exc in cases:
            with self.assertRaises(exc) as cm:
                tqm.numpy.save_file(tensors, self.path, **options)
            self.assertIsInstance(cm.exception, tqm.TqmError)
        for meta in ({"bad key": "v"}, {"k": [1]}, {"k": "\ud800"}):
            with self.assertRaises((ValueError, TypeError, UnicodeError)):
                tqm.numpy.save_file({"a": np.zeros(2)}, self.path, metadata=meta)
        self.assertEqual(os.listdir(self.dir.name), [])
        with self.assertRaises(FileNotFoundError) as cm:
            tqm.numpy.save_file({"a": np.zeros(2)}, os.path.join(self.dir.name, "no", "x.tqm"))
        self.assertIsInstance(cm.exception, tqm.TqmError)
        self.assertEqual(cm.exception.errno, errno.ENOENT)


class SafeOpen(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls.dir.name, "s.tqm")
        rng = np.random.default_rng(3)
        cls.big = rng.standard_normal((256, 256)).astype(np.float32)
        cls.ids = np.arange(7 * 5, dtype=np.int64).reshape(7, 5)
        tqm.numpy.save_file(
            {"model.layers.0.big.weight": cls.big, "ids": cls.ids, "s": np.array(4, np.int16)},
            cls.path, granularity="row", chunk_size=4096)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def test_keys_iteration_len_in(self):
        with tqm.safe_open(self.path, framework="np") as f:
            self.assertEqual(f.keys(), ["model.layers.0.big.weight", "ids", "s"])
            self.assertEqual(list(f), f.keys())
            self.assertEqual(len(f), 3)
            self.assertIn("ids", f)
            self.assertNotIn("nope", f)
            self.assertEqual(list(f.file), f.keys())
            self.assertEqual(f.file.keys(), f.keys())
            np.testing.assert_array_equal(f.get_tensor("ids"), self.ids)
            self.assertEqual(f.get_tensor("s").shape, ())

    def test_slices_equal_numpy_indexing(self):
        name = "model.layers.0.big.weight"
        keys = [
            np.s_[2:5], np.s_[:, 1:3], np.s_[5], np.s_[-1], np.s_[::37], np.s_[200:3:-41],
            np.s_[..., 1], np.s_[2:5, ::2], np.s_[[1, 3]], np.s_[10:10], np.s_[250:300],
            np.s_[3, 4], np.s_[-256:-250, -2:], np.s_[:], (),
        ]
        with tqm.safe_open(self.path, framework="np") as f:
            full = f.get_tensor(name)
            sl = f.get_slice(name)
            self.assertEqual(sl.get_shape(), [256, 256])
            self.assertEqual(sl.get_dtype(), "F32")
            self.assertEqual(len(sl), 256)
            for key in keys:
                got = sl[key]
                want = full[key]
                self.assertEqual(got.shape, want.shape, key)
                np.testing.assert_array_equal(got, want, str(key))
            ids = f.get_slice("ids")
            self.assertEqual(ids.get_dtype(), "I64")
            for key in (np.s_[1:3], np.s_[:, 2], np.s_[-1], np.s_[::2, 1:]):
                np.testing.assert_array_equal(ids[key], self.ids[key])
            self.assertEqual(int(f.get_slice("s")[()]), 4)
            with self.assertRaises(IndexError) as cm:
                sl[256]
            self.assertIsInstance(cm.exception, tqm.TqmError)
        with tqm.safe_open(self.path, dequantize=False) as f:
            codes = f.get_slice(name)
            self.assertEqual(codes.get_dtype(), "U8")
            np.testing.assert_array_equal(codes[7:9], f.quantized(name).codes[7:9])

    def test_row_slice_decodes_only_its_chunks(self):
        name = "model.layers.0.big.weight"
        with tqm.safe_open(self.path) as f:
            chunks = f.file.chunks(name)
            self.assertEqual(len(chunks), 256 * 256 // 4096)  # one code a weight
            # Rows 40..42 are bytes [40*256, 42*256) of the codes.
            lo, hi = 40 * 256, 42 * 256
            want = sum(1 for c in chunks if c.decoded_offset < hi and lo < c.decoded_offset + c.decoded_size)
            self.assertEqual(want, 1)
            before = f.file.chunks_decoded
            rows = f.get_slice(name)[40:42]
            self.assertEqual(f.file.chunks_decoded - before, want)
            before = f.file.chunks_decoded
            full = f.get_tensor(name)
            self.assertEqual(f.file.chunks_decoded - before, len(chunks))
            np.testing.assert_array_equal(rows, full[40:42])
            np.testing.assert_array_equal(
                f.file.tensor_range(name, 40 * 256 + 3, 5), full.reshape(-1)[40 * 256 + 3 : 40 * 256 + 8])

    def test_framework_and_device_checked(self):
        for bad in ("flax", "tf", "jax"):
            with self.assertRaises(ValueError):
                tqm.safe_open(self.path, framework=bad)
        with self.assertRaises(ValueError):
            tqm.safe_open(self.path, framework="np", device="cuda:0")

    def test_quantized_access_stays(self):
        name = "model.layers.0.big.weight"
        with tqm.safe_open(self.path) as f:
            q = f.quantized(name)
            self.assertEqual((q.codes.dtype, q.codes.shape, q.scale.shape), (np.uint8, (256, 256), (256,)))
            deq = q.scale[:, None] * (q.codes.astype(np.float32) - q.zero[:, None])
            np.testing.assert_array_equal(deq, f.get_tensor(name))


class Errors(unittest.TestCase):
    def test_missing_file(self):
        with self.assertRaises(FileNotFoundError) as cm:
            tqm.safe_open("/nonexistent/x.tqm")
        e = cm.exception
        self.assertIsInstance(e, tqm.TqmError)
        self.assertIsInstance(e, tqm.TqmNotFoundError)
        self.assertEqual((e.code, e.status, e.errno, e.filename), (2, "TQM_NOT_FOUND", errno.ENOENT, "/nonexistent/x.tqm"))
        self.assertIn("/nonexistent/x.tqm", str(e))

    def test_bad_format(self):
        with open(os.path.join(VECTORS, "tiny.tqm"), "rb") as g:
            good = g.read()
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "bad.tqm")
            for offset, value in ((1, 0x55), (8, 9)):  # magic; major version
                data = bytearray(good)
                data[offset] = value
                with open(p, "wb") as out:
                    out.write(bytes(data))
                with self.assertRaises(ValueError) as cm:
                    tqm.safe_open(p)
                self.assertIsInstance(cm.exception, tqm.TqmError)
                if cm.exception.status == "TQM_UNIMPLEMENTED":
                    self.assertIsInstance(cm.exception, NotImplementedError)
            with open(p, "wb") as out:
                out.write(b"not a tqm file at all")
            with self.assertRaises(ValueError):
                tqm.open(p)

    def test_missing_key(self):
        with tqm.safe_open(os.path.join(VECTORS, "rows.tqm")) as f:
            for call in (f.get_tensor, f.get_slice, f.quantized, f.file.info, f.file.tensor):
                with self.assertRaises(KeyError) as cm:
                    call("nope")
                self.assertIsInstance(cm.exception, tqm.TqmError)
                self.assertIn("'nope'", str(cm.exception))

    def test_wrong_storage_and_closed_file(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "r.tqm")
            tqm.numpy.save_file({"ids": np.arange(4)}, p)
            f = tqm.safe_open(p)
            with self.assertRaises(TypeError) as cm:
                f.quantized("ids")
            self.assertIsInstance(cm.exception, tqm.TqmFailedPreconditionError)
            with self.assertRaises(IndexError):
                f.file.tensor_range("ids", 3, 2)
            f.close()
            with self.assertRaises(ValueError) as cm:
                f.get_tensor("ids")
            self.assertIsInstance(cm.exception, tqm.TqmError)

    def test_missing_layer_is_a_lookup_error(self):
        with tqm.open(os.path.join(VECTORS, "rows.tqm")) as m:
            with self.assertRaises(LookupError) as cm:
                m.layer(1)
            self.assertEqual(cm.exception.status, "TQM_NOT_FOUND")


class PerCallFlags(unittest.TestCase):
    def test_layer_flag_wins_over_the_open_flag(self):
        path = os.path.join(VECTORS, "rows.tqm")
        name = "model.layers.2.b.weight"
        for opened in (False, True):
            with tqm.open(path, dequantize=opened) as m:
                codes = m.layer(2, dequantize=False)[name]
                values = m.layer(2, dequantize=True)[name]
                self.assertEqual(codes.dtype, np.uint8, opened)
                self.assertEqual(values.dtype, np.float32, opened)
                np.testing.assert_array_equal(codes, m.tensor(name, dequantize=False))
                np.testing.assert_array_equal(values, m.tensor(name))


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
