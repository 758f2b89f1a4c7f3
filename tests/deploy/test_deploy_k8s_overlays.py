"""The overlays as a user meets them: dev runs the image `make image` and compose build;
prod's site values live in one commented file that docs/deploy.md lists, and
`make k8s-render` warns on stderr while any is a placeholder (stdout stays valid);
the s3 overlay serves from S3 with no volume claim and the AWS variables boto3 reads.
(tests/deploy/test_deploy_k8s.py renders and validates every overlay strictly.)
"""

from __future__ import annotations

import os
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy.test_deploy_k8s import (
    K8S,
    K8S_VERSIONS,
    api,
    container,
    container_env,
    kustomize,
    one,
    render,
    settings_for,
)
from tests.helpers import REPO

SITE_VALUES = K8S / "overlays" / "prod" / "site-values.yaml"
S3_VALUES = K8S / "overlays" / "s3" / "s3-store.env"
DOCS = REPO / "docs" / "deploy.md"


def make_variable(name: str) -> str:
    """A variable's value as make itself resolves it (its database, nothing run)."""
    env = {k: v for k, v in os.environ.items() if k not in (name, "MAKEFLAGS")}
    proc = subprocess.run(
        ["make", "-pnq", "-f", "Makefile", "--no-print-directory"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    (value,) = re.findall(rf"^{name} [:?]?= (.*)$", proc.stdout, re.M)
    return value.strip()


# --- dev: the image that is built is the image that runs --------------------------------


def test_dev_overlay_runs_the_image_make_image_and_compose_build() -> None:
    from tests.deploy.test_deploy_config import service

    built = make_variable("IMAGE")
    compose_image = service("api")["image"]  # compose builds and tags this
    deployment = api(render("dev"))
    images = {
        c["image"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
        + deployment["spec"]["template"]["spec"].get("initContainers", [])
    }
    assert images == {built} == {compose_image}, (images, built, compose_image)
    # A locally built image (kind load, minikube image load) is used, never pulled.
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        assert c["imagePullPolicy"] == "IfNotPresent"


def test_dev_overlay_answers_any_host() -> None:
    (rule,) = one(render("dev"), "Ingress")["spec"]["rules"]
    assert "host" not in rule


# --- prod: one file of site values, listed in the docs, warned about --------------------


def _site_values() -> dict[str, str]:
    return yaml.safe_load(SITE_VALUES.read_text())["data"]


def _commented_keys(path, pattern: str, after: str = "") -> dict[str, bool]:
    """Each key of the file (after the line ``after``), and whether a comment precedes it."""
    lines = path.read_text().splitlines()
    if after:
        lines = lines[lines.index(after) + 1 :]
    out = {}
    for i, line in enumerate(lines):
        m = re.match(pattern, line)
        if m:
            out[m.group(1)] = i > 0 and lines[i - 1].strip().startswith("#")
    return out


def test_every_site_value_has_a_comment_and_is_in_the_docs() -> None:
    docs = DOCS.read_text()
    yaml_keys = _commented_keys(SITE_VALUES, r"^  (\w+): ", after="data:")
    env_keys = _commented_keys(S3_VALUES, r"^(\w+)=")
    assert set(yaml_keys) == set(_site_values()) == {"image", "host", "tlsSecret", "storageClass"}
    for key, commented in {**yaml_keys, **env_keys}.items():
        assert commented, f"{key}: no comment says what to put there"
        assert f"`{key}`" in docs, f"{key} is not listed in docs/deploy.md"
    assert "site-values.yaml" in docs and "s3-store.env" in docs


def test_every_site_value_reaches_the_manifests() -> None:
    text = yaml.safe_dump_all(render("prod"))
    for key, value in _site_values().items():
        assert value in text, f"{key}={value} is not used by the prod overlay"
    assert "site-values" not in text, "the values file itself is never applied"


def test_replacing_the_site_values_replaces_them_everywhere(tmp_path) -> None:
    """What a user does: edit site-values.yaml. Nothing of the shipped values remains."""
    copy = tmp_path / "k8s"
    subprocess.run(["cp", "-a", str(K8S), str(copy)], check=True)
    mine = {
        "image": "ghcr.io/acme/predictor-api:1.4.2",
        "host": "predict.acme.io",
        "tlsSecret": "acme-tls",
        "storageClass": "efs-rwx",
    }
    values = yaml.safe_load(SITE_VALUES.read_text())
    values["data"] = mine
    (copy / "overlays" / "prod" / "site-values.yaml").write_text(yaml.safe_dump(values))
    docs = kustomize(copy / "overlays" / "prod")
    text = yaml.safe_dump_all(docs)
    assert "example" not in text
    c = container(api(docs), "api")
    assert c["image"] == mine["image"]
    ingress = one(docs, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == mine["host"]
    assert ingress["spec"]["tls"] == [{"hosts": [mine["host"]], "secretName": "acme-tls"}]
    assert one(docs, "PersistentVolumeClaim")["spec"]["storageClassName"] == "efs-rwx"


def _render_with_make(overlay: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "k8s-render", f"OVERLAY={overlay}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MAKEFLAGS": ""},
    )  # fmt: skip


@pytest.mark.parametrize("overlay", ["prod", "s3"])
def test_k8s_render_warns_while_placeholders_remain(overlay: str) -> None:
    proc = _render_with_make(overlay)
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "placeholder" in proc.stderr
    for value in ("registry.example.com/predictor/predictor-api:0.1.0", "predictor.example.com"):
        assert value in proc.stderr
    assert "k8s/overlays/prod/site-values.yaml" in proc.stderr
    if overlay == "s3":
        assert "s3://example-bucket/predictor" in proc.stderr and "s3-store.env" in proc.stderr
        assert "example-rwx" not in proc.stderr, "the s3 overlay has no volume claim"
    else:
        assert "example-rwx" in proc.stderr
    # stdout is the manifests, unchanged and valid.
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs == render(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


def test_k8s_render_is_quiet_for_an_overlay_that_runs_as_it_is() -> None:
    proc = _render_with_make("dev")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    assert [d for d in yaml.safe_load_all(proc.stdout) if d] == render("dev")


# --- s3: no ReadWriteMany volume ---------------------------------------------------------


def test_s3_overlay_has_no_volume_claim_and_no_init_step() -> None:
    docs = render("s3")
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pod = api(docs)["spec"]["template"]["spec"]
    assert not pod.get("initContainers")
    for volume in pod["volumes"]:
        assert "persistentVolumeClaim" not in volume, volume["name"]
    names = {v["name"] for v in pod["volumes"]}
    for c in pod["containers"]:
        assert {m["name"] for m in c["volumeMounts"]} <= names
    # Nothing left over from the volume store.
    cms = {d["metadata"]["name"].rsplit("-", 1)[0] for d in docs if d["kind"] == "ConfigMap"}
    assert not cms & {"predictor-served-models", "predictor-select-models"}


def test_s3_overlay_serves_from_s3_with_credentials_from_a_secret() -> None:
    docs = render("s3")
    c = container(api(docs), "api")
    env = container_env(docs, c)
    settings = settings_for(env)
    assert str(settings.MODEL_STORE).startswith("s3://")
    # The store URI and endpoint come from the overlay's ConfigMap, not the pod template.
    (store_cm,) = [
        d for d in docs if d["kind"] == "ConfigMap" and "PREDICTOR_MODEL_STORE" in d["data"]
    ]
    assert store_cm["data"]["AWS_ENDPOINT_URL"].startswith(("http://", "https://"))
    refs = [s["configMapRef"]["name"] for s in c["envFrom"]]
    assert store_cm["metadata"]["name"] in refs
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secrets)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert secrets[name] == {"name": "predictor-s3", "key": name}
        assert name not in env, "a credential never sits in a ConfigMap or the template"
    assert "predictor-s3" in DOCS.read_text()


def _aws_names() -> set[str]:
    """Every AWS_* environment variable botocore (boto3's configuration) names in its
    configuration and credential providers."""
    import inspect

    import botocore.configprovider
    import botocore.credentials

    names: set[str] = set()
    for module in (botocore.configprovider, botocore.credentials):
        names.update(re.findall(r"['\"](AWS_[A-Z0-9_]+)['\"]", inspect.getsource(module)))
    return names


def test_s3_overlay_env_names_are_the_ones_the_store_and_boto3_read() -> None:
    docs = render("s3")
    c = container(api(docs), "api")
    names = set(container_env(docs, c)) | {e["name"] for e in c["env"]}
    aws = {n for n in names if n.startswith("AWS_")}
    assert aws >= {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    unknown = aws - _aws_names()
    assert not unknown, f"boto3 never reads {unknown}"
    # The store itself switches to path-style addressing on this very variable.
    assert "AWS_ENDPOINT_URL" in (REPO / "service" / "store_s3.py").read_text()
    fields = set(Settings.model_fields)
    for n in names:
        if n.startswith("PREDICTOR_"):
            assert n.removeprefix("PREDICTOR_") in fields, n


def test_s3_overlay_lets_the_api_reach_the_endpoint() -> None:
    docs = render("s3")
    policy = one(docs, "NetworkPolicy", "predictor-api")
    endpoint = next(
        d["data"]["AWS_ENDPOINT_URL"]
        for d in docs
        if d["kind"] == "ConfigMap" and "AWS_ENDPOINT_URL" in d.get("data", {})
    )
    port = (
        int(endpoint.rpartition(":")[2])
        if endpoint.count(":") == 2
        else (443 if endpoint.startswith("https") else 80)
    )
    allowed = {p["port"] for e in policy["spec"]["egress"] for p in e.get("ports", [])}
    assert port in allowed, f"egress to the S3 endpoint port {port} is not allowed"
