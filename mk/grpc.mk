# The gRPC Open Inference Protocol's generated modules (tests/unit/test_grpc_codegen.py
# checks they match service/protocols/grpc/inference.proto).
.PHONY: grpc-codegen

grpc-codegen: install-test
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  service/protocols/grpc/inference.proto
