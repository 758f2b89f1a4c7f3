"""``make k8s-render OVERLAY=prod``: the rendered manifests on stdout, and on stderr a
warning for every placeholder value still in them.

Placeholders are the values shipped for a site to replace (registry, hostname, TLS
Secret, storage class, bucket, endpoint): each one contains the word ``example``
(RFC 2606 names), so a value still holding it was not replaced. The warning names
the resource, the field and the file to edit; stdout stays the unchanged kustomize
output, so ``make -s k8s-render OVERLAY=prod > prod.yaml`` still writes valid YAML.

    python -m tools.k8s_render k8s/overlays/prod [--kubectl PATH]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\bexample\b")
VALUE_FILES = ("*.env", "*values*.yaml")


def placeholders(docs: list[dict]) -> list[tuple[str, str, str]]:
    """(Kind/name, field path, value) of every string in ``docs`` that is a placeholder."""
    found = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for path, value in _strings(doc, ""):
            if PLACEHOLDER.search(value):
                found.append((where, path, value))
    return found


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def value_files(value: str, root: Path = REPO / "k8s") -> list[Path]:
    """The site-value files under ``root`` that hold ``value`` (where to replace it)."""
    files = sorted({p for pattern in VALUE_FILES for p in root.rglob(pattern)})
    return [p for p in files if value in p.read_text()]


def warning(overlay: Path, docs: list[dict]) -> str | None:
    """The warning text for ``docs`` rendered from ``overlay``; None when nothing is left."""
    found = placeholders(docs)
    if not found:
        return None
    lines = [
        f"warning: {overlay} still renders {len(found)} placeholder value(s); replace them "
        'before applying (docs/deploy.md, "Production values"):'
    ]
    for where, path, value in found:
        files = value_files(value)
        source = ", ".join(str(p.relative_to(REPO)) for p in files) or "the manifests"
        lines.append(f"  {where} {path} = {value}   (set in {source})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s-render", description=__doc__.splitlines()[0])
    parser.add_argument("overlay", type=Path, help="a kustomization directory")
    parser.add_argument("--kubectl", default=str(Path(sysconfig.get_path("scripts")) / "kubectl"))
    args = parser.parse_args(argv)
    proc = subprocess.run(
        [args.kubectl, "kustomize", str(args.overlay)], capture_output=True, text=True
    )
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        return proc.returncode
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    text = warning(args.overlay, [d for d in yaml.safe_load_all(proc.stdout) if d])
    if text:
        print(text, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
