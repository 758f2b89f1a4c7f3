"""The manifest: what a published model version is, as written next to its artifact."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FeatureType = Literal["float", "int", "bool", "string"]
Task = Literal["classification", "regression"]
ArtifactFormat = Literal["skops", "joblib"]

MANIFEST_FILE = "manifest.json"


class Feature(BaseModel):
    """One input column, in schema order."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: FeatureType = "float"
    minimum: float | None = Field(None, description="Smallest value seen in training.")
    maximum: float | None = Field(None, description="Largest value seen in training.")
    categories: list[str] | None = Field(None, description="Values seen for a string feature.")
    nullable: bool = Field(
        False,
        description="Missing values (null, NaN) are accepted: the data had them, or the "
        "estimator predicts a row with NaN here.",
    )
    missing_rate: float | None = Field(
        None, description="Share of the publish data's rows missing this feature."
    )


class CompiledRecord(BaseModel):
    """How compiling the estimator for a compiled runtime went (``Manifest.compiled``).

    Written at publish by the compiled runtime (service/runtimes/), read back at
    load to decide whether its artifact may serve. Every field has a default and
    unknown keys are kept, so manifests written before or after this model load.
    """

    model_config = ConfigDict(extra="allow")

    ok: bool = Field(False, description="Verified equal to the estimator: it may serve.")
    runtime: str = Field("sklearn", description="The runtime it serves with after publish.")
    rows_checked: int = 0
    mismatches: int = Field(0, description="Rows whose class or values differ.")
    max_abs_diff: float | None = Field(None, description="Largest difference (null: NaN/inf).")
    tolerance: float | None = None
    input_dtype: str | None = Field(None, description="float32 | float64 | mixed.")
    converter: str | None = Field(None, description='e.g. "skl2onnx 1.20.0".')
    runtime_version: str | None = Field(None, description='e.g. "onnxruntime 1.31.1".')
    reason: str | None = Field(None, description="Why it cannot serve compiled.")
    rows_by_source: dict[str, int] = Field(default_factory=dict)
    seed: int | None = None
    unknown_categories: str | None = None
    artifact: str | None = Field(None, description="File of the compiled artifact, when ok.")
    sha256: str | None = Field(None, description="Digest of that file (signed).")


class Manifest(BaseModel):
    """Everything the service needs to verify, load, validate for and describe a version."""

    # validate_assignment: a record assigned as a plain dict still becomes a CompiledRecord.
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str
    version: str
    format: ArtifactFormat
    artifact: str = Field(description="File name of the artifact inside the version directory.")
    sha256: str
    signature: str | None = Field(None, description="HMAC-SHA256 of the signed fields, hex.")
    trusted_types: list[str] = Field(default_factory=list, description="skops types trusted.")
    sklearn_version: str = Field(
        description="scikit-learn version the model was trained with (stored in its file)."
    )
    publisher_sklearn_version: str | None = Field(
        None, description="scikit-learn version that published (and re-saved) the artifact."
    )
    estimator: str = Field(description="Class name of the fitted estimator or pipeline.")
    task: Task
    features: list[Feature]
    classes: list[Any] | None = Field(None, description="estimator.classes_, for classifiers.")
    output_labels: list[str] | None = Field(None, description="Names of classes, same order.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out metrics.")
    sample_input: list[list[Any]] = Field(description="Rows a smoke test predicts before serving.")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    description: str = ""
    data: dict[str, Any] | None = Field(
        None, description="The data the schema, metrics and verification came from."
    )
    compiled: CompiledRecord | None = Field(
        None, description="Outcome of compiling for a compiled runtime and verifying it."
    )

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def signed_fields(self) -> bytes:
        """The bytes a publisher signs: identity, digest and what the loader will trust."""
        parts = [self.name, self.version, self.format, self.sha256, ",".join(self.trusted_types)]
        compiled = self.compiled.sha256 if self.compiled else None
        if compiled:
            parts.append(compiled)
        return "\n".join(parts).encode()

    def write(self, directory: Path) -> None:
        (directory / MANIFEST_FILE).write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.model_validate_json((directory / MANIFEST_FILE).read_bytes())
