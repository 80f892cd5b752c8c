#!/usr/bin/env python3
"""Load a .tqm file into numpy arrays (and torch tensors when torch is installed).

    PYTHONPATH=python python3 examples/python/load_numpy.py stories260K.tqm

Without an argument it opens the golden vector spec/vectors/rows.tqm. The
binding finds libtqm_c.so through TQM_LIB or the source tree's build/lib.
Needs Debian's python3-numpy; torch (python3-torch) is optional.
"""

import os
import sys

try:
    import numpy as np
except ImportError:  # a python3 without numpy first on PATH: try Debian's
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != "/usr/bin/python3":
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
import tqm  # noqa: E402


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "spec", "vectors", "rows.tqm")
    with tqm.open(path, threads=0) as m:
        print("%s: %d tensors, %d layers" % (path, len(m), m.num_layers))
        for key, value in m.metadata.items():
            shown = "<%d bytes>" % len(value) if isinstance(value, bytes) else repr(value)
            print("  %-28s %s" % (key, shown))

        # One tensor, dequantized to float32 (the default) and as raw uint8 codes.
        info = next((t for t in m.tensors if t.storage != "f32"), m.tensors[0])
        w = m.tensor(info.name)
        print("\n%s %s storage=%s source=%s" % (info.name, w.shape, info.storage, info.source_dtype))
        print("  float32: mean %.6f std %.6f min %.6f max %.6f" % (w.mean(), w.std(), w.min(), w.max()))
        if info.storage != "f32":
            q = m.tensor(info.name, dequantize=False)
            scale, zero = info.affine[0]
            print("  uint8 codes %s, first affine pair scale=%g zero=%g" % (q.dtype, scale, zero))

        # Whole layers through the lazy loader: {name: array}.
        state = {}
        for layer in [None] + list(range(m.num_layers)):
            try:
                state.update(m.layer(layer))
            except tqm.TqmError as e:
                if e.status != "TQM_NOT_FOUND":  # layer numbers without tensors are fine
                    raise
        total = sum(a.size for a in state.values())
        print("\nloaded %d tensors, %d weights, %.1f KiB as float32" % (len(state), total, total * 4 / 1024))

    try:
        import torch
    except ImportError:
        print("torch is not installed (Debian: python3-torch): skipping the torch example")
        return
    tensors = {name: torch.from_numpy(a) for name, a in state.items()}
    name, t = next(iter(tensors.items()))
    print("torch: %d tensors; %s %s %s" % (len(tensors), name, tuple(t.shape), t.dtype))


if __name__ == "__main__":
    main()
