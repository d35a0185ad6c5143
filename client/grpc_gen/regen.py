"""Regenerate the gRPC code of `proto/` into a directory.

    python -m coordinator.client.grpc_gen.regen [--proto-dir DIR] [--out-dir DIR]

Defaults: this checkout's `proto/` into this package's folder. Runs
`grpc_tools.protoc` in process (no subprocess, no fork), then rewrites the
bare `import coordinator_pb2` that protoc emits in `*_pb2_grpc.py` into
`from coordinator.client.grpc_gen import coordinator_pb2`, so the modules import as part
of the package. The output depends only on the proto files and the
grpcio-tools version (pinned by the `test` extra), so regenerating the
committed code gives the same bytes.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["GENERATED_FILES", "PACKAGE", "PROTO_FILES", "GenerationError", "generate", "grpc_tools_version", "main"]

PACKAGE = "coordinator.client.grpc_gen"
PROTO_FILES = ("coordinator.proto",)
GENERATED_FILES = ("coordinator_pb2.py", "coordinator_pb2_grpc.py")

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PROTO_DIR = PACKAGE_DIR.parents[1] / "proto"

# The line protoc writes into *_pb2_grpc.py for each imported *_pb2 module.
_BARE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


class GenerationError(RuntimeError):
    """protoc failed, or its output is not what the post-processing expects."""


def grpc_tools_version() -> str | None:
    """The installed grpcio-tools version, or None when it is missing."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python 3.11+ has it
        return None
    try:
        return version("grpcio-tools")
    except PackageNotFoundError:
        return None


def generate(out_dir: str | Path, proto_dir: str | Path = DEFAULT_PROTO_DIR) -> list[Path]:
    """Generate GENERATED_FILES from PROTO_FILES into `out_dir`; return their paths.

    Raises ImportError when grpcio-tools is not installed."""
    from grpc_tools import protoc  # a test/dev dependency only

    proto_dir = Path(proto_dir).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="grpc-gen-") as scratch:
        arguments = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            *(str(proto_dir / name) for name in PROTO_FILES),
        ]
        status = protoc.main(arguments)
        if status != 0:
            raise GenerationError(f"protoc exited {status} on {', '.join(PROTO_FILES)}")
        written = []
        for name in GENERATED_FILES:
            source = (Path(scratch) / name).read_text(encoding="utf-8")
            if name.endswith("_pb2_grpc.py"):
                source = _package_imports(source, name)
            target = out_dir / name
            target.write_text(source, encoding="utf-8", newline="\n")
            written.append(target)
    return written


def _package_imports(source: str, name: str) -> str:
    rewritten, count = _BARE_IMPORT.subn(rf"from {PACKAGE} import \1 as \2", source)
    if count == 0:
        raise GenerationError(f"{name}: no bare '*_pb2' import to rewrite; has protoc changed?")
    return rewritten


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coordinator.client.grpc_gen.regen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR)
    parser.add_argument("--out-dir", type=Path, default=PACKAGE_DIR)
    options = parser.parse_args(argv)
    try:
        written = generate(options.out_dir, options.proto_dir)
    except ImportError:
        print("regen: grpcio-tools is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 1
    except (GenerationError, OSError) as error:
        print(f"regen: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
