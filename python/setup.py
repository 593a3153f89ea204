"""pip install --no-build-isolation ./python  (after `make python`): installs the palm
package with the extension CMake built (PALM_BUILD_DIR, default ../build). Debian's
python3 is externally managed: install into a venv (python3 -m venv --system-site-packages)."""
import glob
import os
import shutil

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("PALM_BUILD_DIR", os.path.join(HERE, "..", "build"))


class BuildWithExtension(build_py):
    """The pure-Python files, plus the extension `make python` built."""

    def run(self):
        super().run()
        built = glob.glob(os.path.join(BUILD, "python", "palm", "_palm*.so"))
        if not built:
            raise SystemExit(f"palm: no extension in {BUILD}/python/palm: run `make python` first "
                             "(or set PALM_BUILD_DIR to the CMake build directory)")
        dest = os.path.join(self.build_lib, "palm")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(built[0], dest)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):  # a platform wheel: it carries a compiled extension
        return True


setup(
    name="palm",
    version="0.1.0",
    description="PaLM-family language models: Python bindings of palm's C++ core",
    packages=["palm"],
    python_requires=">=3.9",
    install_requires=["numpy"],
    cmdclass={"build_py": BuildWithExtension},
    distclass=BinaryDistribution,
)
