// Under a prediction: why the model answered it. POST .../:explain with the same row and
// draw the contributions as a bar chart, largest first, signed colours, base value and output.
// Loaded after app.js (shares its el, $ and current); no inline script, no CDN (CSP).
"use strict";

function explainUrl(predictUrl) {
  return predictUrl.replace(/:predict$/, ":explain");
}

function formatContribution(value) {
  const text = Math.abs(value) >= 1000 || (value !== 0 && Math.abs(value) < 0.001)
    ? value.toExponential(2)
    : value.toFixed(3);
  return value > 0 ? `+${text}` : text;
}

async function renderExplanation(predictUrl, body, headers) {
  const old = document.getElementById("explanation");
  if (old) old.remove();
  const box = el("section", { id: "explanation", class: "explanation", "aria-live": "polite" });
  $("result").append(box);
  let result;
  try {
    result = await getJSON(explainUrl(predictUrl), {
      method: "POST", headers, body: JSON.stringify({ instances: body.instances }),
    });
  } catch (err) {
    box.append(el("p", { class: "help", text: `No explanation: ${err.message}` }));
    return;
  }
  box.append(el("h3", { text: "Why this prediction" }));
  if (!result.ok) {
    box.append(el("p", { id: "explanation-unavailable", class: "help", text: `No explanation: ${errorMessage(result)}` }));
    return;
  }
  drawContributions(box, result.body.features, result.body.explanations[0]);
}

function drawContributions(box, features, row) {
  const kind = { probability: "probability", log_odds: "log-odds", value: "value" }[row.output_kind] || row.output_kind;
  box.append(el("p", {
    id: "explanation-summary",
    class: "help",
    text: `Base value ${formatNumber(row.base_value)} + contributions = output ${formatNumber(row.output)} (${kind}, ${row.method}).`,
  }));
  const items = features.map((name, i) => [name, row.contributions[i]]);
  items.sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  const largest = Math.max(...items.map(([, v]) => Math.abs(v)), 1e-12);
  const list = el("ul", { id: "contributions", class: "contributions" });
  for (const [name, value] of items) {
    const bar = el("span", { class: value >= 0 ? "cbar positive" : "cbar negative" });
    bar.style.width = `${Math.max(0.5, (Math.abs(value) / largest) * 100).toFixed(1)}%`; // CSSOM: CSP-safe
    list.append(el(
      "li",
      {},
      el("span", { class: "contribution-label", text: name }),
      el("span", { class: value >= 0 ? "ctrack up" : "ctrack down" }, bar),
      el("span", { class: "contribution-value", text: formatContribution(value) }),
    ));
  }
  box.append(list);
}
