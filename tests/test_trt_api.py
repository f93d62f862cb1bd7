"""Our TensorRT code against the real TensorRT Python bindings of 10.3 (JetPack 6), 10.16,
11.0 and 11.4, without a GPU: ``tests/trt_bindings.py`` downloads each version's
``tensorrt-cu12-bindings`` wheel once (cache: ``IMLKIT_TRT_BINDINGS_CACHE``) and builds stub
libraries so the real module imports; ``tests/trt_api_check.py`` then runs the builder
(``export.tensorrt``, every precision path of that version), the runtime backend that
verifies each engine, the timing-cache and parse-failure paths and ``--adopt`` with that
module as the spec (``tests/trt_spec.py``): every TensorRT name, enum member, property and
signature those paths touch must exist in that version, with the arguments' types. The
list of what is checked is what the code touches, not a hand list. Without the network the
tests skip with that reason."""
from functools import lru_cache
from pathlib import Path

import pytest

try:
    import trt_bindings
except ImportError:  # tests/ used as a package
    from . import trt_bindings

pytestmark = pytest.mark.trt_api
CHECK = Path(__file__).with_name("trt_api_check.py")


@lru_cache(maxsize=None)
def checked(version: str) -> dict:
    why = trt_bindings.unavailable(version)
    if why:
        pytest.skip(f"TensorRT {version} bindings: {why}")
    return trt_bindings.run_with_bindings(version, CHECK)


def _ok(results: dict, label: str) -> dict:
    value = results[label]
    assert "error" not in value, f"{label}: {value['error']}\n{value.get('trace', '')}"
    return value


@pytest.mark.parametrize("version", trt_bindings.VERSIONS)
def test_our_tensorrt_code_matches_the_real_bindings(version):
    report = checked(version)
    assert report["version"] == version
    results, used = report["results"], set(report["used"])
    major = int(version.split(".")[0])
    builds = ["fp32", "int8", "fp16-strongly-typed", "no-timing-cache"] + (["fp16-weak-islands"] if major == 10 else [])
    for label in builds:
        res = _ok(results, label)
        assert res["parity_passed"], (label, res)  # the backend's buffers carried the reference outputs
    # the version's code path: builder flags and layer constraints only under 10.x weak typing
    if major == 10:
        assert _ok(results, "fp16-weak-islands")["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
        assert _ok(results, "int8")["flags"] == ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]
        assert _ok(results, "int8")["fp32_layers"] == 2 and not results["fp32"]["strongly_typed"]
        assert {"IBuilderConfig.set_flag", "BuilderFlag.FP16", "BuilderFlag.INT8",
                "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "ILayer.precision=", "ILayer.set_output_type"} <= used
        assert _ok(results, "layer-precision-constraints")["constrained"] == 2
    else:
        for label in builds:
            assert results[label]["strongly_typed"] and results[label]["flags"] == [], label
        assert "IBuilderConfig.set_flag" not in used and "ILayer.set_output_type" not in used
        # what 11.x must never reach: its layers have no precision to constrain
        assert "precision" in results["layer-precision-constraints"]["error"]
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in used
    # timing cache, profiles, serialization, execution, tensor API, parser, inspector
    assert {"IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache",
            "ITimingCache.serialize", "Builder.create_optimization_profile", "IOptimizationProfile.set_shape",
            "IBuilderConfig.add_optimization_profile", "IBuilderConfig.set_memory_pool_limit",
            "MemoryPoolType.WORKSPACE", "IBuilderConfig.builder_optimization_level=",
            "IBuilderConfig.profiling_verbosity=", "Builder.build_serialized_network", "IHostMemory.__bytes__",
            "OnnxParser.parse_from_file", "OnnxParser.get_error", "ParserError.desc",
            "Runtime.deserialize_cuda_engine", "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name",
            "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_profile_shape",
            "ICudaEngine.get_tensor_dtype", "ICudaEngine.create_execution_context", "IExecutionContext.set_input_shape",
            "IExecutionContext.set_tensor_address", "IExecutionContext.get_tensor_shape",
            "IExecutionContext.execute_async_v3", "ICudaEngine.create_engine_inspector",
            "EngineInspector.get_engine_information", "tensorrt.nptype", "TensorIOMode.INPUT"} <= used


@pytest.mark.parametrize("version", trt_bindings.VERSIONS)
def test_timing_cache_none_parse_errors_and_adopt(version):
    results = checked(version)["results"]
    res = _ok(results, "no-timing-cache")
    assert not res["timing_cache_written"] and any("without one" in n for n in res["notes"])
    assert _ok(results, "fp32")["timing_cache_written"]
    msg = _ok(results, "parse-failure")["message"]
    assert "cannot parse" in msg and "node_of_logit" in msg and "\n" not in msg
    adopted = _ok(results, "adopt")
    assert adopted["version"] == version and adopted["precision"] == "fp16" and adopted["loads"] == "tensorrt"


@pytest.mark.parametrize("version", trt_bindings.VERSIONS)
def test_the_spec_refuses_what_the_bindings_lack(version):
    refused = _ok(checked(version)["results"], "misuse-probes")
    assert refused and all(refused.values()), refused


def test_without_the_network_the_reason_is_given(tmp_path, monkeypatch):
    """No index reachable (pip told to use none): the fixture gives the reason for the skip
    and caches nothing half-made under IMLKIT_TRT_BINDINGS_CACHE."""
    if trt_bindings.missing_tools():
        pytest.skip(f"needs {', '.join(trt_bindings.missing_tools())}")
    monkeypatch.setenv("IMLKIT_TRT_BINDINGS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    why = trt_bindings.unavailable("10.3.0")
    assert why and "needs the network (PyPI)" in why and "tensorrt-cu12-bindings==10.3.0" in why
    assert not list((tmp_path / "cache").rglob("*.so*")) and not list((tmp_path / "cache").rglob("*.whl"))
