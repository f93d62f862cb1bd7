"""The real TensorRT Python bindings on a machine without TensorRT: a test fixture module.

``tensorrt-cu12-bindings`` wheels (about 1.2 MB each, PyPI) hold only the pybind11 module; it
imports once ``libnvinfer``, ``libnvonnxparser`` and ``libnvinfer_plugin`` resolve. This
module downloads a version's wheel once into a cache folder (``IMLKIT_TRT_BINDINGS_CACHE``,
default ``~/.cache/imlkit/trt-bindings``), compiles stub libraries with ``cc`` under the
SONAMEs the module links against (``readelf -d``), exporting the C entry points it needs
(``nm -D --undefined-only``, less what the process already has), and runs a Python script
in a subprocess with ``LD_LIBRARY_PATH`` on the stubs, where ``import tensorrt_bindings``
gives the real module of that version. Nothing from the libraries can run there (a
factory returns null), but every class, enum and signature can be read.

``unavailable()`` says why a version cannot be had here (no network, no compiler), for a
skip; ``run_with_bindings()`` runs the script.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

#: The releases the kit is checked against: JetPack 6's 10.3, the last 10.x, 11.0 and 11.4.
VERSIONS = ("10.3.0", "10.16.1.11", "11.0.0.114", "11.4.0.106")
PACKAGE = "tensorrt-cu12-bindings"
TOOLS = ("cc", "nm", "readelf")
_SKIP_SYMBOLS = ("_ITM_", "__gmon_start__", "Py", "_Py")


def cache_root() -> Path:
    return Path(os.environ.get("IMLKIT_TRT_BINDINGS_CACHE") or Path.home() / ".cache" / "imlkit" / "trt-bindings")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _download(version: str, dest: Path) -> Path:
    wheels = sorted(dest.glob("*.whl"))
    if wheels:
        return wheels[0]
    dest.mkdir(parents=True, exist_ok=True)
    tag = f"{sys.version_info.major}{sys.version_info.minor}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--python-version", tag, "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "-d", str(dest), f"{PACKAGE}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise RuntimeError(f"needs the network (PyPI) to download {PACKAGE}=={version}: {last}")
    return wheels[0]


def _undefined_symbols(so: Path) -> list[str]:
    out = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=True).stdout
    here = ctypes.CDLL(None)
    names = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] != "U" or "@" in parts[1] or parts[1].startswith(_SKIP_SYMBOLS):
            continue
        if not hasattr(here, parts[1]):  # libc / libpthread / the interpreter provide the rest
            names.append(parts[1])
    return sorted(set(names))


def _needed_nv(so: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines()
            if "(NEEDED)" in line and "[libnv" in line]


def prepare(version: str) -> tuple[Path, Path]:
    """(folder holding ``tensorrt_bindings/``, folder of stub libraries) for ``version``;
    RuntimeError with the reason when it cannot be had."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"needs {', '.join(missing)} to build stub TensorRT libraries")
    root = cache_root() / version
    pkg, stubs = root / "site", root / "stubs"
    so = next(iter(sorted(pkg.glob("tensorrt_bindings/tensorrt*.so"))), None)
    if so is None:
        wheel = _download(version, root / "wheel")
        tmp = root / "site.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        shutil.rmtree(pkg, ignore_errors=True)
        tmp.rename(pkg)
        so = next(iter(sorted(pkg.glob("tensorrt_bindings/tensorrt*.so"))))
    needed = _needed_nv(so)
    if not all((stubs / lib).is_file() for lib in needed):
        stubs.mkdir(parents=True, exist_ok=True)
        source = stubs / "entry_points.c"
        source.write_text("/* stub TensorRT entry points: every factory returns NULL */\n" + "".join(
            f"void *{name}(void) {{ return 0; }}\n" for name in _undefined_symbols(so)))
        for lib in needed:
            subprocess.run(["cc", "-shared", "-fPIC", "-o", str(stubs / lib), f"-Wl,-soname,{lib}", str(source)],
                           check=True, capture_output=True)
    return pkg, stubs


def unavailable(version: str) -> str | None:
    try:
        prepare(version)
    except (RuntimeError, subprocess.SubprocessError, OSError) as err:
        return str(err)
    return None


def run_with_bindings(version: str, script: Path, *args: str, timeout: int = 300) -> dict:
    """Run ``script`` with the real bindings of ``version`` importable as ``tensorrt_bindings``;
    returns the JSON object the script prints last."""
    pkg, stubs = prepare(version)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(stubs), os.environ.get("LD_LIBRARY_PATH")])),
           "PYTHONPATH": os.pathsep.join([str(pkg), str(repo), str(repo / "tests")]), "OMP_NUM_THREADS": "1",
           "IMLKIT_TRT_EXPECT": version}
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=repo)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"{script.name} with TensorRT {version} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])
