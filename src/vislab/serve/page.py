"""The web page ``GET /`` serves: one self-contained HTML file (inline CSS and JS, no CDN), so it
works offline. Drop or pick images; each shows its top-k as bars; Grad-CAM on request; for a
segmentation model, the mask overlay and its legend. Errors are shown in the page."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vislab serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body{font:15px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1f2933;color:#fff;padding:12px 20px}header b{font-size:18px}
#model{opacity:.8;margin-left:12px}
main{padding:20px;max-width:1100px;margin:auto}
#drop{border:2px dashed #8a94a6;border-radius:10px;padding:30px;text-align:center;background:#fff;cursor:pointer}
#drop.over{background:#e6f0ff;border-color:#2f6fde}
#errors div,.err{color:#b00020;background:#fde8ec;padding:6px 10px;border-radius:6px;margin:8px 0}
#cards{display:flex;flex-wrap:wrap;gap:16px;margin-top:16px}
.card{background:#fff;border-radius:10px;padding:12px;width:320px;box-shadow:0 1px 3px #0002}
.card img{max-width:100%;max-height:220px;display:block;margin:auto}
.name{font-size:12px;color:#555;word-break:break-all;margin:6px 0}
.row{display:flex;align-items:center;gap:6px;margin:3px 0;font-size:13px}
.label{width:120px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar{flex:1;background:#e3e7ee;border-radius:4px;height:14px}
.bar span{display:block;height:100%;background:#2f6fde;border-radius:4px}
.pct{width:52px;text-align:right}
button{margin-top:8px;padding:5px 10px;border-radius:6px;border:1px solid #2f6fde;background:#fff;color:#2f6fde;cursor:pointer}
.stack{position:relative}.stack .mask{position:absolute;left:0;top:0;width:100%;height:100%;opacity:.5;image-rendering:pixelated}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:middle}
</style></head>
<body><header><b>vislab serve</b><span id="model">loading…</span></header>
<main>
<div id="drop" tabindex="0">Drop images here, or <label style="color:#2f6fde;cursor:pointer;text-decoration:underline">pick files
<input id="pick" type="file" accept="image/*" multiple hidden></label></div>
<div id="errors"></div>
<div id="cards"></div>
</main>
<script>
"use strict";
let info = null;
const $ = (id) => document.getElementById(id);
function showError(where, text) {
  const div = document.createElement("div");
  div.className = "err"; div.textContent = text;
  where.appendChild(div);
}
async function errorText(response) {
  try { const body = await response.json(); if (body.error) return body.error.code + ": " + body.error.message; }
  catch (e) { /* not JSON */ }
  return "HTTP " + response.status;
}
async function loadInfo() {
  try {
    const response = await fetch("/v1/info");
    if (!response.ok) { $("model").textContent = await errorText(response); setTimeout(loadInfo, 1000); return; }
    info = await response.json();
    $("model").textContent = info.name + " · " + info.task + " · " + info.class_names.length + " classes · " + info.runtime;
  } catch (e) { showError($("errors"), "cannot reach the server: " + e); }
}
function bars(card, top) {
  for (const t of top) {
    const row = document.createElement("div"); row.className = "row";
    const label = document.createElement("span"); label.className = "label cls"; label.textContent = t["class"]; label.title = t["class"];
    const bar = document.createElement("span"); bar.className = "bar";
    const fill = document.createElement("span"); fill.style.width = (100 * t.probability).toFixed(1) + "%"; bar.appendChild(fill);
    const pct = document.createElement("span"); pct.className = "pct"; pct.textContent = (100 * t.probability).toFixed(1) + "%";
    row.append(label, bar, pct); card.appendChild(row);
  }
}
async function post(path, file) {
  const form = new FormData(); form.append("file", file, file.name);
  return fetch(path, {method: "POST", body: form});
}
async function explain(card, file, button) {
  button.disabled = true;
  try {
    const response = await post("/v1/explain", file);
    if (!response.ok) { showError(card, await errorText(response)); return; }
    const img = document.createElement("img"); img.className = "cam";
    img.src = URL.createObjectURL(await response.blob()); card.appendChild(img);
  } catch (e) { showError(card, "request failed: " + e); }
  finally { button.disabled = false; }
}
async function segment(card, file, stack) {
  const response = await post("/v1/segment", file);
  if (!response.ok) { showError(card, await errorText(response)); return; }
  const body = await response.json();
  const mask = document.createElement("img"); mask.className = "mask"; mask.src = "data:image/png;base64," + body.mask_png;
  stack.appendChild(mask);
  const legend = document.createElement("div");
  for (const [name, share] of Object.entries(body.shares)) {
    if (share <= 0) continue;
    const c = body.palette[name]; const row = document.createElement("div"); row.className = "row";
    const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = "rgb(" + c.join(",") + ")";
    const label = document.createElement("span"); label.className = "label cls"; label.textContent = name;
    const pct = document.createElement("span"); pct.className = "pct"; pct.textContent = (100 * share).toFixed(1) + "%";
    row.append(sw, label, pct); legend.appendChild(row);
  }
  card.appendChild(legend);
}
async function handle(file) {
  const card = document.createElement("div"); card.className = "card";
  const stack = document.createElement("div"); stack.className = "stack";
  const img = document.createElement("img"); img.src = URL.createObjectURL(file); img.alt = file.name;
  stack.appendChild(img); card.appendChild(stack);
  const name = document.createElement("div"); name.className = "name"; name.textContent = file.name; card.appendChild(name);
  $("cards").prepend(card);
  try {
    if (info && info.per_pixel) { await segment(card, file, stack); return; }
    const response = await post("/v1/predict", file);
    if (!response.ok) { showError(card, await errorText(response)); return; }
    const result = (await response.json())[0];
    if (result.error) { showError(card, result.code + ": " + result.error); return; }
    bars(card, result.top || []);
    if (info && info.explain) {
      const button = document.createElement("button"); button.textContent = "Grad-CAM";
      button.onclick = () => explain(card, file, button); card.appendChild(button);
    }
  } catch (e) { showError(card, "request failed: " + e); }
}
function handleAll(files) { for (const f of files) handle(f); }
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handleAll(e.dataTransfer.files); });
$("pick").addEventListener("change", (e) => { handleAll(e.target.files); e.target.value = ""; });
loadInfo();
</script></body></html>
"""
