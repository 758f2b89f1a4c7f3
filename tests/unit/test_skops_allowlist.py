"""The skops allow-list against skops 0.16's real behaviour: what loads, what never does."""

from __future__ import annotations

from pathlib import Path

import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.artifacts import load_skops
from service.errors import ArtifactRejected
from service.trust import allowed_by_default, never_trusted, unexplained
from tools.attacks import CODE_RUNNERS, evil_skops

X, Y = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def lr_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("skops") / "lr.skops"
    sio.dump(LogisticRegression(max_iter=500).fit(X, Y), path)
    return path


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(max_iter=500),
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        RandomForestClassifier(n_estimators=3, random_state=0),
        GradientBoostingRegressor(n_estimators=3, random_state=0),
    ],
    ids=["lr", "pipeline", "forest", "boosting"],
)
def test_what_skops_reports_is_allow_listed_or_the_flagged_tree(tmp_path, estimator):
    """Real estimators: every type skops does not trust itself is either allowed or Tree."""
    path = tmp_path / "m.skops"
    sio.dump(estimator.fit(X, Y), path)
    found = sio.get_untrusted_types(file=path)
    refused, missing = unexplained(found, [])
    assert refused == []
    assert set(missing) <= {"sklearn.tree._tree.Tree"}
    if missing:  # Tree loads only when named, as skops itself demands
        with pytest.raises(ArtifactRejected, match="Tree"):
            load_skops(path, [])
        assert load_skops(path, missing).predict(X[:2]).shape == (2,)
    else:
        assert load_skops(path, []).predict(X[:2]).shape == (2,)


def test_one_hot_encoder_loads_on_the_allow_list_alone(tmp_path):
    path = tmp_path / "ohe.skops"
    sio.dump(OneHotEncoder().fit([["a"], ["b"]]), path)
    assert load_skops(path, []).transform([["a"]]).shape == (1, 2)


@pytest.mark.parametrize("runner", CODE_RUNNERS)
def test_code_running_callables_never_load_even_when_trusted(tmp_path, lr_file, runner):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.skops"
    evil_skops(lr_file, evil, marker, runner)
    assert sio.get_untrusted_types(file=evil) == [runner]
    for trusted in ([], [runner]):
        with pytest.raises(ArtifactRejected) as err:
            load_skops(evil, trusted)
        assert err.value.reason == "untrusted_types" and runner in str(err.value)
    assert not marker.exists()
    # The payload is real: skops trusting the callable runs it and the model still works.
    assert sio.load(evil, trusted=[runner]).predict(X[:1]).tolist() == [0]
    assert marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        "timeit.timeit", "cProfile.run", "profile.run", "_pickle.loads", "pickle.loads",
        "joblib.load", "builtins.eval", "builtins.exec", "builtins.getattr", "builtins.open",
        "os.system", "posix.system", "nt.system", "subprocess.Popen", "subprocess.run",
        "pty.spawn", "runpy.run_path", "importlib.import_module", "operator.methodcaller",
        "functools.partial", "pydoc.pipepager", "code.interact", "shutil.rmtree", "io.open",
        "pandas.read_pickle", "dill.loads", "cloudpickle.loads", "skops.io.load",
        "numpy.load", "numpy.memmap", "numpy.lib.npyio.load", "numpy.testing.assert_equal",
        "numpy.f2py.compile", "numpy.fromfile", "scipy.io.loadmat",
        "sklearn.utils._testing.TempMemmap", "sklearn.datasets.fetch_openml",
        "sklearn.externals._arff.load", "mypkg.run", "mypkg.__reduce__",
    ],
)  # fmt: skip
def test_dangerous_names_are_never_trusted(name):
    assert never_trusted(name)
    assert not allowed_by_default(name)
    refused, _ = unexplained([name], [name])
    assert refused == [name]


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("sklearn.linear_model._logistic.LogisticRegression", True),
        ("sklearn._loss.loss.HalfSquaredError", True),
        ("sklearn.ensemble._hist_gradient_boosting.binning._BinMapper", True),
        ("numpy.ndarray", True),
        ("numpy.float64", True),
        ("numpy.dtypes.Float64DType", True),
        ("numpy.random._pcg64.PCG64", True),
        ("numpy.random.mtrand.RandomState", True),
        ("scipy.sparse._csr.csr_matrix", True),
        ("sklearn.tree._tree.Tree", False),  # skops flags it: needs the publisher's trust
        ("sklearn.metrics._regression.mean_squared_error", False),  # a function
        ("sklearn.nothing.Here", False),
        ("mypkg.MyScaler", False),  # may be trusted explicitly
        ("collections.OrderedDict", False),
    ],
)
def test_allow_list(name, default):
    assert allowed_by_default(name) is default
    if not default:
        assert never_trusted(name) is None  # a publisher may vouch for it
