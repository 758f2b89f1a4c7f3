"""Ask an in-process app the same rows over every protocol; used by the publish tests.

Each function answers ``(predictions, probabilities)`` for rows given as lists of
JSON values in schema order (``None`` for a missing value), so a test can
compare every protocol with ``estimator.predict`` row by row.
"""

from __future__ import annotations

from typing import Any

V2_TYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


def _ok(response) -> dict:  # noqa: ANN001 - a Flask test response
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()


def seed(client, name: str, rows: list[list[Any]]) -> tuple[list, list | None]:  # noqa: ANN001
    body = _ok(client.post("/predict", json={"model": name, "input": rows, "probabilities": True}))
    return body["prediction"], body.get("probabilities")


def v1_ordered(client, name: str, rows: list[list[Any]]) -> tuple[list, list | None]:  # noqa: ANN001
    url = f"/v1/models/{name}:predict"
    body = _ok(client.post(url, json={"instances": rows, "probabilities": True}))
    return body["predictions"], body.get("probabilities")


def v1_named(  # noqa: ANN001
    client, name: str, rows: list[list[Any]], features: list[str]
) -> tuple[list, list | None]:
    named = [dict(zip(features, row, strict=True)) for row in rows]
    url = f"/v1/models/{name}:predict"
    body = _ok(client.post(url, json={"instances": named, "probabilities": True}))
    return body["predictions"], body.get("probabilities")


def v2(  # noqa: ANN001
    client, name: str, rows: list[list[Any]], features: list[dict], with_proba: bool
) -> tuple[list, list | None]:
    """One tensor per feature (its own datatype; ``null`` elements for missing values)."""
    inputs = [
        {
            "name": f["name"],
            "datatype": V2_TYPES[f.get("type", "float")],
            "shape": [len(rows)],
            "data": [row[j] for row in rows],
        }
        for j, f in enumerate(features)
    ]
    outputs = [{"name": "predict"}] + ([{"name": "predict_proba"}] if with_proba else [])
    body = _ok(client.post(f"/v2/models/{name}/infer", json={"inputs": inputs, "outputs": outputs}))
    by_name = {o["name"]: o for o in body["outputs"]}
    proba = by_name.get("predict_proba")
    return by_name["predict"]["data"], (proba["data"] if proba else None)


def explain_v1(client, name: str, rows: list[list[Any]]) -> tuple[int, Any]:  # noqa: ANN001
    """(status, per-row explanations) of ``:explain``, or (status, error message)."""
    response = client.post(f"/v1/models/{name}:explain", json={"instances": rows})
    body = response.get_json()
    if response.status_code != 200:
        return response.status_code, body["error"]["message"]
    return 200, body["explanations"]


def explain_v2(  # noqa: ANN001
    client, name: str, rows: list[list[Any]], features: list[dict]
) -> tuple[int, Any]:
    """(status, decoded rows of the ``explanation`` output), or (status, error message)."""
    import json

    inputs = [
        {
            "name": f["name"],
            "datatype": V2_TYPES[f.get("type", "float")],
            "shape": [len(rows)],
            "data": [row[j] for row in rows],
        }
        for j, f in enumerate(features)
    ]
    body = {"inputs": inputs, "outputs": [{"name": "explanation"}]}
    response = client.post(f"/v2/models/{name}/infer", json=body)
    if response.status_code != 200:
        return response.status_code, response.get_json()["error"]
    return 200, [json.loads(e) for e in response.get_json()["outputs"][0]["data"]]
