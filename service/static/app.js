// mnist-serve's page: draw or upload a digit, send it to every served model through the public
// API (POST /predict/<variant>@<runtime>), show each answer with its latency, the 28x28 image
// the models saw (POST /prepare), a quick browser-side latency comparison, and the reports.
// Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const INK_WIDTH = 18;
const DEBOUNCE_MS = 150;
const $ = (id) => document.getElementById(id);

const pad = $("pad");
const ctx = pad.getContext("2d");
const strokes = []; // each stroke: list of [x, y] in canvas pixels
let drawing = null;
let picture = null; // an uploaded picture (Blob), shown instead of strokes until cleared
let models = []; // [{name, variant, runtime, device}]
const roundTrips = {}; // model name -> every round trip since the page opened (ms)
let timer = null;

function setStatus(text) { $("status").textContent = text; }

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function quantile(sorted, q) {
  const pos = (sorted.length - 1) * q;
  const low = Math.floor(pos);
  const high = Math.ceil(pos);
  return sorted[low] + (sorted[high] - sorted[low]) * (pos - low);
}

// ---- drawing ------------------------------------------------------------------------------

function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#000";
  ctx.lineWidth = INK_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.beginPath();
    ctx.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    ctx.stroke();
  }
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width),
          (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  picture = null;
  drawing = [point(event)];
  strokes.push(drawing);
  redraw();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  drawing.push(point(event));
  redraw();
});
function endStroke() {
  if (!drawing) return;
  drawing = null;
  schedule();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(classify, DEBOUNCE_MS);
}

$("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  if (strokes.length) schedule(); else resetAnswers();
});
$("clear").addEventListener("click", () => {
  strokes.length = 0;
  picture = null;
  redraw();
  resetAnswers();
});
$("example").addEventListener("click", () => {
  // A "7": a bar and a slanted stroke, for keyboard users and a first try.
  picture = null;
  strokes.length = 0;
  strokes.push([[80, 70], [200, 70]], [[200, 70], [170, 140], [130, 220]]);
  redraw();
  classify();
});

// ---- uploads ------------------------------------------------------------------------------

function usePicture(file) {
  if (!file) return;
  picture = file;
  strokes.length = 0;
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    redraw();
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * scale;
    const h = image.height * scale;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  image.onerror = () => URL.revokeObjectURL(url);
  image.src = url;
  classify();
}
$("file").addEventListener("change", (event) => usePicture(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  usePicture(event.dataTransfer.files[0]);
});

// ---- the API ------------------------------------------------------------------------------

function currentBody() {
  if (picture) return Promise.resolve(picture);
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

async function send(path, blob) {
  const started = performance.now();
  const response = await fetch(path, {
    method: "POST", body: blob, headers: {"content-type": blob.type || "image/png"},
  });
  const body = await response.json().catch(() => ({}));
  return {ok: response.ok, status: response.status, body, ms: performance.now() - started};
}

async function loadModels() {
  const response = await fetch("/variants");
  const variants = await response.json();
  models = [];
  for (const variant of variants) {
    for (const runtime of variant.runtimes) {
      models.push({name: runtime.model, variant: variant.name, runtime: runtime.runtime,
                   device: runtime.device, state: runtime.state, reason: runtime.reason});
    }
  }
  buildCards();
  const ready = models.filter((m) => m.state === "ready").length;
  setStatus(ready ? `${ready} models ready: draw a digit.` : "The models are still loading…");
  if (models.some((m) => m.state === "loading")) setTimeout(loadModels, 1000);
}

function buildCards() {
  const cards = $("cards");
  cards.replaceChildren();
  for (const model of models) {
    const card = document.createElement("article");
    card.className = "card" + (model.state === "failed" ? " failed" : "");
    card.dataset.model = model.name;
    card.setAttribute("aria-label", model.name);
    card.innerHTML = `
      <h3>${model.variant} <span class="runtime">on ${model.runtime}</span></h3>
      <div class="device"></div>
      <div class="digit" aria-label="predicted digit">–</div>
      <dl>
        <dt>model</dt><dd class="model-ms">–</dd>
        <dt>round trip</dt><dd class="rtt-ms">–</dd>
        <dt>median so far</dt><dd class="median-ms">–</dd>
      </dl>
      <div class="bars" role="list" aria-label="probabilities"></div>`;
    // Device and failure reason come from the server: set as text, never as markup.
    card.querySelector(".device").textContent =
      (model.state === "ready" ? model.device : model.state) + (model.reason ? `: ${model.reason}` : "");
    cards.append(card);
  }
}

function resetAnswers() {
  for (const card of document.querySelectorAll(".card")) {
    card.querySelector(".digit").textContent = "–";
    card.querySelector(".bars").replaceChildren();
  }
  $("seen").getContext("2d").clearRect(0, 0, 112, 112);
}

function showSeen(image) {
  const seen = $("seen").getContext("2d");
  const data = seen.createImageData(28, 28);
  image.flat().forEach((v, i) => {
    const level = Math.round(v * 255);
    data.data.set([level, level, level, 255], i * 4);
  });
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  small.getContext("2d").putImageData(data, 0, 0);
  seen.imageSmoothingEnabled = false;
  seen.drawImage(small, 0, 0, 112, 112);
}

function showAnswer(model, result) {
  const card = document.querySelector(`.card[data-model="${model.name}"]`);
  if (!card) return;
  if (!result.ok) {
    card.querySelector(".digit").textContent = "!";
    card.querySelector(".rtt-ms").textContent = `HTTP ${result.status}`;
    card.querySelector(".bars").textContent = result.body.detail || "error";
    return;
  }
  const prediction = result.body.predictions[0];
  (roundTrips[model.name] ||= []).push(result.ms);
  card.querySelector(".digit").textContent = prediction.digit;
  card.querySelector(".model-ms").textContent = `${result.body.timing.model_ms.toFixed(3)} ms`;
  card.querySelector(".rtt-ms").textContent = `${result.ms.toFixed(1)} ms`;
  card.querySelector(".median-ms").textContent =
    `${median(roundTrips[model.name]).toFixed(1)} ms (${roundTrips[model.name].length})`;
  const bars = card.querySelector(".bars");
  bars.replaceChildren();
  prediction.probabilities.forEach((p, digit) => {
    const top = digit === prediction.digit ? " top" : "";
    const row = [
      Object.assign(document.createElement("span"), {textContent: digit, className: top}),
      Object.assign(document.createElement("span"), {className: "bar" + top}),
      Object.assign(document.createElement("span"), {textContent: `${(p * 100).toFixed(1)}%`}),
    ];
    row[1].style.width = `${Math.max(p * 100, 0.5)}%`;
    row[1].setAttribute("role", "listitem");
    row[1].setAttribute("aria-label", `${digit}: ${(p * 100).toFixed(1)} percent`);
    bars.append(...row);
  });
}

async function classify() {
  if (!picture && !strokes.length) return;
  const blob = await currentBody();
  const ready = models.filter((m) => m.state === "ready");
  setStatus("Asking every model…");
  const seen = send("/prepare", blob).then((r) => {
    if (r.ok) showSeen(r.body.images[0]);
    else setStatus(r.body.detail || `HTTP ${r.status}`);
    return r;
  });
  // One model after another, so each round trip is timed without the others in the way.
  for (const model of ready) {
    showAnswer(model, await send(`/predict/${encodeURIComponent(model.name)}`, blob));
  }
  const prepared = await seen;
  if (prepared.ok) setStatus(`Answered by ${ready.length} models.`);
}

// ---- quick compare ------------------------------------------------------------------------

async function compare() {
  const count = Math.min(2000, Math.max(10, Number($("count").value) || 200));
  if (!picture && !strokes.length) $("example").click();
  const blob = await currentBody();
  const ready = models.filter((m) => m.state === "ready");
  const times = {};
  $("compare").disabled = true;
  for (const [i, model] of ready.entries()) {
    times[model.name] = [];
    for (let n = 0; n < count; n++) {
      const result = await send(`/predict/${encodeURIComponent(model.name)}`, blob);
      if (result.ok) times[model.name].push(result.ms);
      if (n % 20 === 0) $("strip").textContent = `${model.name}: ${n}/${count} (model ${i + 1} of ${ready.length})`;
    }
  }
  $("compare").disabled = false;
  drawStrip(times);
}

function drawStrip(times) {
  const names = Object.keys(times).filter((n) => times[n].length);
  const all = names.flatMap((n) => times[n]).sort((a, b) => a - b);
  const high = quantile(all, 0.99) * 1.1;
  const width = 900, left = 190, rowH = 34, top = 10;
  const height = top + rowH * names.length + 30;
  const x = (v) => left + (Math.min(v, high) / high) * (width - left - 20);
  let svg = `<svg viewBox="0 0 ${width} ${height}" role="img" aria-label="Round-trip times per model">`;
  names.forEach((name, i) => {
    const s = [...times[name]].sort((a, b) => a - b);
    const [p5, p25, p50, p75, p95] = [0.05, 0.25, 0.5, 0.75, 0.95].map((q) => quantile(s, q));
    const y = top + i * rowH + rowH / 2;
    svg += `<text x="5" y="${y + 4}" font-size="13">${name}</text>`;
    svg += `<line x1="${x(p5)}" x2="${x(p95)}" y1="${y}" y2="${y}" stroke="#555"/>`;
    svg += `<rect x="${x(p25)}" y="${y - 9}" width="${Math.max(1, x(p75) - x(p25))}" height="18" fill="#cfe0f3" stroke="#0b5cad"/>`;
    svg += `<line x1="${x(p50)}" x2="${x(p50)}" y1="${y - 9}" y2="${y + 9}" stroke="#0b5cad" stroke-width="3"/>`;
    svg += `<text x="${x(p95) + 6}" y="${y + 4}" font-size="11">median ${p50.toFixed(2)} ms</text>`;
  });
  for (let k = 0; k <= 4; k++) {
    const v = (high * k) / 4;
    svg += `<text x="${x(v)}" y="${height - 8}" font-size="11" text-anchor="middle">${v.toFixed(1)} ms</text>`;
  }
  svg += "</svg>";
  $("strip").innerHTML =
    `<p>Browser round trips, ${times[names[0]].length} per model, one at a time: box = middle half, ` +
    `whiskers = 5th to 95th percentile, thick line = median. A quick check, not a load test.</p>` + svg;
}

$("compare").addEventListener("click", compare);

// ---- reports ------------------------------------------------------------------------------

async function loadReports() {
  const list = $("reports");
  const runs = await (await fetch("/reports")).json();
  list.replaceChildren();
  if (!runs.length) {
    list.innerHTML = "<li>No reports yet: run <code>mnist-serve loadtest</code>, <code>explore</code>, <code>tune</code> or <code>make demo</code>.</li>";
    return;
  }
  for (const run of runs) {
    const item = document.createElement("li");
    const link = Object.assign(document.createElement("a"), {href: run.url, textContent: run.name});
    const kind = run.kind && run.kind !== "loadtest" ? `[${run.kind}] ` : "";
    item.append(kind, link, ` ${run.created_at || ""} ${run.models.length ? "· " + run.models.join(", ") : ""}`);
    list.append(item);
  }
}

redraw();
loadModels().catch((err) => setStatus(`Cannot list the models: ${err}`));
loadReports().catch(() => {});
