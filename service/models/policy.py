"""Which versions of a model may load: nothing else is ever deserialised.

A version loads only when it is the model's ``current`` one, was loaded through the
admin repository API (``POST /v2/repository/models/{name}/load`` with
``{"parameters": {"version": "3"}}``), or is named by ``PREDICTOR_WARM_VERSIONS``:

    iris@3,iris@4        those versions of iris
    iris@latest:2        the two newest versions of iris
    *@latest:2           the two newest versions of every model

Metadata and readiness requests never load anything; a version-pinned prediction of a
version outside the policy is a 404 that lists the servable versions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..store import version_sort_key

_ITEM = re.compile(r"^(?P<model>\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})@(?P<version>.+)$")
_LATEST = re.compile(r"^latest:(?P<n>[1-9][0-9]{0,2})$")


@dataclass(frozen=True)
class WarmVersions:
    """The parsed ``WARM_VERSIONS`` setting."""

    exact: frozenset[tuple[str, str]] = frozenset()
    latest: tuple[tuple[str, int], ...] = ()  # (model or "*", how many)

    @classmethod
    def parse(cls, text: str) -> WarmVersions:
        exact, latest = set(), []
        for raw in filter(None, (i.strip() for i in text.split(","))):
            match = _ITEM.match(raw)
            if not match:
                raise ValueError(f"{raw!r}: expected model@version, model@latest:N or *@latest:N")
            model, version = match["model"], match["version"]
            newest = _LATEST.match(version)
            if newest:
                latest.append((model, int(newest["n"])))
            elif model == "*":
                raise ValueError(f"{raw!r}: '*' takes only latest:N")
            else:
                exact.add((model, version))
        return cls(frozenset(exact), tuple(latest))

    def __bool__(self) -> bool:
        return bool(self.exact or self.latest)

    def versions(self, name: str, available: Iterable[str]) -> set[str]:
        """The versions of ``name`` (among ``available``) this setting keeps warm."""
        available = sorted(available, key=version_sort_key)
        wanted = {v for m, v in self.exact if m == name and v in available}
        for model, n in self.latest:
            if model in ("*", name):
                wanted.update(available[-n:])
        return wanted


def servable(
    name: str,
    available: Iterable[str],
    current: str | None,
    warm: WarmVersions,
    admin: Iterable[tuple[str, str]],
) -> list[str]:
    """Every version of ``name`` that may load, sorted like the store sorts them."""
    available = set(available)
    out = warm.versions(name, available)
    out.update(v for m, v in admin if m == name and v in available)
    if current is not None and current in available:
        out.add(current)
    return sorted(out, key=version_sort_key)
