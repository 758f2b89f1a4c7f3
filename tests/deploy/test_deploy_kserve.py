"""k8s/kserve: the ClusterServingRuntime and the example InferenceService render with the
pinned kustomize, validate strictly against KServe's own CRD schemas (vendored from the
kserve repository, tests/deploy/kserve_schemas/SOURCE.md), and agree with the code that
runs them: the container's arguments parse as `predictor kserve`, its env names are
settings, the ports and probe paths are the server's, the protocols are KServe's names.
tests/stack/test_kserve_runtime.py serves a /mnt/models directory with the same arguments.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from service.cli import _parser
from service.settings import Settings
from tests.deploy.test_deploy_k8s import K8S, K8S_VERSIONS, api, kustomize, render
from tests.helpers import app_routes

SCHEMAS = Path(__file__).parent / "kserve_schemas"
RUNTIME_DIR = K8S / "kserve"
EXAMPLE_DIR = K8S / "kserve" / "example"
# pkg/constants/constants.go of KServe: the protocol names a runtime may declare.
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}


def strict(schema: Any) -> Any:
    """What kubernetes-validate's strict mode does to Kubernetes' schemas: an object that
    lists its properties refuses any other (unless it keeps unknown fields on purpose)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _schema(kind: str, api_version: str) -> dict:
    group, _, version = api_version.partition("/")
    path = SCHEMAS / f"{kind.lower()}-{group}-{version}.json.gz"
    assert path.is_file(), f"no vendored schema for {kind} {api_version} ({path.name})"
    return strict(json.loads(gzip.decompress(path.read_bytes())))


def validate(doc: dict) -> None:
    """The CRD's schema (strict), and metadata as Kubernetes' ObjectMeta (strict)."""
    jsonschema.Draft202012Validator(_schema(doc["kind"], doc["apiVersion"])).validate(doc)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
            version,
            strict=True,
        )


@functools.cache
def _docs(path: Path) -> tuple[dict, ...]:
    return tuple(kustomize(path))


def runtime() -> dict:
    (doc,) = [d for d in _docs(RUNTIME_DIR) if d["kind"] == "ClusterServingRuntime"]
    return copy.deepcopy(doc)


def inference_service() -> dict:
    (doc,) = [d for d in _docs(EXAMPLE_DIR) if d["kind"] == "InferenceService"]
    return copy.deepcopy(doc)


def kserve_container(doc: dict) -> dict:
    (c,) = [c for c in doc["spec"]["containers"] if c["name"] == "kserve-container"]
    return c


def kserve_args(c: dict) -> Any:
    """The container's arguments as `predictor kserve` parses them ({{.Name}} filled in)."""
    argv = [a.replace("{{.Name}}", "sklearn-iris") for a in c["args"]]
    assert argv[:2] == ["predictor", "kserve"], argv
    return _parser().parse_args(argv[1:])


# --- rendering and schema validation ----------------------------------------------------


@pytest.mark.parametrize("path", [RUNTIME_DIR, EXAMPLE_DIR], ids=["runtime", "example"])
def test_renders_and_validates_against_the_kserve_crds(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        try:
            validate(doc)
        except Exception as exc:  # noqa: BLE001 - report which resource and why
            where = ".".join(str(p) for p in getattr(exc, "absolute_path", []))
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc}")


@pytest.mark.parametrize(
    ("doc", "edit"),
    [
        (runtime, lambda d: kserve_container(d).update(readinesProbe={})),
        (runtime, lambda d: d["spec"]["supportedModelFormats"][0].update(autoselect=True)),
        (runtime, lambda d: d["spec"].update(containers="kserve-container")),
        (inference_service, lambda d: d["spec"]["predictor"]["model"].update(storageURI="s3://x")),
        (inference_service, lambda d: d["spec"]["predictor"].update(modle={})),
        (inference_service, lambda d: d["metadata"].update(lables={})),
    ],
    ids=["container typo", "format typo", "wrong type", "isvc typo", "predictor typo", "meta"],
)
def test_the_validation_can_fail(doc, edit) -> None:
    broken = doc()
    edit(broken)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(broken)


# --- the runtime against the code that runs in it ------------------------------------------


def test_the_runtime_serves_sklearn_on_kserve_protocols() -> None:
    spec = runtime()["spec"]
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    assert formats == {"sklearn"}
    assert set(spec["protocolVersions"]) == {"v1", "v2", "grpc-v2"}
    assert set(spec["protocolVersions"]) <= KSERVE_PROTOCOLS


def test_the_container_arguments_are_the_cli_and_kserves_own() -> None:
    c = kserve_container(runtime())
    args = kserve_args(c)
    assert args.func.__name__ == "_kserve"
    assert args.model_name == "sklearn-iris"
    # Where KServe's storage initializer puts the storageUri's files.
    assert str(args.model_dir) == "/mnt/models"
    # KServe's defaults for a runtime: HTTP on 8080 (what its queue-proxy and
    # the Prometheus annotation call), gRPC on 9000 (as its Triton and MLServer runtimes).
    assert args.http_port == 8080 and args.grpc_port == 9000
    assert args.host == "0.0.0.0"
    annotations = runtime()["spec"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == args.http_port
    assert annotations["prometheus.kserve.io/path"] in app_routes()
    probe = c["readinessProbe"]["httpGet"]
    assert probe["path"] in app_routes() and probe["port"] == args.http_port


def test_the_container_env_is_settings_and_refuses_unsigned_pickles() -> None:
    c = kserve_container(runtime())
    env = {e["name"]: e["value"] for e in c["env"]}
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith("PREDICTOR_"):
            assert name.removeprefix("PREDICTOR_") in fields, name
    settings = Settings.model_validate(
        {k.removeprefix("PREDICTOR_"): v for k, v in env.items() if k.startswith("PREDICTOR_")}
    )
    assert settings.ALLOW_UNSIGNED_PICKLE is False
    cpu = c["resources"]["limits"]["cpu"]
    assert float(cpu) >= (settings.WORKERS or 0) >= 1
    # A read-only root: the pod's store and key, and the metrics, live on volumes.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert str(Path(env["PREDICTOR_SIGNING_KEY_FILE"]).parents[1]) in mounts  # /tmp
    assert any(env["PROMETHEUS_MULTIPROC_DIR"].startswith(m + "/") for m in mounts)
    volumes = {v["name"] for v in runtime()["spec"]["volumes"]}
    assert {m["name"] for m in c["volumeMounts"]} <= volumes


def test_the_runtime_runs_the_image_the_deployments_run() -> None:
    c = kserve_container(runtime())
    assert c["image"] == api(render("base"))["spec"]["template"]["spec"]["containers"][0]["image"]
    assert c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_example_inference_service_uses_the_runtime() -> None:
    isvc = inference_service()
    model = isvc["spec"]["predictor"]["model"]
    spec = runtime()["spec"]
    assert model["runtime"] == runtime()["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert model["storageUri"].startswith(("s3://", "gs://", "https://", "pvc://"))
    # Not auto-selected, so the InferenceService must name it (checked above).
    assert all(f.get("autoSelect") is False for f in spec["supportedModelFormats"])
