"""Tests of the Python binding (python/tqm) over libtqm_c.so.

Run by ctest with TQM_LIB, TQM_BIN_DIR, TQM_SHARED_DIR and PYTHONPATH set; also
runnable by hand: PYTHONPATH=python TQM_LIB=build/lib/libtqm_c.so python3 tests/python/test_tqm.py
Exits non-zero on failure.
"""

import os
import subprocess
import sys
import tempfile
import unittest

try:
    import numpy as np
except ImportError:  # e.g. a pyenv python3 first on PATH: use Debian's, which has numpy
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath(
        "/usr/bin/python3"
    ):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "python"))

import tqm  # noqa: E402

VECTORS = os.path.join(SOURCE, "spec", "vectors")
SHARED = os.environ.get("TQM_SHARED_DIR", os.path.join(SOURCE, "..", "shared"))
BIN = os.environ.get("TQM_BIN_DIR", os.path.join(SOURCE, "build", "bin"))
STORIES = os.path.join(SHARED, "models", "stories260K", "stories260K.bin")
TOK512 = os.path.join(SHARED, "models", "stories260K", "tok512.bin")


def vector(name):
    return os.path.join(VECTORS, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class GoldenVectors(unittest.TestCase):
    def check_decoded(self, name):
        with tqm.open(vector(name + ".tqm")) as m:
            m.verify()
            blob = b""
            for t in m.tensors:
                arr = m.tensor(t.name, dequantize=False)
                self.assertEqual(arr.shape, t.shape)
                self.assertEqual(arr.dtype, np.float32 if t.storage == "f32" else np.uint8)
                blob += arr.tobytes()
            self.assertEqual(blob, read(vector(name + ".decoded")))

    def test_tiny_decodes_to_committed_bytes(self):
        self.check_decoded("tiny")

    def test_rows_decodes_to_committed_bytes(self):
        self.check_decoded("rows")

    def test_metadata_types(self):
        with tqm.open(vector("rows.tqm")) as m:
            md = m.metadata
            self.assertEqual(md["test.int"], -42)
            self.assertIsInstance(md["test.int"], int)
            self.assertEqual(md["test.float"], 0.125)
            self.assertIsInstance(md["test.bytes"], bytes)
            self.assertEqual(len(md["test.bytes"]), 3)
            self.assertEqual(md["tqm.granularity"], "row")
            self.assertEqual(list(md)[0], "test.int")  # file order

    def test_tensor_info(self):
        with tqm.open(vector("rows.tqm")) as m:
            self.assertEqual(m.names, ["a.weight", "model.layers.2.b.weight"])
            a = m.info("a.weight")
            self.assertEqual(a.shape, (3, 5))
            self.assertEqual(a.storage, "u8/row")
            self.assertEqual(a.source_dtype, "f32")
            self.assertIsNone(a.layer)
            self.assertEqual(a.affine.shape, (3, 2))
            b = m.info("model.layers.2.b.weight")
            self.assertEqual(b.layer, 2)
            self.assertEqual(m.num_layers, 3)
            self.assertEqual(len(m), 2)
            self.assertIn("a.weight", m)
            self.assertNotIn("nope", m)

    def test_dequantized_is_the_affine_formula(self):
        with tqm.open(vector("rows.tqm")) as m:
            for t in m.tensors:
                q = m.tensor(t.name, dequantize=False).reshape(t.shape[0], -1)
                f = m.tensor(t.name).reshape(t.shape[0], -1)
                scale = t.affine[:, 0:1]
                zero = t.affine[:, 1:2]
                np.testing.assert_array_equal(f, scale * (q.astype(np.float32) - zero))
                np.testing.assert_array_equal(m[t.name].reshape(f.shape), f)

    def test_layers_through_the_loader(self):
        for dequantize_in_loader in (False, True):
            with tqm.open(vector("rows.tqm"), dequantize=dequantize_in_loader, threads=2) as m:
                l2 = m.layer(2)
                self.assertEqual(list(l2), ["model.layers.2.b.weight"])
                np.testing.assert_array_equal(l2["model.layers.2.b.weight"], m.tensor("model.layers.2.b.weight"))
                # The per-call flag wins over the loader's: codes either way.
                codes = m.layer(2, dequantize=False)["model.layers.2.b.weight"]
                self.assertEqual(codes.dtype, np.uint8)
                np.testing.assert_array_equal(codes, m.tensor("model.layers.2.b.weight", dequantize=False))
                none = m.layer(None)
                self.assertEqual(list(none), ["a.weight"])
                with self.assertRaises(tqm.TqmError) as e:
                    m.layer(1)
                self.assertEqual(e.exception.status, "TQM_NOT_FOUND")

    def test_tiny_float_tensor(self):
        with tqm.open(vector("tiny.tqm")) as m:
            norm = m.tensor("model.norm.weight")
            self.assertEqual(norm.dtype, np.float32)
            self.assertEqual(norm.shape, (8,))
            self.assertEqual(m.info("model.norm.weight").affine.shape, (0, 2))
            self.assertEqual(m.metadata["general.architecture"], "llama")


class Errors(unittest.TestCase):
    def test_missing_file(self):
        with self.assertRaises(tqm.TqmError) as e:
            tqm.open("/nonexistent/x.tqm")
        self.assertEqual(e.exception.code, 2)
        self.assertEqual(e.exception.status, "TQM_NOT_FOUND")
        self.assertIn("/nonexistent/x.tqm", str(e.exception))

    def test_corrupt_file(self):
        data = bytearray(read(vector("tiny.tqm")))
        data[1] ^= 0x20
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "bad.tqm")
            with open(p, "wb") as f:
                f.write(data)
            with self.assertRaises(tqm.TqmError) as e:
                tqm.open(p)
            self.assertEqual(e.exception.status, "TQM_DATA_LOSS")
            # A flipped data byte opens (the index is intact) but fails verify/decode.
            data[1] ^= 0x20
            data[258] ^= 0x01
            with open(p, "wb") as f:
                f.write(data)
            with tqm.open(p) as m:
                with self.assertRaises(tqm.TqmError) as e:
                    m.verify()
                self.assertEqual(e.exception.code, 3)

    def test_unknown_tensor_and_closed_file(self):
        m = tqm.open(vector("tiny.tqm"))
        with self.assertRaises(KeyError):
            m.tensor("nope")
        m.close()
        m.close()
        with self.assertRaises(ValueError):
            m.metadata
        self.assertIn("closed", repr(m))

    def test_version(self):
        self.assertTrue(tqm.version())
        self.assertTrue(os.path.exists(tqm.library_path()))


FORMAT13 = os.path.join(SOURCE, "tests", "c", "format13.tqm")
RAW_NUMPY = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bit patterns: numpy has no bfloat16
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("bool"),
}


class Format13(unittest.TestCase):
    """tests/c/format13.tqm: the formulas are in export_test's Format13Vector."""

    def setUp(self):
        self.m = tqm.open(FORMAT13)

    def tearDown(self):
        self.m.close()

    def test_raw_tensors_in_their_own_dtype_bit_exact(self):
        for name, dtype in RAW_NUMPY.items():
            arr = self.m.tensor("raw." + name)
            info = self.m.info("raw." + name)
            self.assertEqual(info.storage, "raw")
            self.assertEqual(info.source_dtype, name.lower())
            self.assertEqual((info.bits, info.group_size, len(info.affine)), (0, 0, 0))
            self.assertEqual(arr.dtype, dtype, name)
            self.assertEqual(arr.shape, (2, 3), name)
            k = np.arange(6 * dtype.itemsize)
            want = (k % 2 if name == "BOOL" else (29 * k + 7) % 256).astype(np.uint8)
            self.assertEqual(arr.tobytes(), want.tobytes(), name)
            # dequantize=False changes nothing for verbatim tensors.
            self.assertEqual(self.m.tensor("raw." + name, dequantize=False).tobytes(), want.tobytes())
        bf = self.m.tensor("raw.BF16")
        np.testing.assert_array_equal(
            tqm.bfloat16_to_float32(bf).view(np.uint32), bf.astype(np.uint32) << 16
        )

    def test_zero_dimensional_and_empty(self):
        s = self.m.tensor("raw.scalar")
        self.assertEqual((s.shape, s.dtype, int(s)), ((), np.dtype("<i4"), 42))
        f = self.m.tensor("f32.scalar")
        self.assertEqual((f.shape, f.dtype, float(f)), ((), np.float32, 2.5))
        e = self.m.tensor("raw.empty")
        self.assertEqual((e.shape, e.dtype, e.size), ((3, 0), np.dtype("<i8"), 0))
        e = self.m.tensor("f32.empty")
        self.assertEqual((e.shape, e.dtype), ((0, 4), np.float32))

    def test_group_codes_and_parameters(self):
        q = self.m.quantized("group")
        e = np.arange(40)
        np.testing.assert_array_equal(q.codes, ((7 * e) % 16).astype(np.uint8).reshape(2, 20))
        self.assertEqual((q.bits, q.group_size), (4, 8))
        self.assertEqual(q.scale.shape, (2, 3))
        g = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(q.scale, 0.5 * (g + 1))
        np.testing.assert_array_equal(q.zero, g)
        # Dequantized: element e uses pair (row, column // 8).
        row, col = np.divmod(e, 20)
        group = row * 3 + col // 8
        want = (0.5 * (group + 1)).astype(np.float32) * (q.codes.reshape(-1).astype(np.float32) - group)
        np.testing.assert_array_equal(self.m.tensor("group"), want.reshape(2, 20))
        with self.assertRaises(tqm.TqmError) as cm:
            self.m.quantized("raw.I64")
        self.assertEqual(cm.exception.status, "TQM_FAILED_PRECONDITION")

    def test_loader_views_match_tensors(self):
        for dequantize in (True, False):
            layer = self.m.layer(None, dequantize=dequantize)
            self.assertEqual(set(layer), set(self.m.names))
            for name, arr in layer.items():
                want = self.m.tensor(name, dequantize=dequantize)
                self.assertEqual((arr.dtype, arr.shape), (want.dtype, want.shape), name)
                self.assertEqual(arr.tobytes(), want.tobytes(), name)


def read_llama2c(path):
    """stories260K.bin read with numpy alone: {hf name: float32 array}."""
    raw = read(path)
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = np.frombuffer(raw[:28], dtype="<i4")
    w = np.frombuffer(raw[28:], dtype="<f4")
    head = dim // heads
    kv = kv_heads * head
    out, pos = {}, 0

    def take(n, shape):
        nonlocal pos
        a = w[pos : pos + n].reshape(shape)
        pos += n
        return a

    out["model.embed_tokens.weight"] = take(abs(vocab) * dim, (abs(vocab), dim))
    fields = [
        ("input_layernorm", (dim,)),
        ("self_attn.q_proj", (dim, dim)),
        ("self_attn.k_proj", (kv, dim)),
        ("self_attn.v_proj", (kv, dim)),
        ("self_attn.o_proj", (dim, dim)),
        ("post_attention_layernorm", (dim,)),
        ("mlp.gate_proj", (hidden, dim)),
        ("mlp.down_proj", (dim, hidden)),
        ("mlp.up_proj", (hidden, dim)),
    ]
    for field, shape in fields:
        for l in range(layers):
            out["model.layers.%d.%s.weight" % (l, field)] = take(int(np.prod(shape)), shape)
    out["model.norm.weight"] = take(dim, (dim,))
    return out


@unittest.skipUnless(
    os.path.exists(STORIES) and os.path.exists(os.path.join(BIN, "tqm-pack")),
    "needs ../shared/models/stories260K and a built tqm-pack",
)
class Stories260K(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls.dir.name, "stories260K.tqm")
        cmd = [os.path.join(BIN, "tqm-pack"), "-q", STORIES, "-o", cls.path]
        if os.path.exists(TOK512):
            cmd += ["--tokenizer", TOK512]
        subprocess.run(cmd, check=True)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def test_values_within_half_a_step_of_the_checkpoint(self):
        ref = read_llama2c(STORIES)
        with tqm.open(self.path) as m:
            md = m.metadata
            self.assertEqual(md["llama.dim"], 64)
            self.assertEqual(md["llama.n_layers"], 5)
            if os.path.exists(TOK512):
                self.assertEqual(md["tokenizer.llama2c"], read(TOK512))
            self.assertEqual(sorted(m.names), sorted(ref))
            for t in m.tensors:
                got = m.tensor(t.name)
                want = ref[t.name]
                self.assertEqual(got.shape, want.shape, t.name)
                if t.storage == "f32":
                    np.testing.assert_array_equal(got, want)
                else:
                    half = float(t.affine[:, 0].max()) / 2
                    self.assertLessEqual(float(np.abs(got - want).max()), half * 1.0001 + 1e-12, t.name)

    def test_layers_match_tensors(self):
        with tqm.open(self.path, threads=2, budget_bytes=1 << 20, prefetch=1) as m:
            self.assertEqual(m.num_layers, 5)
            for l in range(m.num_layers):
                layer = m.layer(l)
                self.assertEqual(len(layer), 9)
                for name, arr in layer.items():
                    np.testing.assert_array_equal(arr, m.tensor(name))
            self.assertEqual(set(m.layer(None)), {"model.embed_tokens.weight", "model.norm.weight"})


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
