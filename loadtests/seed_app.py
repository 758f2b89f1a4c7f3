"""The seed article's Flask app, as written, fixed only so that it runs.

From ../shared/seeds/000_*.txt (section 3.2, step 2): ``POST /predict`` reads
``data['input']``, calls ``model.predict(input_data)`` and answers
``jsonify({'prediction': prediction.tolist()})``. The article never says where
``model`` comes from, and a single row ``[f1, f2, ...]`` is 1-D, which
``predict`` refuses. The only two changes:

1. ``model`` is loaded with joblib from ``SEED_MODEL_PATH`` (the benchmark
   exports the very estimator our service serves to that file);
2. a single row is wrapped in a list; a list of rows goes through unchanged.

No validation, no metrics, no cache, no logging: the floor the benchmark
compares our stack with. One addition, in this copy only: ``POST /predict/batch``
(the same body, ``{"input": [[...], ...]}``) names the batch case the benchmark
loads with 100-row requests. Run it the way the benchmark does::

    SEED_MODEL_PATH=.bench/models/iris.joblib \\
        gunicorn -w 2 -k sync -b 127.0.0.1:8100 loadtests.seed_app:app
"""

import os

import joblib
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.environ["SEED_MODEL_PATH"])  # fix 1: the article never loads it


@app.route("/predict", methods=["POST"])
def predict():
    data = request.get_json()
    input_data = data["input"]
    # 对输入数据进行预处理 (the article's "preprocess the input" placeholder)
    if input_data and not isinstance(input_data[0], list):
        input_data = [input_data]  # fix 2: one row -> a batch of one
    prediction = model.predict(input_data)
    # 将预测结果转化为JSON格式
    result = {"prediction": prediction.tolist()}
    return jsonify(result)


@app.route("/predict/batch", methods=["POST"])
def predict_batch():
    """Added in the benchmark's copy: a batch of rows, the same body as /predict."""
    rows = request.get_json()["input"]
    return jsonify({"prediction": model.predict(rows).tolist()})
