"""Builds the tqm Python package (pure Python over libtqm_c via ctypes).

The C library is bundled into the package when one is found:
  TQM_C_LIBRARY=/path/to/libtqm_c.so[.X.Y]  that file (symlinks resolved);
  TQM_C_LIBRARY=""                           nothing bundled;
  unset                                      ../build/lib/libtqm_c.so of the
                                             source tree, when it exists.
TQM_LIBDIR (default: the install libdir of ../build's CMake cache, e.g.
/usr/local/lib) is recorded in tqm/_build_config.py as the directory of an
installed libtqm_c (`cmake --install build`), searched when no library is
bundled. At run time TQM_LIB overrides both.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


def c_library():
    env = os.environ.get("TQM_C_LIBRARY")
    if env is not None:
        if not env:
            return None
        if not os.path.isfile(env):
            raise SystemExit("TQM_C_LIBRARY=%s: no such file" % env)
        return os.path.realpath(env)
    candidate = os.path.join(HERE, "..", "build", "lib", "libtqm_c.so")
    return os.path.realpath(candidate) if os.path.isfile(candidate) else None


def recorded_libdirs():
    """TQM_LIBDIR, else the install library directory of the source tree's
    CMake build (CMAKE_INSTALL_PREFIX/CMAKE_INSTALL_LIBDIR of
    ../build/CMakeCache.txt), where `cmake --install build` puts libtqm_c."""
    env = os.environ.get("TQM_LIBDIR")
    if env is not None:
        return [d for d in env.split(os.pathsep) if d]
    cache = os.path.join(HERE, "..", "build", "CMakeCache.txt")
    values = {}
    if os.path.isfile(cache):
        with open(cache) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                values[key.split(":")[0]] = value
    prefix = values.get("CMAKE_INSTALL_PREFIX")
    if not prefix:
        return []
    libdir = values.get("CMAKE_INSTALL_LIBDIR") or "lib"
    return [os.path.join(prefix, libdir)]


LIBRARY = c_library()


class BuildPy(build_py):
    """Copies the C library into the package and records TQM_LIBDIR."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "tqm")
        os.makedirs(target, exist_ok=True)
        if LIBRARY:
            shutil.copyfile(LIBRARY, os.path.join(target, "libtqm_c.so"))
        libdirs = recorded_libdirs()
        with open(os.path.join(target, "_build_config.py"), "w") as f:
            f.write('"""Written by setup.py when the package was built."""\n')
            f.write("LIBDIRS = %r\n" % (libdirs,))
            f.write("BUNDLED = %r\n" % (os.path.basename(LIBRARY) if LIBRARY else None,))


class BinaryDistribution(Distribution):
    """A bundled shared object makes the wheel platform-specific."""

    def has_ext_modules(self):
        return LIBRARY is not None


setup(
    name="tqm",
    version="0.1.0",
    description="Read and write compressed, memory-mapped .tqm model files (numpy, torch)",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="see the tqm source tree",
    packages=["tqm"],
    python_requires=">=3.8",
    install_requires=["numpy"],
    extras_require={"torch": ["torch"]},
    cmdclass={"build_py": BuildPy},
    distclass=BinaryDistribution,
    zip_safe=False,
)
