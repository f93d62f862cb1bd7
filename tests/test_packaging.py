"""The two distributions, imlkit-runtime (runtime/pyproject.toml) and imlkit (pyproject.toml):
each GPU extra pins one CUDA major, the root's extras are the runtime's, the wheels carry
their data and no test files and never share a file, and every console script runs the
same ``main`` as its ``python -m`` form (same exit codes)."""
from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime"

#: onnxruntime-gpu releases on PyPI and the CUDA major they are built for, read from each
#: release's metadata (its `cuda` extra names nvidia-cuda-runtime-cu12~=12.0 up to 1.26,
#: nvidia-cuda-runtime(-cu13)~=13.0 from 1.27 on; 1.19/1.20 name none, 1.18 is CUDA 11.8).
ORT_GPU_CUDA = {"1.18.1": 11, "1.19.2": None, "1.20.2": None, "1.21.0": 12, "1.22.0": 12, "1.24.4": 12,
                "1.26.0": 12, "1.27.0": 13, "1.29.0": 13, "1.31.1": 13}


def pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


ROOT_PROJECT = pyproject(ROOT / "pyproject.toml")
RUNTIME_PROJECT = pyproject(RUNTIME / "pyproject.toml")


def runtime_extra(name: str) -> list[Requirement]:
    return [Requirement(r) for r in RUNTIME_PROJECT["project"]["optional-dependencies"][name]]


def resolved_extra(project: dict, name: str) -> list[Requirement]:
    """The requirements of ``project``'s extra ``name``, with imlkit-runtime[x] expanded."""
    out = []
    for text in project["project"]["optional-dependencies"][name]:
        req = Requirement(text)
        if req.name == "imlkit-runtime":
            for extra in sorted(req.extras):
                out.extend(runtime_extra(extra))
        else:
            out.append(req)
    return out


def cuda_majors(reqs: list[Requirement]) -> dict[str, int]:
    """The CUDA major each GPU requirement pins, by package; AssertionError where a pin
    admits more than one major (or none that is known)."""
    majors = {}
    for req in reqs:
        name = req.name.lower().replace("_", "-")
        if name.startswith("tensorrt"):
            assert name.startswith("tensorrt-cu") and name[len("tensorrt-cu"):].isdigit(), \
                f"{req}: the plain tensorrt package picks its CUDA major by version; name tensorrt-cuNN"
            majors[name] = int(name[len("tensorrt-cu"):])
        elif name in ("cuda-python", "cuda-bindings"):
            admitted = {major for major in range(11, 16)
                        if any(req.specifier.contains(f"{major}.{minor}") for minor in range(10))}
            assert len(admitted) == 1, f"{req}: admits CUDA majors {sorted(admitted)}"
            majors[name] = admitted.pop()
        elif name == "onnxruntime-gpu":
            admitted = {cuda for version, cuda in ORT_GPU_CUDA.items() if req.specifier.contains(version)}
            assert len(admitted) == 1 and None not in admitted, \
                f"{req}: admits releases built for CUDA {sorted(admitted, key=str)}"
            majors[name] = admitted.pop()
    return majors


def gpu_extras(project: dict) -> list[str]:
    return sorted(e for e in project["project"]["optional-dependencies"] if e.startswith("gpu"))


@pytest.mark.parametrize("where", ["runtime", "root"])
def test_each_gpu_extra_pins_one_cuda_major(where):
    project = RUNTIME_PROJECT if where == "runtime" else ROOT_PROJECT
    extras = gpu_extras(project)
    assert extras == ["gpu-cu12", "gpu-cu13"]
    for extra in extras:
        major = int(extra.removeprefix("gpu-cu"))
        majors = cuda_majors(resolved_extra(project, extra))
        assert set(majors) == {"onnxruntime-gpu", f"tensorrt-cu{major}", "cuda-python"}, (extra, majors)
        assert set(majors.values()) == {major}, (extra, majors)


@pytest.mark.parametrize("bad", [
    ["onnxruntime-gpu>=1.21", "tensorrt-cu12", "cuda-python>=12.8,<13"],   # 1.27+ is CUDA 13
    ["onnxruntime-gpu>=1.21,<1.27", "tensorrt>=10", "cuda-python>=12.8,<13"],  # plain tensorrt
    ["onnxruntime-gpu>=1.21,<1.27", "tensorrt-cu12", "cuda-python>=12"],  # 13 allowed
])
def test_the_pin_check_rejects_mixed_majors(bad):
    with pytest.raises(AssertionError):
        cuda_majors([Requirement(r) for r in bad])


def test_root_extras_are_the_runtimes_and_versions_agree():
    root, rt = ROOT_PROJECT["project"], RUNTIME_PROJECT["project"]
    assert f"imlkit-runtime=={rt['version']}" in root["dependencies"]
    # the kit's cpu extra brings OpenVINO too (the CPU benchmarks compare it); the GPU extras are the runtime's
    wanted = {"cpu": "imlkit-runtime[cpu,openvino]", "gpu-cu12": "imlkit-runtime[gpu-cu12]",
              "gpu-cu13": "imlkit-runtime[gpu-cu13]"}
    for extra, requirement in wanted.items():
        assert root["optional-dependencies"][extra] == [requirement]
        assert extra in rt["optional-dependencies"]
    assert [Requirement(r).name for r in rt["optional-dependencies"]["openvino"]] == ["openvino"]
    assert {Requirement(r).name for r in rt["dependencies"]} == {"numpy", "pillow", "jsonschema"}
    flavours = [{"extra": e} for e in ("cpu", "gpu-cu12", "gpu-cu13")]
    assert ROOT_PROJECT["tool"]["uv"]["conflicts"] == [flavours]
    assert RUNTIME_PROJECT["tool"]["uv"]["conflicts"] == [flavours]


def _source_copy(dest: Path) -> Path:
    """The checkout's files as a fresh clone has them (no build/, egg-info or caches)."""
    ignore = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.engine", "*.plan")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for folder in ("runtime", "train", "export", "bench", "engines"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    pytest.importorskip("setuptools", reason="building the wheels needs setuptools in this environment")
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheels")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(src / "runtime"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(found) == {"imlkit", "imlkit_runtime"}, sorted(found)
    return {name: zipfile.ZipFile(path) for name, path in found.items()}


def _files(wheel: zipfile.ZipFile) -> set[str]:
    return {n for n in wheel.namelist() if ".dist-info/" not in n}


def test_wheels_share_no_file_and_carry_data_but_no_tests(wheels):
    root, rt = _files(wheels["imlkit"]), _files(wheels["imlkit_runtime"])
    assert not root & rt
    assert all(n.startswith("runtime/") for n in rt)
    expected_rt = {f"runtime/{p.relative_to(RUNTIME).as_posix()}" for p in RUNTIME.rglob("*.py")
                   if "build" not in p.relative_to(RUNTIME).parts}
    # the modules and the sidecar's JSON Schema, nothing else (no pyproject.toml, no egg-info)
    assert rt == expected_rt | {"runtime/sidecar.schema.json"}
    assert not any(n.startswith("runtime/") for n in root)
    assert "engines/recipes.toml" in root
    tests = sorted(n for n in root if Path(n).name.startswith("test_") or Path(n).name == "conftest.py")
    assert not tests
    assert not any(n.startswith("tests/") for n in root)
    for package in ("train", "export", "bench"):  # every other module is there
        for p in (ROOT / package).rglob("*.py"):
            rel = p.relative_to(ROOT).as_posix()
            if not (p.name.startswith("test_") or p.name == "conftest.py"):
                assert rel in root, rel


def _scripts(wheel: zipfile.ZipFile) -> dict[str, str]:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    return dict(parser["console_scripts"])


def test_console_scripts_run_the_modules_main(wheels):
    scripts = {**_scripts(wheels["imlkit"]), **_scripts(wheels["imlkit_runtime"])}
    for required in ("iml-predict", "iml-export", "iml-train", "iml-evaluate", "iml-profile", "iml-check"):
        assert required in scripts
    cli_modules = set()
    for package in ("train", "export", "bench", "runtime"):
        for p in (ROOT / package).rglob("*.py"):
            if "build" in p.relative_to(ROOT / package).parts:  # what `pip install ./runtime` leaves there
                continue
            if 'if __name__ == "__main__"' in p.read_text(encoding="utf-8"):
                cli_modules.add(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__main__"))
    helpers = {"bench.memory"}  # the child process of bench's memory measurements
    assert {target.split(":")[0].removesuffix(".__main__") for target in scripts.values()} == cli_modules - helpers
    for name, target in scripts.items():
        module, func = target.split(":")
        assert func == "main", name
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        # the `python -m` form exits with main()'s return value, exactly what the script does
        assert guard and ast.unparse(guard[0].body[0]) == "sys.exit(main())", (name, path)


def _script(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.skip(f"console script {name} is not installed here (pip install -e ./runtime -e .)")
    return path


@pytest.mark.parametrize("case", ["ok", "usage", "missing_image"])
def test_iml_predict_exits_like_python_m(case, tmp_path):
    try:
        from test_runtime_fixtures import make_model, random_rgb
    except ImportError:  # tests/ used as a package
        from .test_runtime_fixtures import make_model, random_rgb
    from PIL import Image

    model = make_model(tmp_path)
    image = tmp_path / "a.png"
    Image.fromarray(random_rgb(20, 24)).save(image)
    args = {"ok": [model, image], "usage": [model, image, "--threshold", "x"],
            "missing_image": [model, tmp_path / "none.png"]}[case]
    runs = []
    for form, command in (("m", [sys.executable, "-m", "runtime.predict"]),
                          ("script", [sys.executable, str(_script("iml-predict"))])):
        out = tmp_path / f"out-{form}"
        r = subprocess.run([*command, *map(str, args), "--out", str(out)], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        runs.append((r.returncode, r.stderr.replace("iml-predict", "python -m runtime.predict")
                     .replace(str(out), "OUT")))
    assert runs[0][0] == {"ok": 0, "usage": 2, "missing_image": 2}[case], runs[0][1]
    assert runs[0][0] == runs[1][0]
    if case == "missing_image":
        assert runs[0][1] == runs[1][1] and runs[0][1].count("\n") == 1


@pytest.mark.parametrize("args, rc", [(["--help"], 0), (["missing.onnx"], None)])
def test_iml_check_exits_like_python_m(args, rc, tmp_path):
    codes = [subprocess.run(command + args, capture_output=True, text=True, timeout=120, cwd=tmp_path).returncode
             for command in ([sys.executable, "-m", "export.check"], [sys.executable, str(_script("iml-check"))])]
    assert codes[0] == codes[1]
    assert codes[0] == rc if rc is not None else codes[0] != 0
