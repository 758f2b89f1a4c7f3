"""The OpenAPI 3.1 document of every route the service answers.

Written by hand (the routes are plain Flask views) and kept honest by tests:
tests/app/test_openapi_spec.py fails when a route of ``app.url_map`` is missing here,
and schemathesis checks that real responses conform to these schemas.
"""

from __future__ import annotations

from typing import Any

from . import __version__

JSON = "application/json"

# --- building blocks --------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(shape: str, statuses: dict[int, str]) -> dict[str, Any]:
    """Error responses; a 404 may also come from the router itself (no such path)."""
    out = {}
    for status, description in statuses.items():
        schema = _ref(shape)
        if status == 404 and shape != "Error":
            schema = {"anyOf": [_ref(shape), _ref("Error")]}
        out[str(status)] = _json(schema, description)
    return out


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
        "example": {"name": "iris", "version": "1"}.get(name, "x"),
    }


NAME = _path_param("name", "Model name, e.g. iris.")
VERSION = _path_param("version", "Model version, e.g. 1.")
PROBABILITIES = {
    "name": "probabilities",
    "in": "query",
    "required": False,
    "description": "true, 1 or yes: also return class probabilities (classifiers); "
    "any other value: no probabilities.",
    "schema": {"type": "string", "examples": ["true"]},
}
NO_KEY = "API keys are configured (PREDICTOR_API_KEYS) and none or a wrong one was sent."
BODY_ERRORS = {
    400: "Bad input: the message says what was wrong and what is expected.",
    401: NO_KEY,
    404: "Unknown model or version.",
    413: "Too many rows or too large a body.",
    415: "Body is not JSON.",
    422: "The model itself refused the rows (e.g. an unseen category it cannot encode).",
    503: "The model is not loaded (refused or unloaded).",
}
V2_INFER_ERRORS = {
    400: "Bad tensors: the message says which input and why.",
    401: NO_KEY,
    404: "Unknown model or version.",
    413: "Too many rows or too large a body.",
    415: "Unsupported Content-Encoding.",
    422: "The model itself refused the rows (e.g. an unseen category it cannot encode).",
    503: "The model is not loaded.",
}

# --- schemas ---------------------------------------------------------------

_value = {"type": ["number", "string", "boolean"]}
_row = {
    "oneOf": [
        {"type": "array", "items": _value, "description": "Feature values in schema order."},
        {
            "type": "object",
            "additionalProperties": _value,
            "description": "Feature values keyed by feature name.",
        },
    ]
}
_proba = {
    "type": "array",
    "items": {"type": "object", "additionalProperties": {"type": "number"}},
    "description": "Per row: probability of each class label.",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Stable machine-readable code."},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "V2Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "description": "The Open Inference Protocol's error shape.",
    },
    "SeedRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {
                "oneOf": [
                    {"type": "array", "items": _value, "description": "One row."},
                    {"type": "array", "items": _row, "description": "Several rows."},
                    {"type": "object", "additionalProperties": _value},
                ]
            },
            "model": {"type": "string", "description": "Model name (default: iris)."},
            "version": {"type": "string"},
            "probabilities": {"type": "boolean"},
        },
        "example": {"input": [5.1, 3.5, 1.4, 0.2]},
    },
    "SeedResponse": {
        "type": "object",
        "required": ["prediction", "model", "version"],
        "properties": {
            "prediction": {"type": "array"},
            "model": {"type": "string"},
            "version": {"type": "string"},
            "probabilities": _proba,
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {"type": "array", "items": _row, "minItems": 1},
            "probabilities": {"type": "boolean"},
        },
        "example": {"instances": [[5.1, 3.5, 1.4, 0.2]], "probabilities": True},
    },
    "PredictResponse": {
        "type": "object",
        "required": ["predictions", "model", "version"],
        "properties": {
            "predictions": {"type": "array"},
            "model": {"type": "string"},
            "version": {"type": "string"},
            "probabilities": _proba,
        },
    },
    "Feature": {
        "type": "object",
        "required": ["name", "type"],
        "properties": {
            "name": {"type": "string"},
            "type": {"enum": ["float", "int", "bool", "string"]},
            "minimum": {"type": "number"},
            "maximum": {"type": "number"},
            "categories": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ModelVersion": {
        "type": "object",
        "required": ["version", "current"],
        "properties": {
            "version": {"type": "string"},
            "current": {"type": "boolean"},
            "created": {"type": "string"},
            "estimator": {"type": "string"},
            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "sklearn_version": {"type": "string"},
            "compiled": {"type": ["object", "null"]},
        },
    },
    "ModelDescription": {
        "type": "object",
        "required": ["name", "ready", "versions"],
        "properties": {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "current_version": {"type": ["string", "null"]},
            "serving_version": {"type": ["string", "null"]},
            "runtime": {"type": ["string", "null"]},
            "versions": {"type": "array", "items": _ref("ModelVersion")},
            "task": {"enum": ["classification", "regression"]},
            "estimator": {"type": "string"},
            "features": {"type": "array", "items": _ref("Feature")},
            "output_labels": {"type": ["array", "null"], "items": {"type": "string"}},
            "metrics": {"type": "object"},
            "sample_input": {"type": "array"},
            "description": {"type": "string"},
            "refused": {
                "type": "object",
                "properties": {"version": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": _ref("ModelDescription")}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ready", "not ready", "draining"]},
            "models": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            "parameters": {
                "type": "object",
                "description": "task, version; for classifiers classes and their labels.",
            },
        },
    },
    "ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "ready": {"type": "boolean"},
            "reason": {"type": "string"},
        },
    },
    "InferInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {
                "type": "string",
                "minLength": 1,
                "description": "input-0 for one [N, F] tensor, or a feature name.",
            },
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "minItems": 1,
            },
            "datatype": {
                "enum": [
                    "BOOL",
                    "UINT8",
                    "UINT16",
                    "UINT32",
                    "UINT64",
                    "INT8",
                    "INT16",
                    "INT32",
                    "INT64",
                    "FP16",
                    "FP32",
                    "FP64",
                    "BYTES",
                ]  # fmt: skip
            },
            "data": {"type": "array", "description": "Row-major, flat or nested."},
            "parameters": {
                "type": "object",
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("InferInput"), "minItems": 1},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"enum": ["predict", "predict_proba"]},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                },
            },
            "parameters": {
                "type": "object",
                "properties": {"binary_data_output": {"type": "boolean"}},
            },
        },
        "example": {
            "id": "42",
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 4],
                    "datatype": "FP64",
                    "data": [5.1, 3.5, 1.4, 0.2],
                }
            ],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "data": {"type": "array"},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
    },
    "RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "state"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"enum": ["READY", "UNAVAILABLE", "LOADING"]},
                "reason": {"type": "string"},
            },
        },
    },
    "RepositoryAction": {
        "type": "object",
        "required": ["name", "state"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"enum": ["READY", "UNAVAILABLE"]},
        },
    },
}

# --- operations --------------------------------------------------------------


def _op(summary: str, tag: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op_id = summary.lower().replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
    return {
        "summary": summary,
        "tags": [tag],
        "operationId": op_id,
        "responses": responses,
        **extra,
    }


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": _ref(schema)}}}


def _v1_predict(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": _op(
            summary,
            "v1",
            {
                "200": _json(_ref("PredictResponse"), "Predictions."),
                **_errors("Error", BODY_ERRORS),
            },
            parameters=[*params, PROBABILITIES],
            requestBody=_body("PredictRequest"),
            security=PREDICTION_SECURITY,
        )
    }


def _v2_metadata(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": _op(
            summary,
            "v2",
            {
                "200": _json(_ref("ModelMetadata"), "Inputs, outputs and versions."),
                **_errors(
                    "V2Error", {404: "Unknown model or version.", 503: "No current version."}
                ),
            },
            parameters=params,
        )
    }


def _v2_ready(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": _op(
            summary,
            "v2",
            {
                "200": _json(_ref("ModelReady"), "Ready."),
                "503": _json(_ref("ModelReady"), "Not ready; reason says why."),
                **_errors("V2Error", {404: "Unknown model or version."}),
            },
            parameters=params,
        )
    }


def _v2_infer(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    header = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "description": "Binary tensor data extension: the length of the JSON part of the body; "
        "raw tensor bytes follow it (Content-Type application/octet-stream).",
        "schema": {"type": "integer", "minimum": 1},
    }
    ok = {
        "description": "Outputs. With binary outputs the body is JSON + raw bytes and the "
        "Inference-Header-Content-Length header gives the JSON length.",
        "content": {
            JSON: {"schema": _ref("InferResponse")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    return {
        "post": _op(
            summary,
            "v2",
            {"200": ok, **_errors("V2Error", V2_INFER_ERRORS)},
            parameters=[*params, header],
            requestBody=_body("InferRequest"),
            security=PREDICTION_SECURITY,
        )
    }


# No key needed unless PREDICTOR_API_KEYS is set; then X-API-Key or a bearer key.
PREDICTION_SECURITY: list[dict[str, list[str]]] = [{}, {"apiKey": []}, {"apiKeyBearer": []}]

REPOSITORY_ERRORS = {
    400: "Bad body.",
    401: "No Authorization: Bearer token.",
    403: "Wrong token, or the API is off (PREDICTOR_ADMIN_TOKEN unset).",
}


def _repository(summary: str, with_name: bool, ok: str, extra_errors: dict[int, str]) -> dict:
    return {
        "post": _op(
            summary,
            "repository",
            {
                "200": _json(_ref(ok), "Done."),
                **_errors("V2Error", {**REPOSITORY_ERRORS, **extra_errors}),
            },
            parameters=[NAME] if with_name else [],
            requestBody={
                "required": False,
                "content": {JSON: {"schema": {"type": "object"}}},
            },
            security=[{"adminToken": []}],
        )
    }


def _static(summary: str, media_type: str) -> dict[str, Any]:
    return {
        "get": _op(
            summary,
            "web",
            {
                "200": {
                    "description": summary,
                    "content": {media_type: {"schema": {"type": "string"}}},
                }
            },
        )
    }


def build_spec() -> dict[str, Any]:
    """The document served at ``GET /openapi.json``."""
    errors_predict = _errors("Error", BODY_ERRORS)
    paths: dict[str, Any] = {
        "/predict": {
            "post": _op(
                "Predict (seed route)",
                "seed",
                {"200": _json(_ref("SeedResponse"), "Predictions."), **errors_predict},
                parameters=[PROBABILITIES],
                requestBody=_body("SeedRequest"),
                security=PREDICTION_SECURITY,
            )
        },
        "/v1/models": {
            "get": _op(
                "List models", "v1", {"200": _json(_ref("ModelList"), "Every model in the store.")}
            )
        },
        "/v1/models/{name}": {
            "get": _op(
                "Describe a model",
                "v1",
                {
                    "200": _json(_ref("ModelDescription"), "Versions, schema, labels, metrics."),
                    **_errors("Error", {404: "Unknown model."}),
                },
                parameters=[NAME],
            )
        },
        "/v1/models/{name}:predict": _v1_predict("Predict (V1)", [NAME]),
        "/v1/models/{name}/versions/{version}:predict": _v1_predict(
            "Predict with a version (V1)", [NAME, VERSION]
        ),
        "/healthz": {
            "get": _op(
                "Liveness",
                "health",
                {
                    "200": _json(
                        {"type": "object", "properties": {"status": {"const": "alive"}}},
                        "The process answers.",
                    )
                },
            )
        },
        "/readyz": {
            "get": _op(
                "Readiness",
                "health",
                {
                    "200": _json(_ref("Readiness"), "Models loaded, not draining."),
                    "503": _json(_ref("Readiness"), "Not ready or draining."),
                },
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                "health",
                {
                    "200": {
                        "description": "Prometheus text format, every worker aggregated.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/v2": {
            "get": _op(
                "Server metadata",
                "v2",
                {"200": _json(_ref("ServerMetadata"), "Name, version, extensions.")},
            )
        },
        "/v2/health/live": {
            "get": _op(
                "Server live",
                "v2",
                {
                    "200": _json(
                        {"type": "object", "properties": {"live": {"type": "boolean"}}}, "Live."
                    )
                },
            )
        },
        "/v2/health/ready": {
            "get": _op(
                "Server ready",
                "v2",
                {
                    "200": _json(
                        {"type": "object", "properties": {"ready": {"const": True}}}, "Ready."
                    ),
                    "503": _json(
                        {"type": "object", "properties": {"ready": {"const": False}}},
                        "No model loaded, or draining.",
                    ),
                },
            )
        },
        "/v2/models/{name}": _v2_metadata("Model metadata", [NAME]),
        "/v2/models/{name}/versions/{version}": _v2_metadata(
            "Model version metadata", [NAME, VERSION]
        ),
        "/v2/models/{name}/ready": _v2_ready("Model ready", [NAME]),
        "/v2/models/{name}/versions/{version}/ready": _v2_ready(
            "Model version ready", [NAME, VERSION]
        ),
        "/v2/models/{name}/infer": _v2_infer("Infer (V2)", [NAME]),
        "/v2/models/{name}/versions/{version}/infer": _v2_infer(
            "Infer with a version (V2)", [NAME, VERSION]
        ),
        "/v2/repository/index": _repository("Repository index", False, "RepositoryIndex", {}),
        "/v2/repository/models/{name}/load": _repository(
            "Load a model",
            True,
            "RepositoryAction",
            {
                404: "Unknown model.",
                409: "The model has no current version.",
                422: "The current version was refused.",
            },
        ),
        "/v2/repository/models/{name}/unload": _repository(
            "Unload a model", True, "RepositoryAction", {404: "Unknown model."}
        ),
        "/openapi.json": {
            "get": _op(
                "This document",
                "meta",
                {"200": _json({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1")},
            )
        },
        "/": _static("Web page to try a model", "text/html"),
        "/web/app.js": _static("Web page script", "text/javascript"),
        "/web/style.css": _static("Web page style", "text/css"),
        "/web/favicon.svg": _static("Web page icon", "image/svg+xml"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Predictor",
            "version": __version__,
            "description": "Serve scikit-learn models: the seed route, KServe V1, the Open "
            "Inference Protocol (V2) with the model repository extension, health and metrics.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": n} for n in ("seed", "v1", "v2", "repository", "health", "meta", "web")],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "apiKeyBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key as a bearer token (prediction routes).",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "PREDICTOR_ADMIN_TOKEN",
                },
            },
        },
    }
