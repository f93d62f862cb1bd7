"""Run our TensorRT code paths against the real bindings of one TensorRT version (started by
``tests/test_trt_api.py`` through ``tests/trt_bindings.py``, with ``tensorrt_bindings``
importable): ``export.tensorrt.build_engine`` for every precision path of that version
(with the runtime's ``TensorRTBackend`` verifying each engine), a build whose timing cache
TensorRT cannot create, a parse failure, and ``export.trt_adopt.adopt_engine``.

``import tensorrt`` gives ``trt_spec``'s stand-in of the real module, so every TensorRT name,
enum member, property and signature these paths use is checked against the real bindings;
the scenario below only supplies what the library would compute (parsed layers, the engine's
tensors), each value checked against the declared return type. CUDA (cuda-python) is a small
in-memory stand-in: it is not what is checked here. Prints one JSON object: the scenarios'
results and every TensorRT member used.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import traceback
import types
from dataclasses import replace
from pathlib import Path

import onnx
from onnx import TensorProto, helper

import tensorrt_bindings as real
from trt_spec import Spec, Stand

# --------------------------------------------------------------------------- CUDA stand-in


def fake_cudart() -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")
    ok = types.SimpleNamespace(cudaSuccess=0)
    rt.cudaError_t = ok
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    memory: dict[int, ctypes.Array] = {}

    def malloc(n):
        buf = ctypes.create_string_buffer(int(n))
        memory[ctypes.addressof(buf)] = buf
        return ok.cudaSuccess, ctypes.addressof(buf)

    def memcpy(dst, src, n, kind, stream):
        ctypes.memmove(int(dst), int(src), int(n))
        return (ok.cudaSuccess,)

    rt.cudaGetDeviceCount = lambda: (ok.cudaSuccess, 1)
    rt.cudaSetDevice = lambda d: (ok.cudaSuccess,)
    rt.cudaGetDeviceProperties = lambda d: (ok.cudaSuccess, types.SimpleNamespace(name=b"Stand-in GPU", major=8, minor=9))
    rt.cudaStreamCreate = lambda: (ok.cudaSuccess, 7)
    rt.cudaStreamSynchronize = lambda s: (ok.cudaSuccess,)
    rt.cudaStreamDestroy = lambda s: (ok.cudaSuccess,)
    rt.cudaMalloc = malloc
    rt.cudaFree = lambda p: (memory.pop(int(p), None), ok.cudaSuccess)[1:]
    rt.cudaMemcpyAsync = memcpy
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, rt
    sys.modules.update({"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt})
    return rt


# --------------------------------------------------------------------------- what the library would compute


class World:
    """The library's side of one scenario: the parsed network of the ONNX, the engine it
    builds, its execution. Values only; the spec checks their types."""

    def __init__(self, model: onnx.ModelProto, *, cache_ok: bool = True, parse_ok: bool = True,
                 layer_info: str | None = None, onnx_path: Path | None = None):
        from export.trt_islands import parser_layer_name

        self.onnx_path, self.addresses = onnx_path, {}
        self.layers = [(parser_layer_name(n), f"[ONNX Layer: {parser_layer_name(n)}]", len(n.output))
                       for n in model.graph.node if n.op_type not in ("Constant", "QuantizeLinear", "DequantizeLinear")]
        self.cache_ok, self.parse_ok = cache_ok, parse_ok
        self.profile = None
        self.input_shape = None
        self.layer_info = layer_info if layer_info is not None else json.dumps(
            {"Layers": [{"Name": n, "Outputs": [{"Format/Datatype": "Row major linear FP32"}]} for n, _, _ in self.layers]})
        self.set_precision: dict[str, object] = {}

    def __call__(self, obj, cls, name, args):
        c, t = cls.__name__, real
        if (c, name) == ("INetworkDefinition", "num_layers"):
            return len(self.layers)
        if (c, name) == ("INetworkDefinition", "get_layer"):
            lname, meta, outs = self.layers[args[0]]
            return Stand(obj._spec, t.ILayer, name=lname, metadata=meta, num_outputs=outs)
        if (c, name) == ("ILayer", "get_output"):
            return Stand(obj._spec, t.ITensor, dtype=t.DataType.FLOAT)
        if (c, name) == ("OnnxParser", "parse_from_file"):
            return self.parse_ok
        if (c, name) == ("OnnxParser", "num_errors"):
            return 0 if self.parse_ok else 1
        if (c, name) == ("ParserError", "desc"):
            return "stand-in parse failure"
        if (c, name) in (("ParserError", "node_name"), ("ParserError", "node")):
            return "node_of_logit" if name == "node_name" else 0
        if (c, name) == ("IBuilderConfig", "create_timing_cache"):
            return NotImplemented if self.cache_ok else None
        if (c, name) == ("IOptimizationProfile", "set_shape"):
            self.profile = tuple(tuple(d) for d in args[1:4])
            return NotImplemented
        if (c, name) == ("IHostMemory", "__bytes__"):
            return b"stand-in serialized bytes"
        if (c, name) in (("ICudaEngine", "num_io_tensors"),):
            return 3
        if (c, name) == ("ICudaEngine", "get_tensor_name"):
            return ("image", "prob", "score")[args[0]]
        if (c, name) == ("ICudaEngine", "get_tensor_mode"):
            return t.TensorIOMode.INPUT if args[0] == "image" else t.TensorIOMode.OUTPUT
        if (c, name) == ("ICudaEngine", "get_tensor_shape"):
            return t.Dims({"image": (-1, 3, 32, 32), "prob": (-1, 1, 32, 32), "score": (-1, 1)}[args[0]])
        if (c, name) == ("ICudaEngine", "get_tensor_profile_shape"):
            lo, opt, hi = self.profile or ((1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))
            return [t.Dims(lo), t.Dims(opt), t.Dims(hi)]
        if (c, name) == ("ICudaEngine", "get_tensor_dtype"):
            return t.DataType.FLOAT
        if (c, name) == ("IExecutionContext", "set_input_shape"):
            self.input_shape = tuple(args[1])
            return True
        if (c, name) == ("IExecutionContext", "get_tensor_shape"):
            n = self.input_shape[0]
            return t.Dims({"prob": (n, 1, 32, 32), "score": (n, 1)}[args[0]])
        if (c, name) == ("IExecutionContext", "set_tensor_address"):
            self.addresses[args[0]] = int(args[1])
            return True
        if (c, name) == ("IExecutionContext", "execute_async_v3") and self.onnx_path is not None:
            return self.execute()
        if (c, name) == ("EngineInspector", "get_engine_information"):
            return self.layer_info
        return NotImplemented


    def execute(self) -> bool:
        """What the engine computes: the ONNX on onnxruntime, read from and written to the
        device addresses the backend bound (so the backend's buffers and copies are real)."""
        import numpy as np
        from runtime.backends.ort_backend import OrtBackend

        shape = self.input_shape
        x = np.empty(shape, np.float32)
        ctypes.memmove(x.ctypes.data, self.addresses["image"], x.nbytes)
        out = OrtBackend(self.onnx_path, providers=["CPUExecutionProvider"]).run(x)
        for name in ("prob", "score"):
            arr = np.ascontiguousarray(out[name], np.float32)
            ctypes.memmove(self.addresses[name], arr.ctypes.data, arr.nbytes)
        return True


# --------------------------------------------------------------------------- the scenarios


def name_nodes(path: Path) -> list[str]:
    model = onnx.load(str(path))
    for k, node in enumerate(model.graph.node):
        node.name = node.name or f"/head/{node.op_type}_{k}"
    onnx.save(model, str(path))
    from runtime.sidecar import ArtifactInfo, Sidecar, sidecar_path

    side = Sidecar.load(sidecar_path(path))
    replace(side, artifact=ArtifactInfo.from_file(path)).save(sidecar_path(path))
    return [n.name for n in model.graph.node]


def qdq_copy(path: Path, islands: list[str]) -> Path:
    """``path`` as a Q/DQ graph (one Q/DQ pair on the input) whose sidecar lists ``islands``
    as left in float, as export.quantize writes it."""
    from runtime.sidecar import ArtifactInfo, Sidecar, sidecar_path

    model = onnx.load(str(path))
    conv = model.graph.node[0]
    model.graph.initializer.extend([helper.make_tensor("q_s", TensorProto.FLOAT, [], [0.05]),
                                    helper.make_tensor("q_z", TensorProto.INT8, [], [0])])
    src, conv.input[0] = conv.input[0], "x_dq"
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["x_q", "q_s", "q_z"], ["x_dq"], name="/q/dq"))
    model.graph.node.insert(0, helper.make_node("QuantizeLinear", [src, "q_s", "q_z"], ["x_q"], name="/q/q"))
    out = path.with_name(path.stem + ".int8.onnx")
    onnx.save(model, str(out))
    side = Sidecar.load(sidecar_path(path))
    replace(side, artifact=ArtifactInfo.from_file(out),
            extra={**side.extra, "precision": {"mode": "int8-qdq", "unquantized_islands": islands}}).save(sidecar_path(out))
    return out


def mixed_copy(path: Path, islands: list[str]) -> Path:
    from export.precision import Fp16Islands, convert_mixed, derived_sidecar, write_model_with_sidecar
    from runtime.sidecar import Sidecar, sidecar_path

    model = onnx.load(str(path))
    chosen = Fp16Islands()
    for node in model.graph.node:
        if node.name in islands:
            chosen.add(node, "kept in FP32")
    out = path.with_name(path.stem + ".fp16.onnx")
    side = Sidecar.load(sidecar_path(path))
    write_model_with_sidecar(convert_mixed(model, chosen), out,
                             lambda tmp: derived_sidecar(side, tmp, precision="fp16", parity=None, details={}))
    return out


def main() -> int:
    expect = os.environ.get("IMLKIT_TRT_EXPECT", "")
    spec = Spec(real)
    assert spec.version == expect, (spec.version, expect)
    sys.modules["tensorrt"] = spec.module()
    fake_cudart()
    from export.tensorrt import BuildError, build_engine
    from export.trt_adopt import adopt_engine
    from export.trt_islands import constrain_layers
    from export.trt_plan import parse_version
    from runtime.backends.tensorrt_backend import GpuInfo
    from runtime.sidecar import Sidecar, TensorRTBuild, sidecar_path
    from test_runtime_fixtures import make_model

    major = parse_version(spec.version)[0]
    results: dict[str, object] = {}
    tmp = Path(tempfile.mkdtemp(prefix="imlkit-trt-api-"))
    base = make_model(tmp)
    names = name_nodes(base)
    islands = names[1:3]  # Sigmoid and ReduceMax: float outputs
    cases = {"fp32": (base, "fp32", {}), "int8": (qdq_copy(base, islands), "int8", {})}
    mixed = mixed_copy(base, islands)
    if major == 10:
        cases["fp16-weak-islands"] = (base, "fp16", {"fp32_nodes": tuple(islands)})
        cases["fp16-strongly-typed"] = (mixed, "fp16", {"strongly_typed": True, "opt_level": 4})
    else:
        cases["fp16-strongly-typed"] = (mixed, "fp16", {"opt_level": 4})

    def run(label, fn):
        try:
            results[label] = fn()
        except Exception as err:  # reported, the test names it
            results[label] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-1500:]}

    def build(path, precision, kw, world_kw=None, out_name="e.engine"):
        model = onnx.load(str(path))
        spec.hook = World(model, onnx_path=path, **(world_kw or {}))
        res = build_engine(path, tmp / out_name, precision=precision, max_batch=4, opt_batch=2, **kw)
        b = TensorRTBuild.of(Sidecar.load(res.sidecar))
        return {"strongly_typed": b.strongly_typed, "flags": list(b.builder_flags), "fp32_layers": b.fp32_layers,
                "parity_passed": res.parity.passed if res.parity else None, "notes": list(res.notes),
                "timing_cache_written": (tmp / (out_name + ".timing-cache")).is_file()}

    for label, (path, precision, kw) in cases.items():
        run(label, lambda: build(path, precision, kw, out_name=f"{label}.engine"))
    run("no-timing-cache", lambda: build(base, "fp32", {}, {"cache_ok": False}, "nocache.engine"))

    def parse_failure():
        spec.hook = World(onnx.load(str(base)), parse_ok=False)
        try:
            build_engine(base, tmp / "bad.engine", precision="fp32", verify=False)
        except BuildError as err:
            return {"message": str(err)}
        return {"error": "no BuildError"}

    run("parse-failure", parse_failure)

    def adopt():
        engine = tmp / "adopted.engine"
        engine.write_bytes(b"engine bytes from trtexec")
        spec.hook = World(onnx.load(str(base)), layer_info=json.dumps(
            {"Layers": [{"Name": "conv", "Outputs": [{"Format/Datatype": "Row major linear FP16 format (kHALF)"}]}]}))
        path = adopt_engine(engine, base, trt=sys.modules["tensorrt"], gpu=GpuInfo("Stand-in GPU", "8.9"))
        b = TensorRTBuild.of(Sidecar.load(path))
        return {"precision": b.precision, "profile": b.profile, "version": b.version,
                "loads": Sidecar.load(sidecar_path(engine)).artifact.format}

    run("adopt", adopt)

    def weak_typing_constraints():  # what 11.x must never reach: layer precisions
        spec.hook = World(onnx.load(str(base)))
        builder = sys.modules["tensorrt"].Builder(sys.modules["tensorrt"].Logger())
        network = builder.create_network(0)
        return {"constrained": constrain_layers(sys.modules["tensorrt"], network, tuple(islands))[0]}

    run("layer-precision-constraints", weak_typing_constraints)

    def misuse_probes():  # the spec refuses what the bindings do not have (own record: not our code's)
        t = Spec(real).module()
        config = t.Builder(t.Logger()).create_builder_config()
        probes = {"flag by string": lambda: config.set_flag("FP16"),
                  "missing argument": lambda: config.set_memory_pool_limit(t.MemoryPoolType.WORKSPACE),
                  "unknown enum member": lambda: t.BuilderFlag.NO_SUCH_FLAG,
                  "unknown method": lambda: config.no_such_method(),
                  "unknown keyword": lambda: config.set_timing_cache(None, ignore=False)}
        refused = {}
        for label, probe in probes.items():
            try:
                probe()
                refused[label] = False
            except (AssertionError, AttributeError):
                refused[label] = True
        return refused

    run("misuse-probes", misuse_probes)
    print(json.dumps({"version": spec.version, "results": results, "used": sorted(spec.used)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
