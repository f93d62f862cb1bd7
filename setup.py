"""Build hook of the `imlkit` wheel (everything else is declared in pyproject.toml): the
bench package is installed without its pytest suites, bench/test_*.py and bench/conftest.py,
which run from a checkout only (`pytest bench/`). setuptools has no setting that leaves
modules of a package out, hence this subclass."""
from setuptools import setup
from setuptools.command.build_py import build_py


def is_test_module(module: str) -> bool:
    return module.startswith("test_") or module == "conftest"


class BuildPyWithoutTests(build_py):
    def find_package_modules(self, package, package_dir):
        return [entry for entry in super().find_package_modules(package, package_dir)
                if not is_test_module(entry[1])]


setup(cmdclass={"build_py": BuildPyWithoutTests})
