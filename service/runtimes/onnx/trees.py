"""Tree-ensemble converters for skl2onnx that reproduce scikit-learn's arithmetic.

skl2onnx 1.20's own tree converters use the float32 ``TreeEnsembleClassifier``
and ``TreeEnsembleRegressor`` operators. Their splits are right, but their
sums are not scikit-learn's: a forest's leaf weights are stored pre-divided by
the tree count in float32, so a 50/50 vote comes out 0.49999997/0.50000004
and ties go to the other class (60 differing classes in 100,000 random iris
rows for a 100-tree forest). Their HistGradientBoosting converter also fails
on scikit-learn 1.9 (``feature_idx`` is unsigned) and compares in float32
where scikit-learn compares in float64.

These converters emit the ``ai.onnx.ml`` opset 5 ``TreeEnsemble`` operator in
double precision and lay the computation out exactly as scikit-learn does:

* Splits compare what scikit-learn compares: ``DecisionTree*``,
  ``RandomForest*``, ``ExtraTrees*`` and ``GradientBoosting*`` cast the input
  to float32 and compare it, as a double, with the double threshold, so the
  graph casts double -> float -> double before the ensemble and keeps the
  thresholds unchanged. ``HistGradientBoosting*`` compares the float64 input
  with float64 thresholds, so the graph does not cast.
* Sums run in double, one tree after the other in scikit-learn's order, with
  the constant term (gradient boosting's init / baseline) as a first one-leaf
  tree, because scikit-learn starts from it too. A forest sums per-tree
  probabilities and divides by the tree count afterwards, as scikit-learn does.
* Classes come from scikit-learn's own decision rule: argmax of the averaged
  probabilities (forests), ``raw >= 0`` (GradientBoosting, binary),
  ``raw > 0`` (HistGradientBoosting, binary), argmax of raw scores otherwise.

A ``TreeEnsemble`` leaf feeds one target, so a forest classifier holds one
copy of each tree per class (K passes instead of one: ~1 µs per row more for
a 100-tree iris forest). Unsupported variants (multi-output trees, categorical
HistGradientBoosting splits, custom init estimators, unknown losses) raise
``NotImplementedError``; the caller then serves with scikit-learn.

With more than one intra-op thread onnxruntime may split a small batch's
trees across threads and merge partial sums in another order; keep one
thread per session (the service's default) for bit-identical sums.

``register()`` installs the converters in skl2onnx's registry (idempotent);
they then also apply inside Pipelines and ColumnTransformers.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

ML_OPSET = 5  # ai.onnx.ml version that has TreeEnsemble (double in, double out)
# skl2onnx 1.20 refuses to write ai.onnx.ml > 3, so the converters tag their
# TreeEnsemble nodes with this domain and finalize() moves them to ai.onnx.ml 5.
_STAGING_DOMAIN = "predictor.staging.ml"

_registered = False


class _Ensemble:
    """Accumulates trees in ai.onnx.ml TreeEnsemble (opset 5) layout."""

    def __init__(self, n_targets: int) -> None:
        self.n_targets = n_targets
        self.roots: list[int] = []
        self.n_nodes = 0
        self.n_leaves = 0
        self._parts: dict[str, list[np.ndarray]] = {
            k: []
            for k in (
                "feature",
                "split",
                "true_id",
                "true_leaf",
                "false_id",
                "false_leaf",
                "missing_true",
                "leaf_target",
                "leaf_weight",
            )
        }

    def _append(self, **arrays: np.ndarray) -> None:
        for key, value in arrays.items():
            self._parts[key].append(np.asarray(value))

    def add_constant(self, target: int, value: float) -> None:
        """A one-leaf tree: both branches of a dummy node point at one leaf."""
        self.roots.append(self.n_nodes)
        leaf = self.n_leaves
        self._append(
            feature=[0],
            split=[0.0],
            true_id=[leaf],
            true_leaf=[1],
            false_id=[leaf],
            false_leaf=[1],
            missing_true=[0],
            leaf_target=[target],
            leaf_weight=[float(value)],
        )
        self.n_nodes += 1
        self.n_leaves += 1

    def add_tree(
        self,
        left: np.ndarray,
        right: np.ndarray,
        is_leaf: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        missing_left: np.ndarray,
        leaf_values: np.ndarray,
        target: int,
    ) -> None:
        """Add one binary tree given per-node arrays; node 0 is the root.

        A node goes left (the "true" branch) when ``x <= threshold``;
        ``leaf_values[i]`` is the weight of node ``i`` when it is a leaf.
        Subtrees whose leaves all carry the same weight become one leaf: the
        answer is the same value, reached in fewer comparisons (a forest's
        per-class copy of a tree keeps only what tells that class apart).
        """
        left = np.asarray(left, dtype=np.int64)
        right = np.asarray(right, dtype=np.int64)
        kept, is_leaf, values = _collapse_constant_subtrees(
            left, right, np.asarray(is_leaf, dtype=bool), np.asarray(leaf_values, np.float64)
        )
        if is_leaf[0]:
            self.add_constant(target, float(values[0]))
            return
        interior = np.flatnonzero(kept & ~is_leaf)
        leaves = np.flatnonzero(kept & is_leaf)
        position = np.full(len(is_leaf), -1, dtype=np.int64)
        position[interior] = self.n_nodes + np.arange(len(interior))
        position[leaves] = self.n_leaves + np.arange(len(leaves))
        lc, rc = left[interior], right[interior]
        self.roots.append(int(position[0]))
        self._append(
            feature=np.asarray(feature)[interior].astype(np.int64),
            split=np.asarray(threshold, dtype=np.float64)[interior],
            true_id=position[lc],
            true_leaf=is_leaf[lc].astype(np.int64),
            false_id=position[rc],
            false_leaf=is_leaf[rc].astype(np.int64),
            missing_true=np.asarray(missing_left)[interior].astype(np.int64),
            leaf_target=np.full(len(leaves), target, dtype=np.int64),
            leaf_weight=values[leaves],
        )
        self.n_nodes += len(interior)
        self.n_leaves += len(leaves)

    def attributes(self) -> dict:
        cat = {k: np.concatenate(v) for k, v in self._parts.items()}
        attrs = dict(
            n_targets=self.n_targets,
            aggregate_function=1,  # SUM, in tree order
            post_transform=0,  # NONE: transforms are separate nodes
            tree_roots=self.roots,
            nodes_featureids=cat["feature"].tolist(),
            nodes_splits=numpy_helper.from_array(cat["split"].astype(np.float64)),
            nodes_modes=numpy_helper.from_array(np.zeros(self.n_nodes, dtype=np.uint8)),
            nodes_truenodeids=cat["true_id"].tolist(),
            nodes_trueleafs=cat["true_leaf"].tolist(),
            nodes_falsenodeids=cat["false_id"].tolist(),
            nodes_falseleafs=cat["false_leaf"].tolist(),
            leaf_targetids=cat["leaf_target"].tolist(),
            leaf_weights=numpy_helper.from_array(cat["leaf_weight"].astype(np.float64)),
        )
        if cat["missing_true"].any():
            attrs["nodes_missing_value_tracks_true"] = cat["missing_true"].tolist()
        return attrs


def _collapse_constant_subtrees(
    left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept, is_leaf, values) once every constant subtree is a single leaf.

    Works level by level from the root, so it needs no node ordering.
    """
    levels = []
    frontier = np.zeros(1, dtype=np.int64)
    while frontier.size:
        levels.append(frontier)
        inner = frontier[~is_leaf[frontier]]
        frontier = np.concatenate([left[inner], right[inner]])
    low = np.where(is_leaf, values, np.inf)
    high = np.where(is_leaf, values, -np.inf)
    for level in reversed(levels):
        inner = level[~is_leaf[level]]
        low[inner] = np.minimum(low[left[inner]], low[right[inner]])
        high[inner] = np.maximum(high[left[inner]], high[right[inner]])
    constant = low == high
    kept = np.zeros(len(is_leaf), dtype=bool)
    kept[0] = True
    for level in levels:
        expand = level[kept[level] & ~constant[level]]
        kept[left[expand]] = True
        kept[right[expand]] = True
    return kept, constant, np.where(constant, low, values)


# --- reading scikit-learn trees -------------------------------------------


def _sk_tree(tree) -> tuple:
    """(left, right, is_leaf, feature, threshold, missing_left) of a sklearn Tree."""
    left = tree.children_left
    missing = getattr(tree, "missing_go_to_left", None)
    if missing is None:
        missing = np.zeros(tree.node_count, dtype=np.uint8)
    return left, tree.children_right, left == -1, tree.feature, tree.threshold, missing


def _class_proba(tree, n_classes: int) -> np.ndarray:
    """Per-leaf class probabilities exactly as DecisionTreeClassifier.predict_proba."""
    proba = tree.value[:, 0, :n_classes].copy()
    normalizer = proba.sum(axis=1)[:, np.newaxis]
    normalizer[normalizer == 0.0] = 1.0
    proba /= normalizer
    return proba


def _hgb_tree(predictor) -> tuple:
    nodes = predictor.nodes
    if nodes["is_categorical"].any():
        raise NotImplementedError("HistGradientBoosting with categorical splits")
    return (
        nodes["left"],
        nodes["right"],
        nodes["is_leaf"].astype(bool),
        nodes["feature_idx"],
        nodes["num_threshold"],
        nodes["missing_go_to_left"],
        nodes["value"],
    )


# --- graph helpers ----------------------------------------------------------


def _name(scope, base: str) -> str:
    return scope.get_unique_variable_name(base)


def _node(scope, container, op, inputs, outputs, domain="", version=None, **attrs):
    container.add_node(
        op,
        inputs,
        outputs,
        op_domain=domain,
        op_version=version,
        name=scope.get_unique_operator_name(op),
        **attrs,
    )


def _const(scope, container, base: str, array: np.ndarray) -> str:
    name = _name(scope, base)
    array = np.asarray(array)
    if array.dtype == object:
        container.add_initializer(name, TensorProto.STRING, list(array.shape), array.tolist())
    else:  # raw bytes: the exact values
        tensor = numpy_helper.from_array(array, name)
        container.add_initializer(name, tensor.data_type, list(tensor.dims), tensor)
    return name


def _input_as_double(scope, operator, container, via_float32: bool) -> str:
    """The operator's input as a double tensor, rounded through float32 if asked."""
    src = operator.inputs[0].full_name
    if via_float32:
        f32 = _name(scope, "x_float32")
        _node(scope, container, "Cast", [src], [f32], to=TensorProto.FLOAT)
        src = f32
    out = _name(scope, "x_double")
    _node(scope, container, "Cast", [src], [out], to=TensorProto.DOUBLE)
    return out


def _ensemble(scope, container, x: str, ensemble: _Ensemble) -> str:
    raw = _name(scope, "raw_scores")
    _node(
        scope,
        container,
        "TreeEnsemble",
        [x],
        [raw],
        domain=_STAGING_DOMAIN,
        version=1,
        **ensemble.attributes(),
    )
    return raw


def _emit(scope, container, value: str, variable) -> None:
    """Write a double tensor to an output variable, in the type it was declared."""
    if type(variable.type).__name__ == "FloatTensorType":
        _node(scope, container, "Cast", [value], [variable.full_name], to=TensorProto.FLOAT)
    else:
        _node(scope, container, "Identity", [value], [variable.full_name])


def _class_table(scope, container, classes) -> str:
    classes = np.asarray(classes)
    if classes.dtype.kind in "OUS":
        table = np.array([str(c) for c in classes], dtype=object)
    elif classes.dtype.kind in "biu" or (
        classes.dtype.kind == "f" and np.all(classes == np.round(classes))
    ):
        table = classes.astype(np.int64)
    else:
        raise NotImplementedError(f"class labels of dtype {classes.dtype}")
    return _const(scope, container, "classes", table)


def _labels_from_index(scope, container, index: str, classes, variable) -> None:
    table = _class_table(scope, container, classes)
    _node(scope, container, "Gather", [table, index], [variable.full_name], axis=0)


def _argmax(scope, container, scores: str) -> str:
    out = _name(scope, "class_index")
    _node(scope, container, "ArgMax", [scores], [out], axis=1, keepdims=0, select_last_index=0)
    return out


def _binary_index(scope, container, raw: str, inclusive: bool) -> str:
    """Class index 1 where raw >= 0 (inclusive) or raw > 0, as int64 of shape [N]."""
    zero = _const(scope, container, "zero", np.array(0.0))
    cmp = _name(scope, "is_positive")
    _node(scope, container, "GreaterOrEqual" if inclusive else "Greater", [raw, zero], [cmp])
    idx = _name(scope, "class_index_2d")
    _node(scope, container, "Cast", [cmp], [idx], to=TensorProto.INT64)
    flat = _name(scope, "class_index")
    shape = _const(scope, container, "flat", np.array([-1], dtype=np.int64))
    _node(scope, container, "Reshape", [idx, shape], [flat])
    return flat


def _binary_proba(scope, container, raw: str, scale: float) -> str:
    """[1 - p, p] with p = expit(scale * raw), as scikit-learn's binomial losses."""
    if scale != 1.0:
        scaled = _name(scope, "scaled_raw")
        _node(
            scope, container, "Mul", [raw, _const(scope, container, "k", np.array(scale))], [scaled]
        )
        raw = scaled
    p1 = _name(scope, "p1")
    _node(scope, container, "Sigmoid", [raw], [p1])
    p0 = _name(scope, "p0")
    _node(scope, container, "Sub", [_const(scope, container, "one", np.array(1.0)), p1], [p0])
    proba = _name(scope, "proba")
    _node(scope, container, "Concat", [p0, p1], [proba], axis=1)
    return proba


def _softmax(scope, container, raw: str) -> str:
    proba = _name(scope, "proba")
    _node(scope, container, "Softmax", [raw], [proba], axis=1)
    return proba


# --- converters -------------------------------------------------------------


def _forest_members(est) -> list:
    return list(est.estimators_) if hasattr(est, "estimators_") else [est]


def convert_forest_classifier(scope, operator, container) -> None:
    """DecisionTreeClassifier, RandomForestClassifier, ExtraTreesClassifier."""
    est = operator.raw_operator
    if getattr(est, "n_outputs_", 1) != 1:
        raise NotImplementedError("multi-output tree classifiers")
    members = _forest_members(est)
    n_classes = len(est.classes_)
    ensemble = _Ensemble(n_classes)
    for member in members:
        tree = member.tree_
        left, right, is_leaf, feature, threshold, missing = _sk_tree(tree)
        proba = _class_proba(tree, n_classes)
        for k in range(n_classes):
            ensemble.add_tree(left, right, is_leaf, feature, threshold, missing, proba[:, k], k)
    x = _input_as_double(scope, operator, container, via_float32=True)
    summed = _ensemble(scope, container, x, ensemble)
    proba = summed
    if len(members) > 1:
        proba = _name(scope, "proba")
        n = _const(scope, container, "n_trees", np.array(float(len(members))))
        _node(scope, container, "Div", [summed, n], [proba])
    _labels_from_index(
        scope, container, _argmax(scope, container, proba), est.classes_, operator.outputs[0]
    )
    _emit(scope, container, proba, operator.outputs[1])


def convert_forest_regressor(scope, operator, container) -> None:
    """DecisionTreeRegressor, RandomForestRegressor, ExtraTreesRegressor."""
    est = operator.raw_operator
    if getattr(est, "n_outputs_", 1) != 1:
        raise NotImplementedError("multi-output tree regressors")
    members = _forest_members(est)
    ensemble = _Ensemble(1)
    for member in members:
        tree = member.tree_
        left, right, is_leaf, feature, threshold, missing = _sk_tree(tree)
        ensemble.add_tree(left, right, is_leaf, feature, threshold, missing, tree.value[:, 0, 0], 0)
    x = _input_as_double(scope, operator, container, via_float32=True)
    summed = _ensemble(scope, container, x, ensemble)
    out = summed
    if len(members) > 1:
        out = _name(scope, "mean")
        n = _const(scope, container, "n_trees", np.array(float(len(members))))
        _node(scope, container, "Div", [summed, n], [out])
    _emit(scope, container, out, operator.outputs[0])


def _gb_init(est) -> np.ndarray:
    """The constant raw prediction GradientBoosting starts from, shape [K]."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    if not isinstance(est.init_, str | DummyClassifier | DummyRegressor):
        raise NotImplementedError(f"GradientBoosting init estimator {type(est.init_).__name__}")
    probe = np.zeros((1, est.n_features_in_), dtype=np.float32)
    return np.asarray(est._raw_predict_init(probe), dtype=np.float64)[0]


def _gb_ensemble(est) -> _Ensemble:
    stages = est.estimators_  # shape (n_stages, K) of DecisionTreeRegressor
    n_targets = stages.shape[1]
    ensemble = _Ensemble(n_targets)
    init = _gb_init(est)
    for k in range(n_targets):
        ensemble.add_constant(k, init[k])
    scale = float(est.learning_rate)
    for stage in stages:
        for k, member in enumerate(stage):
            tree = member.tree_
            left, right, is_leaf, feature, threshold, missing = _sk_tree(tree)
            weights = scale * tree.value[:, 0, 0]  # scikit-learn adds scale * value
            ensemble.add_tree(left, right, is_leaf, feature, threshold, missing, weights, k)
    return ensemble


def convert_gradient_boosting_classifier(scope, operator, container) -> None:
    est = operator.raw_operator
    loss = type(est._loss).__name__
    x = _input_as_double(scope, operator, container, via_float32=True)
    raw = _ensemble(scope, container, x, _gb_ensemble(est))
    if len(est.classes_) == 2:
        scale = {"HalfBinomialLoss": 1.0, "ExponentialLoss": 2.0}.get(loss)
        if scale is None:
            raise NotImplementedError(f"GradientBoostingClassifier loss {loss}")
        index = _binary_index(scope, container, raw, inclusive=True)
        proba = _binary_proba(scope, container, raw, scale)
    else:
        if loss != "HalfMultinomialLoss":
            raise NotImplementedError(f"GradientBoostingClassifier loss {loss}")
        index = _argmax(scope, container, raw)
        proba = _softmax(scope, container, raw)
    _labels_from_index(scope, container, index, est.classes_, operator.outputs[0])
    _emit(scope, container, proba, operator.outputs[1])


def convert_gradient_boosting_regressor(scope, operator, container) -> None:
    est = operator.raw_operator
    x = _input_as_double(scope, operator, container, via_float32=True)
    raw = _ensemble(scope, container, x, _gb_ensemble(est))  # identity link for all losses
    _emit(scope, container, raw, operator.outputs[0])


def _hgb_ensemble(est) -> _Ensemble:
    if getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
        raise NotImplementedError("HistGradientBoosting with categorical features")
    baseline = np.asarray(est._baseline_prediction, dtype=np.float64).ravel()
    ensemble = _Ensemble(len(baseline))
    for k, value in enumerate(baseline):
        ensemble.add_constant(k, value)
    for iteration in est._predictors:
        for k, predictor in enumerate(iteration):
            ensemble.add_tree(*_hgb_tree(predictor), k)
    return ensemble


def convert_hist_gradient_boosting_classifier(scope, operator, container) -> None:
    est = operator.raw_operator
    loss = type(est._loss).__name__
    x = _input_as_double(scope, operator, container, via_float32=False)
    raw = _ensemble(scope, container, x, _hgb_ensemble(est))
    if len(est.classes_) == 2:
        if loss != "HalfBinomialLoss":
            raise NotImplementedError(f"HistGradientBoostingClassifier loss {loss}")
        index = _binary_index(scope, container, raw, inclusive=False)
        proba = _binary_proba(scope, container, raw, 1.0)
    else:
        if loss != "HalfMultinomialLoss":
            raise NotImplementedError(f"HistGradientBoostingClassifier loss {loss}")
        index = _argmax(scope, container, raw)
        proba = _softmax(scope, container, raw)
    _labels_from_index(scope, container, index, est.classes_, operator.outputs[0])
    _emit(scope, container, proba, operator.outputs[1])


def convert_hist_gradient_boosting_regressor(scope, operator, container) -> None:
    est = operator.raw_operator
    link = type(est._loss.link).__name__
    x = _input_as_double(scope, operator, container, via_float32=False)
    raw = _ensemble(scope, container, x, _hgb_ensemble(est))
    if link == "LogLink":
        out = _name(scope, "prediction")
        _node(scope, container, "Exp", [raw], [out])
        raw = out
    elif link != "IdentityLink":
        raise NotImplementedError(f"HistGradientBoostingRegressor link {link}")
    _emit(scope, container, raw, operator.outputs[0])


def finalize(model) -> None:
    """Move staged TreeEnsemble nodes to ai.onnx.ml opset 5, in place."""
    staged = [n for n in model.graph.node if n.domain == _STAGING_DOMAIN]
    if not staged:
        return
    for node in staged:
        node.domain = "ai.onnx.ml"
    imports = [o for o in model.opset_import if o.domain != _STAGING_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    for opset in model.opset_import:
        if opset.domain == "ai.onnx.ml":
            opset.version = max(opset.version, ML_OPSET)
            break
    else:
        model.opset_import.add(domain="ai.onnx.ml", version=ML_OPSET)


def _classifier_shapes(operator) -> None:
    """skl2onnx's classifier shapes, with probabilities in the input's precision.

    skl2onnx declares RandomForestClassifier probabilities as float32 whatever
    the input; these converters compute them in double.
    """
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    calculate_linear_classifier_output_shapes(operator)
    if isinstance(operator.inputs[0].type, DoubleTensorType):
        proba = operator.outputs[1]
        proba.type = DoubleTensorType(shape=proba.type.shape)


def register() -> None:
    """Install these converters in skl2onnx (once per process)."""
    global _registered
    if _registered:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    classifier_options = {"zipmap": [True, False, "columns"], "nocl": [True, False]}
    table = [
        (DecisionTreeClassifier, "SklearnDecisionTreeClassifier", convert_forest_classifier),
        (RandomForestClassifier, "SklearnRandomForestClassifier", convert_forest_classifier),
        (ExtraTreesClassifier, "SklearnExtraTreesClassifier", convert_forest_classifier),
        (
            GradientBoostingClassifier,
            "SklearnGradientBoostingClassifier",
            convert_gradient_boosting_classifier,
        ),
        (
            HistGradientBoostingClassifier,
            "SklearnHistGradientBoostingClassifier",
            convert_hist_gradient_boosting_classifier,
        ),
        (DecisionTreeRegressor, "SklearnDecisionTreeRegressor", convert_forest_regressor),
        (RandomForestRegressor, "SklearnRandomForestRegressor", convert_forest_regressor),
        (ExtraTreesRegressor, "SklearnExtraTreesRegressor", convert_forest_regressor),
        (
            GradientBoostingRegressor,
            "SklearnGradientBoostingRegressor",
            convert_gradient_boosting_regressor,
        ),
        (
            HistGradientBoostingRegressor,
            "SklearnHistGradientBoostingRegressor",
            convert_hist_gradient_boosting_regressor,
        ),
    ]
    for cls, alias, converter in table:
        if alias.endswith("Classifier"):
            update_registered_converter(
                cls,
                alias,
                _classifier_shapes,
                converter,
                options=classifier_options,
            )
        else:
            update_registered_converter(
                cls, alias, calculate_linear_regressor_output_shapes, converter
            )
    _registered = True
