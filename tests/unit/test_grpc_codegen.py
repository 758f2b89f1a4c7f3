"""The committed gRPC modules are what the .proto generates (``make grpc-codegen``).

Regenerated in a subprocess and compared as text: nothing here imports them, since
tritonclient.grpc defines the same protocol messages and one process cannot hold both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO = "service/protocols/grpc/inference.proto"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    (tmp_path / PROTO).parent.mkdir(parents=True)
    shutil.copy(REPO / PROTO, tmp_path / PROTO)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.",
         "--pyi_out=.", "--grpc_python_out=.", PROTO],
        cwd=tmp_path, check=True, capture_output=True, text=True,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / PROTO).with_name(name).read_text()
        committed = (REPO / PROTO).with_name(name).read_text()
        assert fresh == committed, f"{name} is stale: run `make grpc-codegen`"


def test_the_service_is_the_protocols() -> None:
    """Package, service and RPC names are the wire contract tritonclient calls."""
    text = (REPO / PROTO).read_text()
    assert "package inference;" in text
    assert "service GRPCInferenceService {" in text
    for rpc in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                "ModelInfer"):  # fmt: skip
        assert f"rpc {rpc}({rpc}Request) returns ({rpc}Response)" in text
