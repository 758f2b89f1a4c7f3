# The gRPC Open Inference Protocol's generated modules (tests/unit/test_grpc_codegen.py
# checks they match service/protocols/grpc/inference.proto).
.PHONY: grpc-codegen

grpc-codegen: install-test
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  service/protocols/grpc/inference.proto

## gRPC side by side: ours vs MLServer's gRPC, and vs our REST V2 (loadtests/grpc_bench.py).
.PHONY: bench-grpc
GRPC_BENCH_ARGS ?=
bench-grpc: install-test mlserver-venv
	$(PY) loadtests/grpc_bench.py $(GRPC_BENCH_ARGS)
