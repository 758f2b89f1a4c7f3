"""The compiled runtime: a verified ONNX graph run by onnxruntime.

Implements the same ``run`` as ``SklearnRuntime`` (runtimes/sklearn.py): the
validated 2-D array in, the estimator's raw predictions (and class
probabilities on request) out. It needs the graph, the feature schema, the
task and the class list from the manifest, never the pickled estimator.

The graph's inputs are described by metadata that compile.py writes into
it (``predictor.columns``): one input "X" holding every column, or one
``[N, 1]`` input per feature when some features are strings (skl2onnx's
layout for a ColumnTransformer over a DataFrame).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import Capabilities, CompiledRuntime, register

if TYPE_CHECKING:
    from ...manifest import CompiledRecord, Feature, Manifest
    from ...settings import Settings

ARTIFACT = "model.onnx"

_NUMPY_OF_ONNX = {
    "tensor(double)": np.float64,
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(string)": object,
}


def _feature_fields(feature: Any) -> tuple[str, str]:
    if isinstance(feature, dict):
        return feature["name"], feature.get("type", "float")
    return feature.name, feature.type


@register
class OnnxRuntime(CompiledRuntime):
    """Runs a compiled graph; the session is created on first use in each process.

    >>> rt = OnnxRuntime(onnx_bytes, manifest.features, "classification", manifest.classes)
    >>> predictions, proba = rt.run(rows, with_proba=True)

    ``intra_op_threads`` sizes onnxruntime's pool for one call; with one
    gunicorn worker per core keep it at 1 (also the setting under which tree
    sums are bit-identical to scikit-learn's).
    """

    name = "onnx"
    # NaN passes through to the graph; usable() still requires that verification at
    # publish included missing values for every nullable feature.
    capabilities = Capabilities(
        probabilities=True, missing_values=True, needs_estimator=False, auto=True
    )

    def __init__(
        self,
        onnx_bytes: bytes,
        features: list[Any],
        task: str,
        classes: list | None,
        intra_op_threads: int = 1,
    ) -> None:
        self.onnx_bytes = onnx_bytes
        self.features = [_feature_fields(f) for f in features]
        self.task = task
        self.is_classifier = task == "classification"
        self.intra_op_threads = intra_op_threads
        self.classes = None if classes is None else _class_array(classes)
        self._meta = _metadata(onnx_bytes)  # also rejects bytes that are not a model, early
        self.input_dtype = self._meta.get("predictor.input_dtype")
        self.has_proba = (
            self.is_classifier and self._meta.get("predictor.has_proba", "true") == "true"
        )
        self._session: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    # --- the runtime interface ----------------------------------------------

    @classmethod
    def usable(cls, manifest: Manifest) -> tuple[bool, str]:
        """Only a graph verified at publish, by the onnxruntime this process runs."""
        record = manifest.compiled
        if not record:
            return False, "no compiled graph was published"
        if not record.ok or not record.sha256:
            if not record.rows_checked and record.reason:  # never compiled (e.g. no data)
                return False, record.reason
            return False, f"the graph failed verification at publish: {record.reason}"
        nullable = [f.name for f in manifest.features if f.nullable]
        checked = set(getattr(record, "missing_values_verified", None) or [])
        unchecked = [n for n in nullable if n not in checked]
        if unchecked:
            return False, (
                f"the graph was not verified on missing values of {', '.join(unchecked)}, "
                "which may be missing"
            )
        from .verify import runtime_version

        if record.runtime_version != runtime_version():
            return False, (
                f"the graph was verified with {record.runtime_version}, "
                f"this service runs {runtime_version()}"
            )
        return True, ""

    @classmethod
    def load(cls, version_dir: Path, manifest: Manifest, settings: Settings) -> OnnxRuntime:
        """The signed, digest-checked graph; the estimator is never unpickled."""
        from ...artifacts import artifact_path, check_digest, check_signature
        from .safety import check_graph

        record = manifest.compiled
        assert record is not None and record.sha256  # usable() said so
        path = artifact_path(version_dir, manifest, record.artifact or ARTIFACT)
        check_digest(path, record.sha256)
        check_signature(manifest, settings.signing_key)
        graph = path.read_bytes()
        check_graph(graph)  # no external data, no foreign operator domain: before onnxruntime
        return cls(
            graph,
            manifest.features,
            manifest.task,
            manifest.classes,
            intra_op_threads=1,
        )

    @classmethod
    def compile(
        cls,
        estimator: Any,
        features: list[Feature],
        *,
        task: str,
        sample_rows: list[list[Any]],
        held_out: Any,
        directory: Path,
        rows_by_source: dict[str, np.ndarray] | None = None,
    ) -> CompiledRecord:
        """Convert to ONNX and verify it against the estimator; write ``model.onnx`` if ok."""
        from ...manifest import CompiledRecord
        from ...signing import file_sha256
        from .compile import compile_estimator

        graph, verification = compile_estimator(
            estimator,
            features,
            task=task,
            sample_rows=sample_rows,
            held_out=held_out,
            rows_by_source=rows_by_source,
        )
        record = CompiledRecord(**verification.to_dict())
        # Which nullable features the rows really left missing: only those may serve compiled.
        record.missing_values_verified = _missing_checked(features, rows_by_source)
        if graph is not None:
            path = directory / ARTIFACT
            path.write_bytes(graph)
            record.artifact, record.sha256 = path.name, file_sha256(path)
        return record

    @classmethod
    def verify(
        cls, artifact: bytes, estimator: Any, features: list[Feature], task: str, rows: Any
    ) -> CompiledRecord:
        from ...manifest import CompiledRecord
        from .verify import verify_graph

        return CompiledRecord(**verify_graph(artifact, estimator, features, task, rows).to_dict())

    # --- session -----------------------------------------------------------

    def _ensure_session(self) -> None:
        """Create the session once per process (after gunicorn forks, not before)."""
        if self._session is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._session is not None and self._pid == os.getpid():
                return
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.intra_op_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # Idle workers must not spin on the cores other workers need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(
                self.onnx_bytes, options, providers=["CPUExecutionProvider"]
            )
            self._configure(session)
            self._session = session
            self._pid = os.getpid()

    def _configure(self, session: Any) -> None:
        meta = self._meta
        inputs = session.get_inputs()
        outputs = [o.name for o in session.get_outputs()]
        if "predictor.columns" in meta:
            columns = json.loads(meta["predictor.columns"])
        elif len(inputs) == 1:
            columns = [list(range(len(self.features)))]
        else:
            columns = [[j] for j in range(len(inputs))]
        if len(columns) != len(inputs):
            raise ValueError(f"graph has {len(inputs)} inputs, metadata describes {len(columns)}")
        # (input name, indices of the validated columns it takes, numpy dtype)
        self._feeds = [
            (inp.name, cols, _NUMPY_OF_ONNX.get(inp.type, np.float64))
            for inp, cols in zip(inputs, columns, strict=True)
        ]
        self._single = len(inputs) == 1 and columns[0] == list(range(len(self.features)))
        self._has_proba = self.has_proba and len(outputs) > 1
        self._outputs_label = outputs[:1]
        self._outputs_both = outputs[:2] if self._has_proba else outputs[:1]
        self._label_map = None
        if self.is_classifier and self.classes is not None:
            self._label_map = _label_map(self.classes, session.get_outputs()[0].type)

    # --- prediction --------------------------------------------------------

    def _inputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        if self._single:
            name, _, dtype = self._feeds[0]
            return {name: np.ascontiguousarray(X, dtype=dtype)}
        feeds = {}
        for name, cols, dtype in self._feeds:
            block = X[:, cols]
            if dtype is object:
                if block.dtype != object:
                    block = block.astype(str).astype(object)
                feeds[name] = np.ascontiguousarray(block)
            else:
                feeds[name] = np.ascontiguousarray(block, dtype=dtype)
        return feeds

    def run(self, X: np.ndarray, with_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for each row of the validated array, and probabilities if asked.

        Classifiers answer the estimator's own class values (as ``predict``
        would) and probabilities as float64 in class order; regressors a 1-D
        float64 array.
        """
        self._ensure_session()
        wanted = self._outputs_both if with_proba else self._outputs_label
        result = self._session.run(wanted, self._inputs(X))
        if not self.is_classifier:
            return np.asarray(result[0], dtype=np.float64).reshape(-1), None
        labels = result[0].reshape(-1)
        if self._label_map is not None:
            labels = self._label_map(labels)
        proba = None
        if with_proba and self._has_proba:
            proba = np.asarray(result[1], dtype=np.float64)
        return labels, proba


def _metadata(onnx_bytes: bytes) -> dict[str, str]:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return {p.key: p.value for p in model.metadata_props}


def _class_array(classes: list) -> np.ndarray:
    """The classes as scikit-learn holds them: strings in an object array."""
    if any(isinstance(c, str) for c in classes):
        out = np.empty(len(classes), dtype=object)
        out[:] = list(classes)
        return out
    return np.asarray(classes)


def _label_map(classes: np.ndarray, label_type: str):
    """A function from the graph's label values to the estimator's class values.

    skl2onnx writes integer classes (and bools) as int64 and string classes as
    strings, in ``classes_`` order; anything that already equals the class
    values passes through untouched.
    """
    if label_type == "tensor(string)":
        if classes.dtype == object and all(isinstance(c, str) for c in classes):
            return None
        keys = np.array([str(c) for c in classes], dtype=object)
    else:
        if classes.dtype.kind in "iu":
            return None
        keys = classes.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]

    def to_classes(labels: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(sorted_keys, labels)
        pos = np.minimum(pos, len(sorted_keys) - 1)
        if not np.all(sorted_keys[pos] == labels):
            raise ValueError(f"the graph returned labels not among the classes {list(classes)}")
        return classes[order[pos]]

    return to_classes


def _missing_checked(
    features: list[Any], rows_by_source: dict[str, np.ndarray] | None
) -> list[str]:
    """Names of the features the verification rows held missing values (NaN) for."""
    if not rows_by_source:
        return []
    out = []
    for j, f in enumerate(features):
        name = f["name"] if isinstance(f, dict) else f.name
        for block in rows_by_source.values():
            if not len(block):
                continue
            column = block[:, j]
            if column.dtype == object:
                missing = any(isinstance(v, float) and v != v for v in column.tolist())
            else:
                missing = bool(np.isnan(column.astype(np.float64)).any())
            if missing:
                out.append(name)
                break
    return out
