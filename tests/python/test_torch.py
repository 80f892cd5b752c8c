"""Tests of tqm.torch (save_file / load_file) and safe_open(framework="pt").
Skipped, with a message, when torch is not installed (Debian: python3-torch;
scripts/install-deps.sh installs it).

Run by ctest with TQM_LIB and PYTHONPATH set; by hand:
  PYTHONPATH=python TQM_LIB=build/lib/libtqm_c.so python3 tests/python/test_torch.py
"""

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
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import tqm  # noqa: E402

try:
    import torch
    import tqm.numpy
    import tqm.torch
except ImportError:
    torch = None

NO_TORCH = "torch is not installed (Debian: python3-torch, scripts/install-deps.sh)"


def tensors():
    g = torch.Generator().manual_seed(5)
    d = {
        "model.layers.0.q.weight": torch.randn(32, 24, generator=g),
        "model.layers.0.k.weight": torch.randn(16, 24, generator=g).to(torch.float16),
        "model.layers.1.v.weight": torch.randn(16, 24, generator=g).to(torch.bfloat16),
        "bf16.kept": torch.randn(4, 6, generator=g).to(torch.bfloat16),
        "norm": torch.randn(24, generator=g),
        "f64": torch.randn(3, 3, generator=g, dtype=torch.float64),
        "i8": torch.randint(-128, 128, (5, 2), generator=g, dtype=torch.int8),
        "i16": torch.randint(-(2**15), 2**15, (5, 2), generator=g, dtype=torch.int16),
        "i32": torch.randint(-(2**31), 2**31, (5, 2), generator=g, dtype=torch.int32),
        "i64": torch.tensor([[-(2**63), 2**63 - 1], [0, 1]], dtype=torch.int64),
        "u8": torch.randint(0, 256, (7,), generator=g, dtype=torch.uint8),
        "bool": torch.tensor([[True, False, True]]),
        "scalar": torch.tensor(7, dtype=torch.int32),
        "scalar.f32": torch.tensor(-1.5),
        "empty": torch.zeros(0, 3),
        "empty.i64": torch.zeros(2, 0, dtype=torch.int64),
        "transposed": torch.arange(12, dtype=torch.int64).reshape(3, 4).t(),
        "param": torch.nn.Parameter(torch.randn(8, 8, generator=g)),
    }
    return d


@unittest.skipIf(torch is None, NO_TORCH)
class TorchRoundTrip(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "t.tqm")

    def tearDown(self):
        self.dir.cleanup()

    def test_mixed_dtypes(self):
        d = tensors()
        stats = tqm.torch.save_file(d, self.path, metadata={"framework": "pt"}, granularity="row",
                                    keep=["bf16.kept"])
        self.assertEqual(stats.tensors, len(d))
        back = tqm.torch.load_file(self.path)
        self.assertEqual(list(back), list(d))
        with tqm.safe_open(self.path, framework="np") as f:
            for name, want in d.items():
                got = back[name]
                self.assertIsInstance(got, torch.Tensor, name)
                self.assertEqual(tuple(got.shape), tuple(want.shape), name)
                info = f.file.info(name)
                want = want.detach()
                if info.storage == "raw" or (info.storage == "f32" and want.dtype == torch.float32):
                    # Verbatim: same dtype, same bits.
                    self.assertEqual(got.dtype, want.dtype, name)
                    self.assertTrue(torch.equal(got, want), name)
                    if want.dtype == torch.bfloat16:
                        self.assertTrue(torch.equal(got.view(torch.int16), want.view(torch.int16)))
                else:
                    self.assertEqual(got.dtype, torch.float32, name)
                    q = f.quantized(name)
                    half = torch.from_numpy(q.scale).reshape(-1, *([1] * (want.dim() - 1))) / 2
                    err = (got.double() - want.double()).abs()
                    self.assertTrue(bool((err <= half.double() * (1 + 1e-5) + 1e-12).all()), name)
            self.assertEqual(f.file.info("model.layers.1.v.weight").source_dtype, "bf16")
            self.assertEqual(f.file.info("model.layers.1.v.weight").storage, "u8/row")
            self.assertEqual(f.file.info("bf16.kept").storage, "raw")
            self.assertEqual(f.metadata()["framework"], "pt")

    def test_safe_open_pt_and_slices(self):
        w = torch.randn(300, 40)
        tqm.torch.save_file({"w": w, "ids": torch.arange(30).reshape(10, 3)}, self.path, chunk_size=1024)
        with tqm.safe_open(self.path, framework="pt", device="cpu") as f:
            full = f.get_tensor("w")
            self.assertIsInstance(full, torch.Tensor)
            self.assertEqual(full.dtype, torch.float32)
            for key in (slice(5, 9), (slice(None), slice(2, 6)), 17, (slice(None, None, 7), 3)):
                got = f.get_slice("w")[key]
                self.assertIsInstance(got, torch.Tensor)
                self.assertTrue(torch.equal(got, full[key]), key)
            before = f.file.chunks_decoded
            f.get_slice("w")[100:102]
            self.assertLess(f.file.chunks_decoded - before, len(f.file.chunks("w")))
            ids = f.get_slice("ids")[2:4]
            self.assertEqual(ids.dtype, torch.int64)
            self.assertTrue(torch.equal(ids, torch.arange(30).reshape(10, 3)[2:4]))

    def test_unsupported_tensors(self):
        with self.assertRaises(TypeError) as cm:
            tqm.torch.save_file({"c": torch.zeros(2, dtype=torch.complex64)}, self.path)
        self.assertIsInstance(cm.exception, tqm.TqmError)
        with self.assertRaises(TypeError):
            tqm.torch.save_file({"n": np.zeros(2)}, self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_unsigned_wider_than_torch_has(self):
        tqm.numpy.save_file({"u16": np.array([0, 65535], np.uint16), "u32": np.array([2**32 - 1], np.uint32)},
                            self.path)
        back = tqm.torch.load_file(self.path)
        self.assertEqual(back["u16"].tolist(), [0, 65535])
        self.assertEqual(back["u32"].tolist(), [2**32 - 1])


if __name__ == "__main__":
    if torch is None:
        print("SKIP: " + NO_TORCH)
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
