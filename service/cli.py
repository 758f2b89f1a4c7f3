"""``predictor``: train the demo models, publish, list, promote, roll back, serve.

Every failure is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import runtimes
from .errors import ArtifactRejected, PredictorError
from .manifest import CompiledRecord, FeatureType
from .settings import Settings
from .store import ModelStore


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1 (2 for usage)."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (CliError, PredictorError, ArtifactRejected, OSError, ValueError) as exc:
        message = exc.message if isinstance(exc, PredictorError) else str(exc)
        print(f"predictor {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="predictor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--store",
            type=Path,
            default=None,
            help="model store directory (default: $PREDICTOR_MODEL_STORE or ./models)",
        )
        p.set_defaults(func=func)
        return p

    command(
        "train-demo", _train_demo, "train and publish the demo models (iris, iris-rf, diabetes)"
    )

    p = command(
        "publish", _publish, "publish a fitted estimator or Pipeline (joblib or skops file)"
    )
    p.add_argument("file", type=Path, help="a .joblib/.pkl or .skops file holding a fitted model")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--version", help="version (default: next integer)")
    p.add_argument(
        "--features",
        help="comma-separated feature names in input order, each optionally name:type "
        "(float, int, bool, string); default: the estimator's feature_names_in_",
    )
    p.add_argument("--labels", help="comma-separated output label names, in classes_ order")
    p.add_argument("--sample", help='JSON rows for the smoke test, e.g. "[[5.1, 3.5, 1.4, 0.2]]"')
    p.add_argument("--metrics", help='JSON object of held-out metrics, e.g. {"accuracy": 0.97}')
    p.add_argument(
        "--format",
        choices=["skops", "joblib"],
        default="skops",
        help="artifact format to store (default skops: loads without running pickled code)",
    )
    p.add_argument("--description", default="")
    p.add_argument("--promote", action="store_true", help="make it the current version")
    compiled = ", ".join(r.name for r in runtimes.compiled_runtimes()) or "none registered"
    p.add_argument(
        "--no-compile",
        action="store_true",
        help=f"skip compiling for the compiled runtimes ({compiled}); serve with the estimator",
    )

    p = command("models", _models, "list models, versions, current version and metrics")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("promote", _promote, "make VERSION the current version of NAME")
    p.add_argument("name")
    p.add_argument("version")

    p = command("rollback", _rollback, "return NAME to the version current before this one")
    p.add_argument("name")

    p = command("api-key", _api_key, "create an API key: prints the key once and its config entry")
    p.add_argument("action", choices=["new"], help="new: generate a random key")
    p.add_argument("id", help="a name for the key (logged; the key itself never is)")

    p = command("serve", _serve, "serve the store with gunicorn (settings from PREDICTOR_*)")
    p.add_argument("--bind", help="address to listen on (default $PREDICTOR_BIND)")
    p.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.store is not None:
        settings = settings.model_copy(update={"MODEL_STORE": args.store})
    return settings


def _store(args: argparse.Namespace) -> ModelStore:
    return ModelStore(_settings(args).MODEL_STORE)


def _train_demo(args: argparse.Namespace) -> int:
    from .demo import train_demo

    settings = _settings(args)
    for manifest in train_demo(ModelStore(settings.MODEL_STORE), settings.signing_key):
        print(
            f"published {manifest.name} version {manifest.version} "
            f"({manifest.estimator}, {_metrics_text(manifest.metrics)}) and made it current"
        )
        print(f"  {_compiled_text(manifest.compiled)}")
    return 0


def _compiled_text(record: CompiledRecord | None) -> str:
    if not record:
        return "not compiled: serves with scikit-learn"
    if record.ok:
        return (
            f"compiled for runtime {record.runtime}, verified on {record.rows_checked:,} rows: "
            f"{record.mismatches} mismatches, max diff {record.max_abs_diff or 0.0:.2g}"
        )
    return f"serves with scikit-learn: {record.reason}"


def _publish(args: argparse.Namespace) -> int:
    from .publish import PublishError, features_for, publish_estimator

    settings = _settings(args)
    estimator = _read_estimator(args.file)
    try:
        names, types = _parse_features(args.features)
        features = features_for(estimator, names)
        if types:
            features = [
                f.model_copy(update={"type": t}) for f, t in zip(features, types, strict=True)
            ]
        manifest = publish_estimator(
            ModelStore(settings.MODEL_STORE),
            estimator,
            name=args.name,
            version=args.version,
            features=features,
            output_labels=args.labels.split(",") if args.labels else None,
            metrics=_json_arg("--metrics", args.metrics, dict),
            sample_input=_json_arg("--sample", args.sample, list),
            artifact_format=args.format,
            signing_key=settings.signing_key,
            description=args.description,
            promote=args.promote,
            compile_graph=not args.no_compile,
        )
    except PublishError as exc:
        raise CliError(str(exc)) from exc
    state = (
        "and made it current"
        if args.promote
        else f"(promote with: predictor promote {manifest.name} {manifest.version})"
    )
    print(f"published {manifest.name} version {manifest.version} {state}")
    print(f"  {_compiled_text(manifest.compiled)}")
    if manifest.trusted_types:
        print(f"  trusted types recorded: {', '.join(manifest.trusted_types)}")
    return 0


def _read_estimator(path: Path) -> Any:
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    if path.suffix == ".skops":
        import skops.io as sio

        try:
            # The publisher vouches for its own file: trust the types it holds.
            return sio.load(path, trusted=sio.get_untrusted_types(file=path))
        except Exception as exc:
            raise CliError(f"{path} is not a readable skops file: {exc}") from exc
    import joblib

    try:
        return joblib.load(path)  # the publisher's own file, loaded on the publisher's machine
    except Exception as exc:
        raise CliError(f"{path} is not a readable joblib/pickle file: {exc}") from exc


def _parse_features(text: str | None) -> tuple[list[str] | None, list[FeatureType] | None]:
    if not text:
        return None, None
    names, types = [], []
    allowed = set(FeatureType.__args__)  # type: ignore[attr-defined]
    for item in text.split(","):
        name, _, ftype = item.strip().partition(":")
        ftype = ftype or "float"
        if not name or ftype not in allowed:
            raise CliError(
                f"--features item {item!r}: expected name or name:type with type in "
                f"{', '.join(sorted(allowed))}"
            )
        names.append(name)
        types.append(ftype)
    return names, types  # type: ignore[return-value]


def _json_arg(flag: str, text: str | None, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise CliError(f"{flag} must be a JSON {'array' if kind is list else 'object'}")
    return value


def _models(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = []
    for name in store.names():
        current = store.current(name)
        for version in store.versions(name):
            m = store.manifest(name, version)
            rows.append(
                {
                    "name": name,
                    "version": version,
                    "current": version == current,
                    "estimator": m.estimator,
                    "format": m.format,
                    "created": m.created.isoformat(timespec="seconds"),
                    "metrics": m.metrics,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models in {store.root} (try: predictor train-demo)")
        return 0
    print(f"{'MODEL':<14} {'VERSION':<8} {'CURRENT':<8} {'ESTIMATOR':<28} METRICS")
    for r in rows:
        print(
            f"{r['name']:<14} {r['version']:<8} {'*' if r['current'] else '':<8} "
            f"{r['estimator']:<28} {_metrics_text(r['metrics'])}"
        )
    return 0


def _promote(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ModelStore(settings.MODEL_STORE).promote(args.name, args.version)
    print(f"{args.name}: current version is now {args.version}")
    _announce(settings, args.name, args.version)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = ModelStore(settings.MODEL_STORE)
    previous = store.current(args.name)
    version = store.rollback(args.name)
    print(f"{args.name}: rolled back from version {previous} to {version}")
    _announce(settings, args.name, version)
    return 0


def _announce(settings: Settings, name: str, version: str) -> None:
    from .notify import announce

    if announce(settings.REDIS_URL, name, version):
        print("  workers notified over Redis")
    else:
        print(f"  workers pick it up within {settings.POLL_INTERVAL_SECONDS:g}s (store polling)")


def _api_key(args: argparse.Namespace) -> int:
    from .auth import hash_key, new_key

    if ":" in args.id or "," in args.id:
        raise CliError("the key id may not contain ':' or ','")
    key = new_key()
    print(f"key (give it to the client; it is not stored anywhere): {key}")
    print(f"entry for PREDICTOR_API_KEYS or PREDICTOR_API_KEYS_FILE: {args.id}:{hash_key(key)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    if args.store is not None:
        os.environ["PREDICTOR_MODEL_STORE"] = str(args.store)
    if args.bind:
        os.environ["PREDICTOR_BIND"] = args.bind
    if args.workers:
        os.environ["PREDICTOR_WORKERS"] = str(args.workers)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "-c", "python:service.gunicorn_conf", "service.wsgi:app"]
    os.execv(command[0], command)
    return 0  # pragma: no cover - execv does not return


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in metrics.items()) or "-"


if __name__ == "__main__":
    sys.exit(main())
