"""Command line: check exported models' sidecars, or print the sidecar's JSON Schema.

    python -m runtime.validate MODEL_OR_SIDECAR...    (iml-validate, with imlkit-runtime)
    python -m runtime.validate --schema                the JSON Schema (draft 2020-12)

Each argument is an artifact (``model.onnx``, ``model.engine``) or its sidecar
(``model.onnx.json``). The command checks what the Predictor checks before it opens a backend:
the sidecar against the schema (``runtime/sidecar.schema.json``, by the jsonschema library),
that it describes the artifact beside it (format and sha256), and an engine's build info
(``extra.tensorrt``). It prints ``ok  PATH  model=... input=...`` per good file on stdout and
``error: <one line naming the file>`` per bad one on stderr; the exit status is 0 when every
file passed, 2 otherwise. Nothing is written. For a model you wrote the sidecar of by hand
(bring your own model), this is the check to run before shipping the pair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .errors import RuntimeInputError
from .predictor import checked_sidecar
from .sidecar import SCHEMA_FILE, TensorRTBuild, sidecar_path

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130


def artifact_of(path: Path) -> Path:
    """The artifact a command-line argument names: itself, or the file whose sidecar it is
    (``model.onnx.json`` -> ``model.onnx``, the inverse of ``sidecar_path``)."""
    return path.with_name(path.name[:-len(".json")]) if path.suffix.lower() == ".json" else path


def check(path: Path) -> str:
    """The ``ok`` line for one argument; a one-line RuntimeInputError when it is not good."""
    artifact = artifact_of(path)
    sidecar = checked_sidecar(artifact)
    TensorRTBuild.of(sidecar, source=sidecar_path(artifact))
    shape = "x".join(str(d) for d in sidecar.input.shape)
    return f"ok  {path}  model={sidecar.model} format={sidecar.artifact.format} input={shape}"


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.validate",
                                     description="Check exported models' sidecars (schema, sha256, engine build info).")
    parser.add_argument("files", nargs="*", type=Path, metavar="MODEL_OR_SIDECAR")
    parser.add_argument("--schema", action="store_true", help="print the sidecar's JSON Schema and exit")
    args = parser.parse_args(argv)
    if args.schema:
        sys.stdout.write(SCHEMA_FILE.read_text(encoding="utf-8"))
        return 0
    if not args.files:
        parser.error("give at least one model or sidecar, or --schema")
    failed = 0
    for path in args.files:
        try:
            print(check(path), flush=True)
        except RuntimeInputError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr, flush=True)
    return EXIT_INPUT_ERROR if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m runtime.validate`` and the ``iml-validate`` script."""
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
