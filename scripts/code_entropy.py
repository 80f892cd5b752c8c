#!/usr/bin/env python3
# Compares the encoded bytes of the quantized tensors of a .tqm file with the
# order-0 bound of their codes (each tensor its own distribution).
# Usage: TQM_LIB=build/lib/libtqm_c.so python3 scripts/code_entropy.py FILE.tqm
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'python'))
import tqm
path = sys.argv[1]
rep = json.loads(subprocess.run([os.environ.get('TQM_INSPECT', 'build/bin/tqm-inspect'), '--json', path], capture_output=True, text=True).stdout)
enc = {t['name']: t['encoded_bytes'] for t in rep['tensors']}
tot_bound = tot_enc = 0
with tqm.open(path) as f:
    for name in f.names:
        info = f.info(name)
        if not info.storage.startswith("u8"): continue
        q = f.quantized(name)
        codes = np.asarray(q.codes).ravel()
        cnt = np.bincount(codes, minlength=256).astype(float)
        p = cnt[cnt > 0] / codes.size
        h = -(p * np.log2(p)).sum() * codes.size / 8
        tot_bound += h; tot_enc += enc[name]
print(f"{path}: encoded {tot_enc} bytes, order-0 bound of the codes {tot_bound:.0f} bytes, ratio {tot_enc/tot_bound:.4f}")
