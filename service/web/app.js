// The "try a model" page: plain JavaScript, no build step, same-origin requests only.
// GET /v1/models/{name} describes a model (features, labels, versions, metrics);
// POST /v1/models/{name}[/versions/{v}]:predict answers, with probabilities.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // the described model
// Each describe() takes a ticket; only the latest one's answer is shown. The first
// describe (the default model) and a pick made while it is on its way can answer in
// either order: a late answer must neither show the model no longer chosen nor
// re-render the form over what the user has typed since.
let describing = 0;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  return { ok: response.ok, status: response.status, body };
}

function errorMessage(result) {
  const error = result.body && result.body.error;
  if (error && typeof error === "object" && error.message) return error.message;
  if (typeof error === "string") return error;
  return `the service answered HTTP ${result.status}`;
}

function show(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

function formatNumber(value) {
  if (typeof value !== "number") return String(value);
  return Math.abs(value) >= 1000 || Number.isInteger(value)
    ? String(value)
    : value.toPrecision(4).replace(/\.?0+$/, "");
}

// A class as the service answers it (the model's own value), with its display name if any.
function classKey(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function displayName(value) {
  const classes = (current && current.classes) || [];
  const names = (current && current.output_labels) || [];
  const i = classes.findIndex((c) => classKey(c) === classKey(value));
  return i >= 0 && names[i] != null ? names[i] : classKey(value);
}

function classText(value) {
  const key = classKey(value);
  const name = displayName(value);
  return name === key ? key : `${key} (${name})`;
}

// --- service and model list -------------------------------------------------

async function checkService() {
  const status = $("service-status");
  try {
    const ready = await getJSON("/readyz");
    status.textContent = ready.ok ? "service ready" : "service not ready";
    status.className = "status " + (ready.ok ? "ok" : "bad");
  } catch (_) {
    status.textContent = "service unreachable";
    status.className = "status bad";
  }
}

async function loadModels() {
  const select = $("model-select");
  const result = await getJSON("/v1/models");
  if (!result.ok) {
    show($("model-error"), `Could not list the models: ${errorMessage(result)}`);
    return;
  }
  const models = result.body.models;
  if (!models.length) {
    show($("model-error"), "The model store has no models yet: publish one with `predictor publish`.");
    return;
  }
  for (const model of models) {
    const label = model.ready ? model.name : `${model.name} (not loaded)`;
    select.append(el("option", { value: model.name, text: label }));
  }
  // ?model=NAME, else the service's default model (the one /predict answers with).
  const wanted = new URLSearchParams(location.search).get("model") || result.body.default_model;
  if (wanted && models.some((m) => m.name === wanted)) select.value = wanted;
  select.addEventListener("change", () => describe(select.value));
  await describe(select.value);
}

async function describe(name) {
  const ticket = ++describing;
  show($("model-error"), "");
  const result = await getJSON(`/v1/models/${encodeURIComponent(name)}`);
  if (ticket !== describing) return; // a later choice is on its way
  if (!result.ok) {
    show($("model-error"), `Could not describe ${name}: ${errorMessage(result)}`);
    return;
  }
  current = result.body;
  renderModel(current);
  renderForm(current);
  $("result").replaceChildren(el("p", { class: "help", text: "Fill in the inputs and press Predict." }));
  $("request-details").hidden = true;
}

function renderModel(model) {
  $("model-help").textContent = model.description || "";
  $("model-task").textContent = model.task || "unknown";
  $("model-estimator").textContent =
    (model.estimator || "unknown") +
    (model.sklearn_version
      ? ` (trained with scikit-learn ${model.sklearn_version}, served by ${model.serving_sklearn_version})`
      : "");
  $("model-serving").textContent = model.serving_version
    ? `version ${model.serving_version} (${model.runtime})`
    : "nothing: the model is not loaded";
  $("model-outputs").textContent =
    model.task === "classification"
      ? `a class, one of ${(model.classes || []).map(classText).join(", ")}, with probabilities`
      : "a number";
  const body = $("versions-body");
  body.replaceChildren();
  const versionSelect = $("version-select");
  versionSelect.replaceChildren(el("option", { value: "", text: "current" }));
  for (const v of model.versions) {
    const metrics = Object.entries(v.metrics || {})
      .map(([k, value]) => `${k} ${formatNumber(value)}`)
      .join(", ");
    const created = v.created ? new Date(v.created).toLocaleString() : "";
    const badge = v.current ? el("span", { class: "badge", text: "current" }) : "";
    const row = el(
      "tr",
      v.current ? { class: "is-current" } : {},
      el("td", { text: v.version }),
      el("td", { text: created }),
      el("td", { text: metrics || "—" }),
      el("td", {}, badge),
    );
    body.append(row);
    versionSelect.append(el("option", { value: v.version, text: `version ${v.version}` }));
  }
  $("model-details").hidden = false;
}

// --- the form -----------------------------------------------------------------

function fieldId(i) {
  return `feature-${i}`;
}

function rangeHint(f) {
  const base = baseHint(f);
  return f.nullable ? `${base}; may be left empty (missing)` : base;
}

function baseHint(f) {
  if (f.type === "string") {
    return f.categories ? `one of ${f.categories.join(", ")}` : "text";
  }
  if (f.type === "bool") return "true or false";
  const kind = f.type === "int" ? "a whole number" : "a number";
  if (f.minimum != null && f.maximum != null) {
    return `${kind}; training data ranged ${formatNumber(f.minimum)} to ${formatNumber(f.maximum)}`;
  }
  return kind;
}

function renderForm(model) {
  const fields = $("fields");
  fields.replaceChildren();
  show($("form-error"), "");
  (model.features || []).forEach((f, i) => {
    const id = fieldId(i);
    let input;
    if (f.type === "bool") {
      input = el("select", { id, name: f.name });
      input.append(el("option", { value: "", text: "choose…" }));
      input.append(el("option", { value: "true", text: "true" }));
      input.append(el("option", { value: "false", text: "false" }));
    } else if (f.type === "string" && f.categories) {
      input = el("select", { id, name: f.name });
      input.append(el("option", { value: "", text: f.nullable ? "(missing)" : "choose…" }));
      for (const c of f.categories) input.append(el("option", { value: c, text: c }));
    } else {
      input = el("input", {
        id,
        name: f.name,
        type: "text",
        autocomplete: "off",
        inputmode: f.type === "string" ? "text" : "decimal",
        placeholder: f.minimum != null ? formatNumber((f.minimum + f.maximum) / 2) : "",
      });
    }
    input.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
    input.addEventListener("input", () => {
      checkField(f, input);
      show($("form-error"), "");
    });
    fields.append(
      el(
        "div",
        { class: "field" },
        el("label", { for: id, text: f.name }),
        input,
        el("span", { id: `${id}-hint`, class: "hint", text: rangeHint(f) }),
        el("span", { id: `${id}-error`, class: "field-error", role: "alert" }),
      ),
    );
  });
  const sample = model.sample_input && model.sample_input[0];
  $("sample-button").hidden = !sample;
}

function fillSample() {
  const sample = current && current.sample_input && current.sample_input[0];
  if (!sample) return;
  current.features.forEach((f, i) => {
    const input = $(fieldId(i));
    input.value = sample[i] === null ? "" : String(sample[i]);
    checkField(f, input);
  });
}

function setFieldError(input, message, warning = false) {
  const box = $(`${input.id}-error`);
  box.textContent = message;
  box.classList.toggle("warning", warning);
  input.classList.toggle("invalid", Boolean(message) && !warning);
  input.setAttribute("aria-invalid", message && !warning ? "true" : "false");
}

// Returns [value, error]: the JSON value to send, or words saying what is wrong.
function parseField(f, raw) {
  const text = raw.trim();
  if (text === "") {
    if (f.nullable) return [null, null]; // left empty: sent as null, a missing value
    return [null, f.type === "string" || f.type === "bool" ? "Choose a value." : `Enter ${rangeHint(f).split(";")[0]}.`];
  }
  if (f.type === "string") return [text, null];
  if (f.type === "bool") return [text === "true", null];
  const normalized = text.replace(",", ".");
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(normalized)) {
    return [null, `"${text}" is not a number: use digits, with a dot for decimals (e.g. 5.1).`];
  }
  const value = Number(normalized);
  if (!Number.isFinite(value)) return [null, `"${text}" is too large.`];
  if (f.type === "int" && !Number.isInteger(value)) {
    return [null, `"${text}" is not a whole number: this feature takes integers.`];
  }
  return [value, null];
}

function checkField(f, input) {
  const [value, error] = parseField(f, input.value);
  if (error) {
    setFieldError(input, error);
    return [null, false];
  }
  if (typeof value === "number" && f.minimum != null && f.maximum != null) {
    if (value < f.minimum || value > f.maximum) {
      setFieldError(
        input,
        `Outside the training range (${formatNumber(f.minimum)} to ${formatNumber(f.maximum)}): ` +
          "the model will answer, but it has not seen such values.",
        true,
      );
      return [value, true];
    }
  }
  setFieldError(input, "");
  return [value, true];
}

function predictUrl(name, version) {
  const base = `/v1/models/${encodeURIComponent(name)}`;
  return version ? `${base}/versions/${encodeURIComponent(version)}:predict` : `${base}:predict`;
}

async function submit(event) {
  event.preventDefault();
  if (!current) return;
  show($("form-error"), "");
  const row = [];
  let firstBad = null;
  current.features.forEach((f, i) => {
    const input = $(fieldId(i));
    const [value, ok] = checkField(f, input);
    if (!ok && !firstBad) firstBad = input;
    row.push(value);
  });
  if (firstBad) {
    show($("form-error"), "Some inputs need fixing: see the messages next to them.");
    firstBad.focus();
    return;
  }
  const body = { instances: [row], probabilities: current.task === "classification" };
  const url = predictUrl(current.name, $("version-select").value);
  const button = $("predict-button");
  button.disabled = true;
  try {
    const headers = { "Content-Type": "application/json" };
    const key = $("api-key").value.trim();
    if (key) headers["X-API-Key"] = key;
    const result = await getJSON(url, { method: "POST", headers, body: JSON.stringify(body) });
    if (result.status === 401) {
      // The service has API keys configured: ask for one instead of blaming the inputs.
      $("api-key-row").hidden = false;
      show($("form-error"), `${errorMessage(result)} Enter your API key and press Predict again.`);
      $("api-key").focus();
      return;
    }
    if (!result.ok) {
      explainServerError(errorMessage(result));
      return;
    }
    renderResult(result.body);
    renderCurl(url, body);
    renderExplanation(url, body, headers); // explain.js
  } catch (err) {
    show($("form-error"), `The service could not be reached: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

// The server names the feature it refuses ('feature "x": expected ...'): put it next to it.
function explainServerError(message) {
  show($("form-error"), `The service refused the input: ${message}`);
  const match = /feature "([^"]+)"/.exec(message);
  if (!match) return;
  const i = current.features.findIndex((f) => f.name === match[1]);
  if (i >= 0) setFieldError($(fieldId(i)), message);
}

function renderResult(answer) {
  const box = $("result");
  box.replaceChildren();
  const value = answer.predictions[0];
  const isClass = current && current.task === "classification";
  const name = isClass ? displayName(value) : null;
  box.append(
    el("p", { class: "prediction-label", text: "Predicted" }),
    el("p", { id: "prediction", class: "prediction", text: isClass ? classKey(value) : formatNumber(value) }),
  );
  if (name && name !== classKey(value)) {
    box.append(el("p", { id: "prediction-name", class: "help", text: name }));
  }
  box.append(el("p", { class: "help", text: `by ${answer.model} version ${answer.version}` }));
  const proba = answer.probabilities && answer.probabilities[0];
  if (!proba) return;
  const list = el("ul", { id: "probabilities", class: "probabilities" });
  const sorted = Object.entries(proba).sort((a, b) => b[1] - a[1]);
  for (const [key, p] of sorted) {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${Math.max(0.5, p * 100).toFixed(1)}%`; // CSSOM, allowed by the CSP
    const cls = (current.classes || []).find((c) => classKey(c) === key);
    list.append(
      el(
        "li",
        key === classKey(value) ? { class: "top-class" } : {},
        el("span", { class: "proba-label", text: cls === undefined ? key : classText(cls) }),
        el("span", { class: "track" }, bar),
        el("span", { class: "proba-value", text: `${(p * 100).toFixed(1)}%` }),
      ),
    );
  }
  box.append(el("h3", { text: "Probabilities" }), list);
}

function renderCurl(url, body) {
  const origin = location.origin;
  $("curl").textContent =
    `curl -s -X POST ${origin}${url} \\\n  -H 'Content-Type: application/json' \\\n` +
    `  -d '${JSON.stringify(body).replace(/'/g, "'\\''")}'`;
  $("request-details").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict-form").addEventListener("submit", submit);
  $("sample-button").addEventListener("click", fillSample);
  checkService();
  loadModels().catch((err) => show($("model-error"), `Could not load the models: ${err.message}`));
});
