"""``python -m export.check MODEL.onnx --target trt10.3|...|trt11.5|trt11|auto|all``: will TensorRT
parse this graph? Lints it against the target's ONNX op table and restrictions
(``export.trt_support``) on a machine without a GPU, before it reaches the device.
``auto`` takes the TensorRT installed here (its exact release's table); ``trt11`` is the
newest 11.x target.

Prints every problem with the node it concerns and exits 1 when a target has one; exits 2
when the file is not a readable ONNX model.
"""
from __future__ import annotations

from train.cli import interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import argparse
import sys
from pathlib import Path

import onnx

from .trt_support import ALIASES, TARGETS, Target, check_graph, get_target, installed_version, target_for_version
from .verify import LintReport


def load_graph(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file, raising ValueError with a one-line message when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        onnx.checker.check_model(str(path))  # by path: also for graphs over 2 GiB (external data)
        model = onnx.load(str(path))
    except Exception as err:  # protobuf decode errors and checker errors have several types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a valid ONNX model ({first})") from None
    return model


def format_report(path: Path, target: str | Target, report: LintReport) -> list[str]:
    t = get_target(target) if isinstance(target, str) else target
    target = t.name
    nodes = sum(report.op_counts.values())
    head = (f"{path.name} vs {target} (TensorRT {t.version}, opsets {t.opset_min}-{t.opset_max}): "
            f"opset {report.opset}, {nodes} nodes, {len(report.op_counts)} op types")
    lines = [f"{head}: {'OK' if report.ok else f'{len(report.problems)} error(s)'}"]
    lines += [f"  error: {p}" for p in report.problems]
    lines += [f"  warning: {w}" for w in report.warnings]
    return lines


@one_line_errors()  # Ctrl-C: one line, exit 130 (this tool reports its own errors)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.check", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="ONNX file")
    parser.add_argument("--target", action="append", choices=[*TARGETS, *ALIASES, "auto", "all"],
                        help="TensorRT target (repeatable; default: all; auto: the TensorRT installed here)")
    parser.add_argument("--sources", action="store_true", help="print where each target's table comes from")
    args = parser.parse_args(argv)
    names = list(TARGETS) if not args.target or "all" in args.target else list(dict.fromkeys(args.target))
    targets: list[Target] = []
    for name in names:
        if name == "auto":
            version = installed_version()
            if version is None:
                print("error: --target auto: TensorRT is not installed here (name a target instead)", file=sys.stderr)
                return 2
            try:
                targets.append(target_for_version(version))
            except (KeyError, ValueError) as err:
                print(f"error: --target auto: {str(err).strip(chr(39))}", file=sys.stderr)
                return 2
        else:
            targets.append(get_target(name))
    try:
        model = load_graph(args.model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = False
    for target in {t.name: t for t in targets}.values():
        report = check_graph(model, target)
        failed |= not report.ok
        print("\n".join(format_report(Path(args.model), target, report)))
        if args.sources:
            print("\n".join(f"  source: {s}" for s in target.sources))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
