"""KServe's model directory into a local model store, through the verifying publish path.

KServe's storage initializer downloads an InferenceService's ``storageUri`` into
``/mnt/models`` and starts the serving runtime with ``--model_name`` and
``--model_dir``: one ``model.joblib`` / ``.pkl`` / ``.pickle`` / ``.skops`` file, no
manifest. ``import_model_dir`` turns it into version 1 of a store of our own, so
the server serves it like any published version (schema, smoke test, signature,
metrics), under the InferenceService's name.

Trust is decided here, once, before anything is deserialised:
- a skops file loads with the allow-list of service/trust.py plus the types the
  runtime was told to trust (``--trust``); nothing else is constructed;
- a joblib/pickle file runs whatever code it holds when it is loaded, and a KServe
  model directory carries no signature: it is refused, unread, unless the runtime
  is told otherwise (``PREDICTOR_ALLOW_UNSIGNED_PICKLE=true``).
The imported version is then signed with the pod's key (the configured one, or one
created at start), so the workers verify exactly the files this import checked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .manifest import Manifest

log = logging.getLogger("predictor.kserve")

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
SKOPS_SUFFIX = ".skops"
MODEL_SUFFIXES = (*PICKLE_SUFFIXES, SKOPS_SUFFIX)
IMPORTED_VERSION = "1"


class ImportRefused(Exception):
    """The model directory cannot be served; the message says why and what to do."""


def find_model_file(model_dir: Path) -> Path:
    """The one model file of a KServe model directory (as KServe's sklearn server looks)."""
    if not model_dir.is_dir():
        raise ImportRefused(f"model directory {model_dir} does not exist or is not a directory")
    found = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
    if not found:
        present = sorted(p.name for p in model_dir.iterdir())[:10]
        raise ImportRefused(
            f"no model file in {model_dir}: expected one of model{', model'.join(MODEL_SUFFIXES)}"
            f", found {present or 'nothing'}"
        )
    if len(found) > 1:
        raise ImportRefused(
            f"more than one model file in {model_dir}: {[p.name for p in found]}; keep exactly one"
        )
    return found[0]


def feature_names(estimator: Any) -> list[str]:
    """The estimator's own feature names, else x0..x{n-1} (KServe instances are positional)."""
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None:
        return [str(n) for n in fitted]
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None:
        raise ImportRefused("cannot tell how many features the model takes: is it fitted?")
    return [f"x{i}" for i in range(int(n_in))]


def import_model_dir(
    model_dir: Path | str,
    name: str,
    store_dir: Path | str,
    *,
    signing_key: bytes,
    allow_unsigned_pickle: bool = False,
    trust: tuple[str, ...] | list[str] = (),
    allow_version_mismatch: bool = False,
) -> Manifest:
    """Publish the model file of ``model_dir`` as ``name`` version 1 of ``store_dir``; current."""
    from .publish import (
        PublishError,
        check_estimator,
        check_version,
        publish_model,
        read_model_file,
    )
    from .store import ModelStore, check_name

    model_dir = Path(model_dir)
    path = find_model_file(model_dir)
    try:
        check_name("model", name)
    except Exception as exc:  # a PredictorError: the name KServe passed is unusable
        raise ImportRefused(f"--model_name {name!r}: {getattr(exc, 'message', exc)}") from None
    if path.suffix in PICKLE_SUFFIXES and not allow_unsigned_pickle:
        # Refused before a byte is read: unpickling is running the file's code.
        raise ImportRefused(
            f"refused {path}: an unsigned joblib/pickle file runs whatever code it holds when "
            "it loads, and a KServe model directory carries no signature. Save the model with "
            "skops.io.dump as model.skops, or set PREDICTOR_ALLOW_UNSIGNED_PICKLE=true on the "
            "runtime if you trust everyone who can write the storageUri"
        )
    if path.suffix in PICKLE_SUFFIXES:
        log.warning("loading the unsigned pickle %s (PREDICTOR_ALLOW_UNSIGNED_PICKLE is on)", path)
    try:
        estimator, trained = read_model_file(path, trust=list(trust))
        check_estimator(estimator, str(path))
        check_version(trained, allow_version_mismatch)
        store = ModelStore(Path(store_dir))
        if IMPORTED_VERSION in store.versions(name):
            # A restarted container finds its own import: publish it afresh.
            import shutil

            shutil.rmtree(store.version_dir(name, IMPORTED_VERSION))
        manifest = publish_model(
            estimator,
            name=name,
            store=store,
            version=IMPORTED_VERSION,
            features=feature_names(estimator),
            artifact_format="skops" if path.suffix == SKOPS_SUFFIX else "joblib",
            signing_key=signing_key,
            trust=trust,
            description=f"imported from the KServe model directory ({path.name})",
            promote=True,
            trained_sklearn_version=trained,
            allow_version_mismatch=allow_version_mismatch,
        )
    except PublishError as exc:
        raise ImportRefused(str(exc)) from exc
    log.info("imported %s from %s as %s version %s", path.name, model_dir, name, manifest.version)
    return manifest
