// Draws the owner's page charts (templates/index.html) with the vendored uPlot, from the
// aggregates the server embedded in #chart-data. Sets <body data-charts="drawn"> when done,
// which the browser test waits for.
"use strict";

const data = JSON.parse(document.getElementById("chart-data").textContent);
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

function width(element) {
  return Math.max(200, Math.min(element.clientWidth, 560));  // a phone's width, or the grid's cell
}

function cellText(value) {
  if (value == null) return "—";
  return typeof value === "number" ? String(Math.round(value * 10000) / 10000) : value;
}

// What a chart draws, as a table a screen reader (or anyone) can read: one row per x.
function figuresTable(element, header, rows) {
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "The figures as a table";
  const box = document.createElement("div");
  box.className = "scroll";
  box.tabIndex = 0;
  box.setAttribute("role", "region");
  box.setAttribute("aria-label", `${element.querySelector("h3").textContent}: the figures`);
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const name of header) {
    const cell = document.createElement("th");
    cell.scope = "col";
    cell.textContent = name;
    head.appendChild(cell);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const line = body.insertRow();
    for (const value of row) line.insertCell().textContent = cellText(value);
  }
  box.appendChild(table);
  details.append(summary, box);
  element.appendChild(details);
}

// The chart, drawn for the eye, and its figures as a table beside it for everyone else.
function draw(element, options, columns, xName, xText) {
  const plot = new uPlot({...options, width: width(element)}, columns, element);
  plot.root.setAttribute("aria-hidden", "true");
  const header = [xName, ...options.series.slice(1).map((series) => series.label)];
  const rows = columns[0].map((x, i) => [xText(x, i), ...columns.slice(1).map((column) => column[i])]);
  figuresTable(element, header, rows);
}

const periodStart = (seconds) => new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ");

function nothingYet(element, message) {
  const note = document.createElement("p");
  note.className = "empty";
  note.textContent = message;
  element.appendChild(note);
}

// One x axis (period starts, in seconds) for every model version's points.
function aligned(byVersion, fields) {
  const times = [...new Set(Object.values(byVersion).flat().map((p) => Date.parse(p.start) / 1000))];
  times.sort((a, b) => a - b);
  const columns = [times];
  const series = [{}];
  let colour = 0;
  for (const [version, points] of Object.entries(byVersion)) {
    const at = new Map(points.map((p) => [Date.parse(p.start) / 1000, p]));
    for (const [field, label] of fields) {
      columns.push(times.map((t) => (at.has(t) && at.get(t)[field] != null ? at.get(t)[field] : null)));
      series.push({label: `${label} (${version})`, stroke: COLOURS[colour++ % COLOURS.length], width: 2,
                   points: {show: true}, spanGaps: false});
    }
  }
  return {columns, series};
}

// A chart over the series' whole window (since .. as_of), however few its points; `levels` are
// constant lines ({label, value}) drawn across it, such as the test set's ROC AUC.
function timeChart(id, window, fields, emptyMessage, range, levels = []) {
  const element = document.getElementById(id);
  const byVersion = window.by_model_version;
  if (!Object.keys(byVersion).length) return nothingYet(element, emptyMessage);
  const {columns, series} = aligned(byVersion, fields);
  if (columns.slice(1).every((column) => column.every((value) => value == null))) {
    return nothingYet(element, emptyMessage);
  }
  for (const level of levels) {
    columns.push(columns[0].map(() => level.value));
    series.push({label: level.label, stroke: "#999", dash: [4, 4], points: {show: false}});
  }
  const scales = {x: {time: true, range: [Date.parse(window.since) / 1000, Date.parse(window.as_of) / 1000]}};
  if (range) scales.y = {range};
  draw(element, {height: 220, series, scales}, columns, "period start (UTC)", periodStart);
}

function calibration() {
  const element = document.getElementById("calibration");
  const rows = data.calibration.filter((row) => row.labelled > 0);
  if (!rows.length) return nothingYet(element, "No labelled predictions yet.");
  const x = rows.map((row) => row.mean_proba);
  const columns = [x, rows.map((row) => row.observed_positive_rate), x];
  const series = [
    {label: "mean predicted"},
    {label: "observed positive rate", stroke: COLOURS[0], width: 2, points: {show: true, size: 7}},
    {label: "perfect calibration", stroke: "#999", dash: [4, 4], points: {show: false}},
  ];
  const scales = {x: {time: false, range: [0, 1]}, y: {range: [0, 1]}};
  draw(element, {height: 260, series, scales}, columns, "mean predicted", (x) => cellText(x));
}

function histogram() {
  const element = document.getElementById("histogram");
  const rows = data.histogram;
  if (!rows.length || rows.every((row) => row.positives + row.negatives === 0)) {
    return nothingYet(element, "No labelled predictions yet.");
  }
  const bars = uPlot.paths.bars({size: [0.9, 40], align: 1});
  const columns = [rows.map((row) => row.from), rows.map((row) => row.negatives), rows.map((row) => row.positives)];
  const series = [
    {label: "probability from"},
    {label: "true class negative", stroke: COLOURS[0], fill: "rgba(31,119,180,0.35)", paths: bars, points: {show: false}},
    {label: "true class positive", stroke: COLOURS[1], fill: "rgba(214,39,40,0.35)", paths: bars, points: {show: false}},
  ];
  const scales = {x: {time: false, range: [0, 1]}};
  draw(element, {height: 240, series, scales}, columns, "probability from", (x) => cellText(x));
}

timeChart("served-by-hour", data.by_hour, [["predictions", "served"], ["labelled", "labelled"]],
          "No predictions in the last 48 hours.");
timeChart("served-by-day", data.by_day, [["predictions", "served"], ["labelled", "labelled"]],
          "No predictions in the last 90 days.");
// Each bin of a feature: its share in training (left bar) and now (right bar).
function driftChart(index, feature) {
  const element = document.getElementById(`drift-${index + 1}`);
  const labels = feature.bins.map((bin) => bin.bin);
  const x = labels.map((_, i) => i);
  const left = uPlot.paths.bars({size: [0.4, 30], align: -1});
  const right = uPlot.paths.bars({size: [0.4, 30], align: 1});
  const columns = [x, feature.bins.map((bin) => bin.training), feature.bins.map((bin) => bin.now)];
  const series = [
    {label: "bin", value: (u, i) => (i == null ? "" : labels[i])},
    {label: "training", stroke: "#999", fill: "rgba(150,150,150,0.4)", paths: left, points: {show: false}},
    {label: "now", stroke: COLOURS[0], fill: "rgba(31,119,180,0.45)", paths: right, points: {show: false}},
  ];
  const axes = [{values: (u, splits) => splits.map((i) => labels[i] ?? ""), rotate: -30, size: 60}, {}];
  const scales = {x: {time: false, range: [-0.6, labels.length - 0.4]}, y: {range: [0, 1]}};
  draw(element, {height: 260, series, axes, scales}, columns, "bin", (x, i) => labels[i]);
}

const tested = data.test_roc_auc == null ? [] : [{label: "test set", value: data.test_roc_auc}];
timeChart("quality-by-day", data.by_day, [["roc_auc", "realised"], ["expected_roc_auc", "expected"]],
          "No predictions yet.", [0, 1], tested);
timeChart("loss-by-day", data.by_day, [["log_loss", "log loss"], ["brier_score", "Brier"]],
          "No labelled predictions yet.");
calibration();
histogram();
data.drift.forEach((feature, index) => driftChart(index, feature));
document.body.dataset.charts = "drawn";
