"""Demo models from datasets that ship with scikit-learn (no download needed)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

from .manifest import Feature, Manifest
from .publish import CONFIGURED_KEY, publish_estimator, ranges_from_data
from .store import ModelStore

SEED = 0


def _classifier_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "f1_macro": round(float(f1_score(y_true, y_pred, average="macro")), 4),
    }


def train_demo(store: ModelStore, signing_key: bytes | None = CONFIGURED_KEY) -> list[Manifest]:
    """Train, publish and promote iris (LogisticRegression), iris-rf and diabetes.

    Signed with the configured key (the local one is created when none is set).
    """
    published = []
    iris = load_iris()
    # Species names are the classes, so every protocol answers "setosa", as predict() does.
    species = iris.target_names[iris.target].astype(object)
    X_train, X_test, y_train, y_test = train_test_split(
        iris.data, species, test_size=0.25, random_state=SEED, stratify=species
    )
    features = ranges_from_data([Feature(name=n) for n in iris.feature_names], X_train)
    for name, estimator, description in (
        ("iris", LogisticRegression(max_iter=1000), "Iris species, logistic regression"),
        (
            "iris-rf",
            RandomForestClassifier(n_estimators=100, random_state=SEED),
            "Iris species, 100-tree random forest",
        ),
    ):
        estimator.fit(X_train, y_train)
        published.append(
            publish_estimator(
                store,
                estimator,
                name=name,
                features=features,
                metrics=_classifier_metrics(y_test, estimator.predict(X_test)),
                # 30 held-out rows of all three species: the background explanations are
                # measured against (two rows of one species would make every base value ~1 or ~0).
                sample_input=X_test[:30].tolist(),
                held_out=X_test,
                signing_key=signing_key,
                description=description,
                promote=True,
            )
        )

    diabetes = load_diabetes()
    X_train, X_test, y_train, y_test = train_test_split(
        diabetes.data, diabetes.target, test_size=0.25, random_state=SEED
    )
    regressor = GradientBoostingRegressor(random_state=SEED).fit(X_train, y_train)
    predicted = regressor.predict(X_test)
    published.append(
        publish_estimator(
            store,
            regressor,
            name="diabetes",
            features=ranges_from_data([Feature(name=n) for n in diabetes.feature_names], X_train),
            metrics={
                "r2": round(float(r2_score(y_test, predicted)), 4),
                "mae": round(float(mean_absolute_error(y_test, predicted)), 4),
            },
            sample_input=X_test[:2].tolist(),
            held_out=X_test,
            signing_key=signing_key,
            description="Diabetes progression after one year, gradient boosting",
            promote=True,
        )
    )
    return published
