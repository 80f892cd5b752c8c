"""The install flow of python/README.md, end to end (run by ctest as py_install):

  1. a fresh venv (--system-site-packages, for Debian's numpy and torch) in a
     temporary directory; `pip install --no-build-isolation --no-index` of a
     copy of python/ with TQM_C_LIBRARY naming the built libtqm_c; then, from
     outside the source tree, without TQM_LIB and without PYTHONPATH,
     `import tqm` must load the bundled library and open a .tqm file;
  2. the same with nothing bundled (TQM_C_LIBRARY="") and TQM_LIBDIR naming a
     directory that holds only the versioned libtqm_c.so.X.Y, as an installed
     prefix does: the library recorded at build time is found;
  3. TQM_LIB still overrides.

    python3 tests/python/install_venv.py build/lib/libtqm_c.so

Exit status 0: pass; 77: skipped (no venv module); anything else: failure.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))
VECTOR = os.path.join(SOURCE, "spec", "vectors", "rows.tqm")

# Run by the venv's python, from the temporary directory.
CHECK = r"""
import os, sys
import numpy as np
import tqm, tqm.numpy
want_lib = sys.argv[1]
prefix = os.path.realpath(sys.prefix)
assert os.path.realpath(tqm.__file__).startswith(prefix + os.sep), (tqm.__file__, prefix)
assert os.path.realpath(tqm.library_path()) == os.path.realpath(want_lib), (tqm.library_path(), want_lib)
with tqm.safe_open(sys.argv[2]) as f:
    assert f.keys() == ["a.weight", "model.layers.2.b.weight"], f.keys()
    assert f.get_tensor("a.weight").shape == (3, 5)
d = {"w": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8), "ids": np.arange(5)}
tqm.numpy.save_file(d, "roundtrip.tqm", metadata={"k": "v"})
back = tqm.numpy.load_file("roundtrip.tqm")
assert back["ids"].tobytes() == d["ids"].tobytes()
assert np.abs(back["w"] - d["w"]).max() < 0.01
print("ok: tqm %s from %s, library %s" % (tqm.version(), tqm.__file__, tqm.library_path()))
"""


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TQM_LIB", "PYTHONPATH", "PYTHONHOME", "TQM_C_LIBRARY", "TQM_LIBDIR")
           and not k.startswith("PIP_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    print(r.stdout, flush=True)
    if r.returncode != 0:
        raise SystemExit("failed (%d): %s" % (r.returncode, " ".join(cmd)))
    return r.stdout


def install(tmp, name, python, env):
    """A fresh venv tmp/name with a copy of python/ pip-installed into it."""
    venv = os.path.join(tmp, name)
    run([python, "-m", "venv", "--system-site-packages", venv], env=clean_env())
    src = os.path.join(tmp, name + "-src")
    shutil.copytree(os.path.join(SOURCE, "python"), src,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__",
                                                  "libtqm_c.so*", "_build_config.py"))
    vpy = os.path.join(venv, "bin", "python")
    run([vpy, "-m", "pip", "install", "--no-build-isolation", "--no-index", src], env=env, cwd=tmp)
    return vpy


def main():
    if len(sys.argv) != 2 or not os.path.isfile(sys.argv[1]):
        raise SystemExit("usage: install_venv.py LIBTQM_C")
    lib = os.path.realpath(sys.argv[1])
    try:
        import ensurepip  # noqa: F401  (python3-venv)
        import venv  # noqa: F401
    except ImportError as e:
        print("SKIP: no venv/ensurepip (Debian: python3-venv): %s" % e)
        return 77
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        # 1. Bundled.
        vpy = install(tmp, "bundled", python, clean_env(TQM_C_LIBRARY=lib))
        site = run([vpy, "-c", "import tqm, os; print(os.path.dirname(tqm.__file__))"],
                   env=clean_env(), cwd=tmp).strip().splitlines()[-1]
        bundled = os.path.join(site, "libtqm_c.so")
        if not os.path.isfile(bundled):
            raise SystemExit("no library bundled at %s" % bundled)
        run([vpy, "-c", CHECK, bundled, VECTOR], env=clean_env(), cwd=tmp)
        # 3. TQM_LIB overrides the bundled copy.
        run([vpy, "-c", CHECK, lib, VECTOR], env=clean_env(TQM_LIB=lib), cwd=tmp)

        # 2. Nothing bundled; an installed prefix recorded at build time.
        libdir = os.path.join(tmp, "prefix", "lib")
        os.makedirs(libdir)
        versioned = os.path.join(libdir, "libtqm_c.so.0.1")
        shutil.copyfile(lib, versioned)
        vpy = install(tmp, "prefix", python, clean_env(TQM_C_LIBRARY="", TQM_LIBDIR=libdir))
        run([vpy, "-c", CHECK, versioned, VECTOR], env=clean_env(), cwd=tmp)
    print("install_venv: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
