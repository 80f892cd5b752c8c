#!/usr/bin/env python3
# Compares what the quantized tensors of .tqm files cost with the order-0
# bound of their codes (each tensor its own distribution), both with the
# tensors' scale/zero parameters (8 bytes a pair) added.
# Usage: TQM_LIB=build/lib/libtqm_c.so python3 scripts/code_entropy.py FILE.tqm...
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'python'))
import tqm

inspect = os.environ.get('TQM_INSPECT', 'build/bin/tqm-inspect')
for path in sys.argv[1:]:
    rep = json.loads(subprocess.run([inspect, '--json', path], capture_output=True,
                                    text=True, check=True).stdout)
    enc = {t['name']: t['encoded_bytes'] for t in rep['tensors']}
    bound = coded = params = 0.0
    worst, worst_name = 0.0, ''
    with tqm.open(path) as f:
        for name in f.names:
            if not f.info(name).storage.startswith('u8'):
                continue
            q = f.quantized(name)
            codes = np.asarray(q.codes).ravel()
            cnt = np.bincount(codes, minlength=256).astype(float)
            p = cnt[cnt > 0] / codes.size
            h = -(p * np.log2(p)).sum() * codes.size / 8
            par = 8 * np.asarray(q.scale).size
            bound += h
            coded += enc[name]
            params += par
            r = (enc[name] + par) / (h + par)
            if r > worst:
                worst, worst_name = r, name
    print(f'{path}: {os.path.getsize(path)} bytes; quantized tensors: chunks {coded:.0f} + '
          f'parameters {params:.0f} bytes against the order-0 bound {bound:.0f} + {params:.0f}: '
          f'{(coded + params) / (bound + params):.4f}x (worst tensor {worst:.4f}x, {worst_name})')
