"""Memory of one store with many models: PSS of our gunicorn (master + workers) serving
``n`` models against the same gunicorn serving one, in one run (``make bench`` reports it).

The store holds ``n`` copies of the iris LogisticRegression, each published (signed,
compiled, verified) under its own name, so every one is loaded and served as a user's
model would be. PSS splits the pages workers share with the master copy-on-write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from loadtests import procstat
from loadtests.servers import READY_ROW, post_json


@dataclass
class StoreMemory:
    models: int
    workers: int
    total_pss_mib: float
    worker_pss_mib: float  # mean over workers
    worker_rss_mib: float
    master_pss_mib: float


def ensure_many(store: Path, n: int) -> list[str]:
    """``n`` published copies of the iris LogisticRegression (made once, kept in ``store``)."""
    names = [f"iris-{i:02d}" for i in range(n)]
    if all((store / name / "current").exists() for name in names):
        return names
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from service.manifest import Feature
    from service.publish import publish_estimator, ranges_from_data
    from service.store import ModelStore

    iris = load_iris()
    species = iris.target_names[iris.target].astype(object)
    estimator = LogisticRegression(max_iter=1000).fit(iris.data, species)
    features = ranges_from_data([Feature(name=f) for f in iris.feature_names], iris.data)
    models = ModelStore(store)
    for i, name in enumerate(names):
        if (store / name / "current").exists():
            continue
        print(f"  publishing {name} ({i + 1}/{n}) into {store}", flush=True)
        publish_estimator(
            models, estimator, name=name, features=features,
            sample_input=iris.data[:2].tolist(), held_out=iris.data[::5], promote=True,
        )  # fmt: skip
    return names


def measure(store: Path, names: list[str], run_dir: Path, env: dict[str, str]) -> StoreMemory:
    """Start our gunicorn on ``store`` serving ``names``, predict once with each, read PSS."""
    import shutil

    from tools.stack import Gunicorn

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    served = run_dir / "store"
    served.mkdir()
    for name in names:  # a store of exactly these models (the store follows no symlink)
        shutil.copytree(store / name, served / name, symlinks=True)
    env = {**env, "PREDICTOR_DEFAULT_MODEL": names[0]}
    gunicorn = Gunicorn(run_dir, served, workers=None, env=env)
    gunicorn.start(timeout=180)
    try:
        for name in names:  # every model answers in every worker (2 tries each)
            for _ in range(4):
                post_json(f"{gunicorn.url}/v1/models/{name}:predict", {"instances": [READY_ROW]})
        time.sleep(0.5)
        pids = procstat.tree([gunicorn.pid])
        mems = [m for m in (procstat.memory(p) for p in pids) if m]
        workers = [m for m in mems if m.pid != gunicorn.pid]
        master = [m for m in mems if m.pid == gunicorn.pid]
        return StoreMemory(
            models=len(names),
            workers=len(workers),
            total_pss_mib=sum(m.pss_kib for m in mems) / 1024,
            worker_pss_mib=sum(m.pss_kib for m in workers) / 1024 / max(1, len(workers)),
            worker_rss_mib=sum(m.rss_kib for m in workers) / 1024 / max(1, len(workers)),
            master_pss_mib=sum(m.pss_kib for m in master) / 1024,
        )
    finally:
        gunicorn.stop()
