"""Microbenchmark: µs to decode and validate one request body, per protocol.

    .venv/bin/python loadtests/decode_bench.py [--repeat 20000]
    .venv/bin/python loadtests/decode_bench.py --app [--repo DIR]   # whole requests


For the seed route, V1 and V2 (JSON and binary tensors), on the iris schema:

  hand   the service's hot path: orjson + validation.py / v2_tensors.py -> rows
  +pyd   the same, after validating the body through its pydantic model in
         service/protocols/schemas.py (what "validate through pydantic" would add)

The models stay the schema source of /openapi.json; this shows why the hot path
does not run them. Medians of 7 timed loops, in one process, so the ratio is what
counts on a noisy machine.

``--app`` times whole requests in-process (Flask test client, cache off, iris):
body reader, access check, decode, data plane, runtime, encode. ``--repo DIR``
imports the service from another checkout (e.g. main) for a before/after.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
if "--repo" in sys.argv:  # before anything imports the service
    ROOT = Path(sys.argv[sys.argv.index("--repo") + 1]).resolve()
sys.path.insert(0, str(ROOT))

FEATURE_NAMES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
ROW = [5.1, 3.5, 1.4, 0.2]
MAX_ROWS = 1000


def _cases(rows: int) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    from service.manifest import Feature
    from service.protocols import schemas
    from service.protocols.v2_tensors import decode_request, tensors_to_rows
    from service.validation import rows_from_instances, rows_from_seed

    features = [Feature(name=n) for n in FEATURE_NAMES]
    batch = [ROW] * rows
    seed = orjson.dumps({"input": batch if rows > 1 else ROW})
    v1 = orjson.dumps({"instances": batch})
    v2 = orjson.dumps(
        {"inputs": [{"name": "input-0", "shape": [rows, 4], "datatype": "FP64", "data": batch}]}
    )
    blob = np.asarray(batch, dtype="<f8").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [rows, 4],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    )
    binary = header + blob

    def seed_hand() -> object:
        return rows_from_seed(orjson.loads(seed), features, MAX_ROWS)

    def seed_pyd() -> object:
        schemas.SeedRequest.model_validate_json(seed)
        return seed_hand()

    def v1_hand() -> object:
        return rows_from_instances(orjson.loads(v1), features, MAX_ROWS)

    def v1_pyd() -> object:
        schemas.PredictRequest.model_validate_json(v1)
        return v1_hand()

    def v2_hand() -> object:
        return tensors_to_rows(decode_request(v2, None).inputs, features, MAX_ROWS)

    def v2_pyd() -> object:
        schemas.InferRequest.model_validate_json(v2)
        return v2_hand()

    def bin_hand() -> object:
        return tensors_to_rows(decode_request(binary, str(len(header))).inputs, features, MAX_ROWS)

    def bin_pyd() -> object:
        schemas.InferRequest.model_validate_json(header)
        return bin_hand()

    return {
        "seed /predict": (seed_hand, seed_pyd),
        "V1 :predict": (v1_hand, v1_pyd),
        "V2 infer JSON": (v2_hand, v2_pyd),
        "V2 infer binary": (bin_hand, bin_pyd),
    }


def _us(fn: Callable[[], object], repeat: int) -> float:
    loops = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        loops.append((time.perf_counter() - start) / repeat * 1e6)
    return statistics.median(loops)


def _requests(repeat: int) -> None:
    import tempfile

    from service.app import create_app
    from service.demo import train_demo
    from service.settings import Settings
    from service.store import ModelStore

    store = Path(tempfile.mkdtemp(prefix="decode-bench-")) / "models"
    train_demo(ModelStore(store))
    client = create_app(Settings(MODEL_STORE=store, CACHE_ENABLED=False)).test_client()
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64"}
    blob = np.asarray([ROW], dtype="<f8").tobytes()
    header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}]})
    json_type = {"Content-Type": "application/json"}
    cases = {
        "seed /predict": ("/predict", orjson.dumps({"input": ROW}), json_type),
        "V1 :predict": ("/v1/models/iris:predict", orjson.dumps({"instances": [ROW]}), json_type),
        "V2 infer JSON": (
            "/v2/models/iris/infer",
            orjson.dumps({"inputs": [{**tensor, "data": ROW}]}),
            json_type,
        ),
        "V2 infer binary": (
            "/v2/models/iris/infer",
            header + blob,
            {"Inference-Header-Content-Length": str(len(header))},
        ),
    }
    print(f"service from {ROOT}")
    print(f"{'protocol':<18}{'µs/request':>12}")
    for name, (url, body, headers) in cases.items():
        assert client.post(url, data=body, headers=headers).status_code == 200

        def call(url: str = url, body: bytes = body, headers: dict = headers) -> object:
            return client.post(url, data=body, headers=headers)

        print(f"{name:<18}{_us(call, repeat):>12.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20000, help="calls per timed loop")
    parser.add_argument("--app", action="store_true", help="time whole in-process requests")
    parser.add_argument("--repo", help="import the service from this checkout")
    args = parser.parse_args()
    if args.app:
        _requests(max(50, args.repeat // 20))
        return
    print(f"{'protocol':<18}{'rows':>5}{'hand µs':>10}{'+pyd µs':>10}{'ratio':>8}")
    worst = 0.0
    for rows in (1, 100):
        repeat = max(200, args.repeat // rows)
        for name, (hand, pyd) in _cases(rows).items():
            hand(), pyd()  # warm up, and both accept the body
            h, p = _us(hand, repeat), _us(pyd, repeat)
            worst = max(worst, p / h)
            print(f"{name:<18}{rows:>5}{h:>10.1f}{p:>10.1f}{p / h:>7.2f}x", flush=True)
    print(f"pydantic on the hot path would cost up to {worst:.2f}x the hand decoder")


if __name__ == "__main__":
    main()
