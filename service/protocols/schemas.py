"""Request and response bodies of every route, as pydantic models.

These models are the contract's single source: ``/openapi.json`` is generated from
them (protocols/openapi.py) and the V2 datatype list is the one the tensor codec
accepts. The hot paths do not validate through them: the seed, V1 and V2 decoders
(validation.py, v2_tensors.py) check the same shapes by hand with orjson, which is
several times faster per request (docs/extending.md, "the contract"), and keep the
exact messages and codes clients and the README quote.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, RootModel

from ..manifest import Feature, Task
from .v2_tensors import DATATYPES

Datatype = Literal[DATATYPES]  # type: ignore[valid-type]
Value = float | str | bool
Row = list[Value] | dict[str, Value]


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- errors ----------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. wrong_feature_count.")
    message: str = Field(description="What was wrong and what is expected.")
    details: dict[str, Any] | None = None


class Error(BaseModel):
    """The seed route's, V1's and the health routes' error shape."""

    error: ErrorDetail


class V2Error(BaseModel):
    """The Open Inference Protocol's error shape: one string (every ``/v2`` route)."""

    error: str


# --- seed and V1 -------------------------------------------------------------


class SeedRequest(Body):
    """``{"input": row}`` or ``{"input": [row, ...]}``; a row is values in schema order or
    an object keyed by feature name."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"input": [5.1, 3.5, 1.4, 0.2]}]})

    input: list[Value] | list[Row] | dict[str, Value]
    model: str | None = Field(None, description="Model name (default: PREDICTOR_DEFAULT_MODEL).")
    version: str | None = Field(None, description="Pin a version.")
    probabilities: bool | None = Field(None, description="Also return class probabilities.")


Probabilities = list[dict[str, float]]


class SeedResponse(BaseModel):
    prediction: list[Any] = Field(description="One value per row: labels or numbers.")
    model: str
    version: str
    probabilities: Probabilities | None = Field(
        None, description="Per row: probability of each class label."
    )


class PredictRequest(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"instances": [[5.1, 3.5, 1.4, 0.2]], "probabilities": True}]
        }
    )

    instances: list[Row] = Field(min_length=1)
    probabilities: bool | None = None


class PredictResponse(BaseModel):
    predictions: list[Any]
    model: str
    version: str
    probabilities: Probabilities | None = None


OutputKind = Literal["probability", "log_odds", "value"]


class ExplainRequest(PredictRequest):
    """The same body as ``:predict`` (``probabilities`` is accepted and ignored)."""

    output_kind: OutputKind | None = Field(
        None,
        description="What to explain: classifiers default to `probability` of the predicted "
        "class; `log_odds` for logistic regression and gradient boosting; `value` for "
        "regressors. A kind the model does not offer is a 400 listing the ones it does.",
    )


class RowExplanation(BaseModel):
    prediction: Any = Field(description="As :predict reports it (label or value).")
    output: float = Field(description="The number explained.")
    output_kind: OutputKind = Field(
        description="probability or log_odds of the predicted class; value for regressors."
    )
    base_value: float = Field(description="Expected output; base_value + sum = output.")
    contributions: list[float] = Field(description="One per feature, in `features` order.")
    method: Literal["linear", "tree_shap", "exact_shapley"] = Field(
        description="linear: closed form in log-odds/value; tree_shap: TreeSHAP; "
        "exact_shapley: every coalition of features enumerated against the background rows."
    )
    probability: float | None = Field(
        None, description="Classifiers: the predicted class's probability, as :predict has it."
    )


class ExplainResponse(BaseModel):
    model: str
    version: str
    features: list[str]
    explanations: list[RowExplanation]


class ModelVersion(BaseModel):
    version: str
    current: bool
    created: str | None = None
    estimator: str | None = None
    metrics: dict[str, float] | None = None
    sklearn_version: str | None = None
    compiled: dict[str, Any] | None = None


class Refused(BaseModel):
    version: str
    reason: str


class ModelDescription(BaseModel):
    name: str
    ready: bool
    current_version: str | None = None
    serving_version: str | None = None
    runtime: str | None = None
    runtime_reason: str | None = None
    versions: list[ModelVersion]
    refused: Refused | None = None
    problems: list[dict[str, str]] | None = Field(
        None, description="What is broken in the store for this model (pointer, manifests)."
    )
    task: Task | None = None
    estimator: str | None = None
    features: list[Feature] | None = None
    classes: list[Any] | None = Field(None, description="What predictions answer.")
    output_labels: list[str] | None = None
    metrics: dict[str, Any] | None = None
    sample_input: list[Any] | None = None
    description: str | None = None


class ModelList(BaseModel):
    models: list[ModelDescription]


# --- health ---------------------------------------------------------------


class Liveness(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready", "draining"]
    models: list[dict[str, Any]] | None = None
    unavailable: list[dict[str, Any]] | None = Field(
        None, description="Models that cannot serve (or serve an older version); not fatal."
    )


# --- V2 --------------------------------------------------------------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = Field(
        None, description="task, version; for classifiers classes and their labels."
    )


class ModelReady(BaseModel):
    name: str
    version: str | None = None
    ready: bool
    reason: str | None = Field(None, description="Why not, when not ready.")


class ConfigTensor(BaseModel):
    name: str
    data_type: str = Field(description="Triton's name, e.g. TYPE_FP64.")
    dims: list[int]


class ModelConfig(BaseModel):
    """A model configuration in Triton's vocabulary (``tritonclient`` ``get_model_config``)."""

    name: str
    versions: list[str]
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    parameters: dict[str, dict[str, str]]


class InputParameters(Body):
    binary_data_size: int | None = Field(
        None, ge=0, description="Binary tensor extension: this many raw bytes after the JSON."
    )


class InferInput(Body):
    name: str = Field(min_length=1, description="input-0 for one [N, F] tensor, or a feature.")
    shape: list[NonNegativeInt] = Field(min_length=1)
    datatype: Datatype
    data: list[Any] | None = Field(None, description="Row-major, flat or nested.")
    parameters: InputParameters | None = None


class OutputParameters(Body):
    binary_data: bool | None = None
    output_kind: OutputKind | None = Field(
        None,
        description="`explanation` only: as `:explain`'s output_kind (default: probability "
        "of the predicted class for classifiers).",
    )


class RequestedOutput(Body):
    name: Literal["predict", "predict_proba", "explanation"] = Field(
        description="`explanation`: a BYTES [N] tensor, each element a V2Explanation as JSON."
    )
    parameters: OutputParameters | None = None


class V2Explanation(BaseModel):
    """One element of the `explanation` output (a JSON string in a BYTES tensor)."""

    prediction: Any = Field(description="The class value the `predict` output carries.")
    label: str | None = Field(None, description="Classifiers: its display label.")
    output: float = Field(description="The number explained: base_value + sum(contributions).")
    output_kind: OutputKind
    base_value: float
    contributions: list[float] = Field(description="One per feature, in `features` order.")
    features: list[str]
    method: Literal["linear", "tree_shap", "exact_shapley"]
    probability: float | None = Field(
        None, description="Classifiers: the predicted class's probability (predict_proba)."
    )


class RequestParameters(Body):
    binary_data_output: bool | None = None


class InferRequest(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
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
                {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [1, 4],
                            "datatype": "FP64",
                            "data": [5.1, 3.5, 1.4, 0.2],
                        }
                    ],
                    "outputs": [{"name": "predict"}, {"name": "explanation"}],
                },
            ]
        }
    )

    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None
    parameters: RequestParameters | None = None


class InferOutput(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferOutput]


class Duration(BaseModel):
    count: int
    ns: int


class InferenceStats(BaseModel):
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


class ModelStats(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="ms since the epoch of the last success (0: none).")
    inference_count: int = Field(description="Rows predicted.")
    execution_count: int = Field(description="Runtime calls (rows the cache did not answer).")
    inference_stats: InferenceStats
    batch_stats: list[dict[str, Any]]


class Statistics(BaseModel):
    """The statistics extension's answer, summed over every worker."""

    model_stats: list[ModelStats]


# --- repository ---------------------------------------------------------------


class RepositoryOptions(Body):
    ready: bool | None = Field(None, description="index: list only READY models.")
    parameters: dict[str, Any] | None = Field(None, description="load: not supported.")


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE", "LOADING"]
    reason: str


class RepositoryIndex(RootModel[list[RepositoryEntry]]):
    pass


class RepositoryAction(BaseModel):
    name: str
    version: str | None = None
    state: Literal["READY", "UNAVAILABLE"]
