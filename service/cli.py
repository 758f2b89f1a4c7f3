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
from .manifest import CompiledRecord
from .settings import Settings
from .stores import open_store


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1 (2 for usage)."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (CliError, PredictorError, ArtifactRejected, OSError, ValueError) as exc:
        # SecretError is a ValueError: a broken key file is one line too.
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
            default=None,
            help="model store: a directory or s3://BUCKET/PREFIX "
            "(default: $PREDICTOR_MODEL_STORE or ./models)",
        )
        p.set_defaults(func=func)
        return p

    command(
        "train-demo", _train_demo, "train and publish the demo models (iris, iris-rf, diabetes)"
    )

    p = command(
        "publish",
        _publish,
        "publish a fitted estimator or Pipeline (joblib or skops file) from its data",
    )
    p.add_argument("file", type=Path, help="a .joblib/.pkl or .skops file holding a fitted model")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--version", help="version (default: next integer)")
    p.add_argument(
        "--data",
        type=Path,
        help="training or validation data (.csv or .parquet): the schema, ranges, categories, "
        "missing values, metrics, samples and the compiled graph's verification come from it",
    )
    p.add_argument("--target", help="the column of --data holding the labels/values (dropped)")
    p.add_argument(
        "--held-out", type=Path, help="rows for the metrics (default: a seeded split of --data)"
    )
    p.add_argument(
        "--features",
        help="override: comma-separated feature names in input order, each optionally "
        "name:type (float, int, bool, string); default: the estimator's feature_names_in_",
    )
    p.add_argument(
        "--labels",
        help="display names per class, e.g. leave=Leaves,stay=Stays (answers stay the "
        "model's own classes); a plain list a,b,c only for classes 0..k-1",
    )
    p.add_argument("--sample", help='JSON rows for the smoke test, e.g. "[[5.1, 3.5, 1.4, 0.2]]"')
    p.add_argument("--metrics", help='JSON object of held-out metrics, e.g. {"accuracy": 0.97}')
    p.add_argument(
        "--format",
        choices=["skops", "joblib"],
        default="skops",
        help="artifact format to store (default skops: loads without running pickled code)",
    )
    p.add_argument("--description", default="")
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="TYPE",
        help="a skops type outside the allow-list that you vouch for (repeat for each); "
        "recorded in the signed manifest",
    )
    p.add_argument("--promote", action="store_true", help="make it the current version")
    compiled = ", ".join(r.name for r in runtimes.compiled_runtimes()) or "none registered"
    p.add_argument(
        "--no-compile",
        action="store_true",
        help=f"skip compiling for the compiled runtimes ({compiled}); serve with the estimator",
    )
    p.add_argument(
        "--compile-anyway",
        action="store_true",
        help="without --data, compile and verify on rows drawn from the features' ranges only",
    )
    p.add_argument(
        "--allow-version-mismatch",
        action="store_true",
        help="publish a model saved with another scikit-learn major.minor than this one",
    )

    p = command("models", _models, "list models, versions, current version and metrics")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("promote", _promote, "make VERSION the current version of NAME")
    p.add_argument("name")
    p.add_argument("version")

    p = command(
        "canary",
        _canary,
        "send PERCENT of the requests naming no version of NAME to VERSION (or end it: --off)",
    )
    p.add_argument("name")
    p.add_argument("version", nargs="?", help="the candidate version (verified and smoke-tested)")
    p.add_argument("--percent", type=float, help="share of unpinned requests, above 0, below 100")
    p.add_argument("--sticky", action="store_true", help="one API key always sees the same version")
    p.add_argument("--off", action="store_true", help="end the canary: current takes everything")

    p = command("rollback", _rollback, "return NAME to the version current before this one")
    p.add_argument("name")

    p = command("api-key", _api_key, "create an API key: prints the key once and its config entry")
    p.add_argument("action", choices=["new"], help="new: generate a random key")
    p.add_argument("id", help="a name for the key (logged; the key itself never is)")

    command(
        "verify",
        _verify,
        "check each current version's signature and file digests (loads nothing); "
        "exit 1 if any fails",
    )

    p = command(
        "signing-key",
        _signing_key,
        "init: create the signing key file if missing (prints its path); new: print a fresh key",
    )
    p.add_argument("action", choices=["init", "new"])
    p.add_argument(
        "--file",
        type=Path,
        help="key file (default: $PREDICTOR_SIGNING_KEY_FILE or ~/.config/predictor/signing.key)",
    )

    p = command(
        "kserve",
        _kserve,
        "KServe serving runtime: publish the model file of --model_dir (no manifest) into a "
        "local store through the verifying path, then serve it as --model_name with gunicorn",
    )
    # KServe's own argument names (its sklearn server and model_server take the same).
    p.add_argument("--model_name", required=True, help="the InferenceService's name")
    p.add_argument(
        "--model_dir", type=Path, default=Path("/mnt/models"), help="default /mnt/models"
    )
    p.add_argument("--http_port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument(
        "--grpc_port", type=int, default=9000, help="gRPC (Open Inference Protocol) port; 0 = off"
    )
    p.add_argument("--workers", type=int, help="gunicorn workers (default $PREDICTOR_WORKERS)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="TYPE",
        help="a skops type outside the allow-list that you vouch for (repeat for each)",
    )
    p.add_argument(
        "--allow-version-mismatch",
        action="store_true",
        help="serve a model saved with another scikit-learn major.minor than this one",
    )

    p = command("serve", _serve, "serve the store with gunicorn (settings from PREDICTOR_*)")
    p.add_argument("--bind", help="address to listen on (default $PREDICTOR_BIND)")
    p.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.store is not None:
        settings = Settings(MODEL_STORE=args.store)
    return settings


def _store(args: argparse.Namespace) -> Any:
    settings = _settings(args)
    return open_store(settings.MODEL_STORE, settings.STORE_CACHE_DIR)


def _train_demo(args: argparse.Namespace) -> int:
    from .demo import train_demo

    settings = _settings(args)
    for manifest in train_demo(_store(args), settings.publishing_key()):
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
        sources = ", ".join(f"{k} {v:,}" for k, v in (record.rows_by_source or {}).items())
        distinct = getattr(record, "distinct_rows", None)
        distinct_text = f" ({distinct:,} distinct)" if distinct is not None else ""
        return (
            f"compiled for runtime {record.runtime}, verified on {record.rows_checked:,} rows"
            f"{distinct_text}: {record.mismatches} mismatches, max diff "
            f"{record.max_abs_diff or 0.0:.2g} [{sources}]"
        )
    return f"serves with scikit-learn: {record.reason}"


def _publish(args: argparse.Namespace) -> int:
    from .labels import LabelError, parse_labels_arg
    from .publish import PublishError, publish_model

    settings = _settings(args)
    if args.data is None and (args.target or args.held_out):
        raise CliError("--target and --held-out describe --data: give --data FILE too")
    try:
        manifest = publish_model(
            args.file,
            name=args.name,
            data=args.data,
            target=args.target,
            held_out=args.held_out,
            store=_store(args),
            version=args.version,
            features=[f for f in args.features.split(",") if f.strip()] if args.features else None,
            labels=parse_labels_arg(args.labels) if args.labels else None,
            sample_input=_json_arg("--sample", args.sample, list),
            metrics=_json_arg("--metrics", args.metrics, dict),
            artifact_format=args.format,
            signing_key=settings.publishing_key(),
            trust=args.trust,
            description=args.description,
            promote=args.promote,
            compile_graph=not args.no_compile,
            compile_anyway=args.compile_anyway,
            allow_version_mismatch=args.allow_version_mismatch,
        )
    except (PublishError, LabelError) as exc:
        raise CliError(str(exc)) from exc
    state = (
        "and made it current"
        if args.promote
        else f"(promote with: predictor promote {manifest.name} {manifest.version})"
    )
    print(f"published {manifest.name} version {manifest.version} {state}")
    print(f"  {_schema_text(manifest)}")
    if manifest.metrics:
        held = (manifest.data or {}).get("held_out") or "the given metrics"
        print(f"  held-out metrics: {_metrics_text(manifest.metrics)} (on {held})")
    elif args.data is not None and not args.target:
        print("  no held-out metrics: pass --target COLUMN so the data's labels can score it")
    print(f"  {_compiled_text(manifest.compiled)}")
    if manifest.sklearn_version != manifest.publisher_sklearn_version:
        print(
            f"  warning: trained with scikit-learn {manifest.sklearn_version}, published with "
            f"{manifest.publisher_sklearn_version}"
        )
    if manifest.trusted_types:
        print(f"  trusted types recorded: {', '.join(manifest.trusted_types)}")
    return 0


def _schema_text(manifest: Any) -> str:
    parts = []
    for f in manifest.features:
        text = f"{f.name}:{f.type}"
        if f.nullable:
            text += "?"
        parts.append(text)
    return f"{len(parts)} features ({', '.join(parts)}; ? = accepts missing values)"


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
    from .canary import promote

    ended = promote(_store(args), args.name, args.version)
    print(f"{args.name}: current version is now {args.version}")
    if ended:
        print(f"  the canary of version {args.version} ended: it takes all traffic now")
    _announce(settings, args.name, args.version)
    return 0


def _canary(args: argparse.Namespace) -> int:
    from . import canary

    settings = _settings(args)
    store = _store(args)
    if args.off:
        if args.version or args.percent is not None:
            raise CliError("--off takes no VERSION or --percent")
        ended = canary.stop(store, args.name)
        if ended is None:
            print(f"{args.name}: no canary was running")
        else:
            print(f"{args.name}: canary of version {ended.version} ended")
            _announce(settings, args.name, "canary-off")
        return 0
    if not args.version or args.percent is None:
        raise CliError("expected NAME VERSION --percent P (or NAME --off)")
    state = canary.start(store, settings, args.name, args.version, args.percent, args.sticky)
    how = "per API key" if state.sticky else "per request"
    print(
        f"{args.name}: version {state.version} takes {state.percent:g}% of the requests "
        f"naming no version ({how}); current {store.current(args.name)} the rest"
    )
    _announce(settings, args.name, f"canary-{state.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(args)
    previous = store.current(args.name)
    version = store.rollback(args.name)
    print(f"{args.name}: rolled back from version {previous} to {version}")
    _announce(settings, args.name, version)
    return 0


def _announce(settings: Settings, name: str, version: str) -> None:
    from .notify import announce

    if announce(settings.REDIS_URL, name, version, settings.redis_password):
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


def _verify(args: argparse.Namespace) -> int:
    from .artifacts import verify_version

    settings = _settings(args)
    store = _store(args)
    key = settings.signing_key
    failed = 0
    for name in store.names():
        version = store.current(name)
        if version is None:
            continue
        try:
            signed = verify_version(store.version_dir(name, version),
                                    store.manifest(name, version), key)  # fmt: skip
        except (ArtifactRejected, PredictorError) as exc:
            failed += 1
            reason = exc.reason if isinstance(exc, ArtifactRejected) else exc.code
            print(f"{name} {version}: refused ({reason}: {exc})")
            continue
        print(f"{name} {version}: {'signed, every file verified' if signed else 'not signed'}")
    if key is None:
        print("no signing key is set: nothing can be verified")
        return 1
    return 1 if failed else 0


def _signing_key(args: argparse.Namespace) -> int:
    from .secret_files import (
        check_length,
        create_secret_file,
        default_signing_key_file,
        new_secret,
        read_secret_file,
    )

    if args.action == "new":
        print(new_secret())
        return 0
    path = args.file or _settings(args).SIGNING_KEY_FILE or default_signing_key_file()
    created = create_secret_file(path)
    check_length(read_secret_file(path, "signing key"), f"the signing key in {path}")
    print(f"{'created' if created else 'kept the existing'} signing key {path}")
    return 0


def _exec_gunicorn(workers: int | None) -> int:
    """Replace this process with gunicorn serving the app on the PREDICTOR_* just set."""
    if workers:
        os.environ["PREDICTOR_WORKERS"] = str(workers)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "-c", "python:service.gunicorn_conf", "service.wsgi:app"]
    os.execv(command[0], command)
    return 0  # pragma: no cover - execv does not return


def _serve(args: argparse.Namespace) -> int:
    if args.store is not None:
        os.environ["PREDICTOR_MODEL_STORE"] = str(args.store)
    if args.bind:
        os.environ["PREDICTOR_BIND"] = args.bind
    return _exec_gunicorn(args.workers)


def _kserve(args: argparse.Namespace) -> int:
    import tempfile

    from .kserve_import import ImportRefused, import_model_dir
    from .secret_files import create_secret_file, default_signing_key_file

    # The pod's own store: --store, else a directory of its own under the temp directory.
    store = Path(args.store or Path(tempfile.gettempdir()) / "predictor-kserve" / "store")
    settings = Settings(MODEL_STORE=store)
    if settings.SIGNING_KEY is None or not settings.SIGNING_KEY.get_secret_value():
        # No mounted key: this pod signs its own import with a key it makes now, so the
        # workers verify exactly the files the import checked.
        key_file = Path(settings.SIGNING_KEY_FILE or default_signing_key_file())
        if not key_file.exists():
            try:
                create_secret_file(key_file)
            except OSError:
                key_file = store.parent / "signing.key"
                create_secret_file(key_file)
            print(f"predictor kserve: created the signing key {key_file}", file=sys.stderr)
        os.environ["PREDICTOR_SIGNING_KEY_FILE"] = str(key_file)
        settings = Settings(MODEL_STORE=store)
    try:
        manifest = import_model_dir(
            args.model_dir,
            args.model_name,
            store,
            signing_key=settings.publishing_key(),
            allow_unsigned_pickle=settings.ALLOW_UNSIGNED_PICKLE,
            trust=args.trust,
            allow_version_mismatch=args.allow_version_mismatch,
        )
    except ImportRefused as exc:
        raise CliError(str(exc)) from exc
    print(
        f"predictor kserve: serving {args.model_dir} as {manifest.name} version "
        f"{manifest.version} ({manifest.estimator}, {len(manifest.features)} features) on "
        f"{args.host}:{args.http_port}",
        file=sys.stderr,
    )
    os.environ.update(
        PREDICTOR_MODEL_STORE=str(store),
        PREDICTOR_DEFAULT_MODEL=manifest.name,
        PREDICTOR_BIND=f"{args.host}:{args.http_port}",
        PREDICTOR_GRPC_BIND=f"{args.host}:{args.grpc_port}" if args.grpc_port else "",
    )
    return _exec_gunicorn(args.workers)


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in metrics.items()) or "-"


if __name__ == "__main__":
    sys.exit(main())
