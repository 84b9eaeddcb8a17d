// The sei app page: plain JavaScript against the server's JSON API (sei/app/server.py).
"use strict";
const $ = (id) => document.getElementById(id);
const HEADERS = { "X-Sei-App": "1" };
let current = null;   // the job this page follows
let timer = null;

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function showFor() {  // show only the fields that the chosen mode, task and PSF use
  const m = mode(), task = $("task").value, family = $("kernel_family").value;
  document.querySelectorAll("[data-modes]").forEach((el) => { el.hidden = !el.dataset.modes.split(" ").includes(m); });
  document.querySelectorAll("[data-tasks]").forEach((el) => { if (el.dataset.tasks !== task) el.hidden = true; else if (!el.dataset.modes) el.hidden = false; });
  document.querySelectorAll("[data-family]").forEach((el) => { el.hidden = !el.dataset.family.split(" ").includes(family); });
  document.querySelectorAll("[data-noise]").forEach((el) => { el.hidden = el.dataset.noise !== $("noise").value; });
}

function fill(select, items) {
  select.innerHTML = "";
  for (const item of items) {
    const option = document.createElement("option");
    option.value = item.value; option.textContent = item.label;
    select.appendChild(option);
  }
}

async function loadConfig() {
  const config = await (await fetch("/api/config")).json();
  const chosen = $("weights").value;
  fill($("weights"), config.models.map((m) => ({ value: m.name, label: m.label })));
  if (chosen && [...$("weights").options].some((o) => o.value === chosen)) $("weights").value = chosen;
  if (!$("method").options.length) {
    fill($("method"), config.methods.map((m) => ({ value: m.name, label: m.label })));
    fill($("sr_factor"), config.sr_factors.map((f) => ({ value: String(f), label: "x" + f })));
    $("time_limit").value = config.time_limit;
  }
  $("limits").textContent = "Limits: " + config.limits + ".";
  $("images").accept = config.accept;
  $("truth").accept = config.accept;
  $("where").textContent = "Files stay on this machine, in " + config.workdir + " (jobs run on " + config.device + ").";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function listFiles() {
  const names = [...$("images").files].map((f) => f.name);
  $("file-list").textContent = names.length ? names.length + " chosen: " + names.join(", ") : "";
}

async function submit() {
  showError("");
  const form = new FormData();
  form.append("mode", mode());
  for (const file of $("images").files) form.append("images", file);
  for (const file of $("truth").files) form.append("truth", file);
  for (const id of ["weights", "method", "task", "sr_factor", "kernel_family", "kernel_size", "noise_level", "noise", "gain", "time_limit"]) {
    form.append(id, $(id).value);
  }
  if ($("ensemble").checked) form.append("ensemble", "on");
  if ($("psf").files.length) form.append("psf", $("psf").files[0]);
  $("run").disabled = true;
  try {
    const response = await fetch("/api/jobs", { method: "POST", body: form, headers: HEADERS });
    const body = await response.json().catch(() => ({ error: "the server answered " + response.status }));
    if (!response.ok) { showError(body.error || ("the server answered " + response.status)); return; }
    follow(body.id);
  } catch (problem) {
    showError("cannot reach the sei app server: " + problem);
  } finally {
    $("run").disabled = false;
  }
}

function follow(id) {
  current = id;
  location.hash = "job=" + id;   // a reloaded or reopened page follows the same job
  $("results").innerHTML = "";
  $("results-section").hidden = true;
  $("job").hidden = false;
  poll();
}

function formatSeconds(s) {
  if (s == null) return "";
  s = Math.round(s);
  return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
}

function showProgress(job) {
  const p = job.progress || {};
  const bar = $("progress-bar");
  let text = "";
  if (p.step != null) {
    bar.value = p.time_limit ? Math.min(1, 1 - p.seconds_left / p.time_limit) : 0;
    text = "step " + p.step + (p.steps_planned ? " of " + p.steps_planned : "") + ", loss " + Number(p.loss).toPrecision(3)
      + ", about " + formatSeconds(p.seconds_left) + " left";
  } else if (p.images) {
    bar.value = p.images_done / p.images;
    text = p.images_done + " of " + p.images + " image(s) done";
  } else if (job.state === "done") {
    bar.value = 1;
  } else {
    bar.removeAttribute("value");   // indeterminate
  }
  if (job.state === "done") bar.value = 1;
  const running = job.state === "queued" || job.state === "running";
  $("progress-text").textContent = text + (job.seconds != null ? "  (" + formatSeconds(job.seconds) + (running ? " so far)" : " in all)") : "");
}

async function poll() {
  clearTimeout(timer);
  if (!current) return;
  const id = current;
  let job;
  try {
    const response = await fetch("/api/jobs/" + id);
    if (response.status === 404) { $("job").hidden = true; current = null; return; }
    job = await response.json();
  } catch (problem) {
    timer = setTimeout(poll, 2000);   // the server may be busy or restarting
    return;
  }
  if (id !== current) return;
  $("job-id").textContent = "(job " + job.id + ", " + job.kind + ")";
  $("state").textContent = job.state;
  $("phase").textContent = job.phase;
  $("state").dataset.state = job.state;
  showProgress(job);
  $("messages").innerHTML = "";
  for (const message of job.messages) {
    const li = document.createElement("li"); li.textContent = message; $("messages").appendChild(li);
  }
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error || "";
  $("cancel").hidden = !(job.state === "queued" || job.state === "running");
  if (job.state === "done") showResults(job);
  if (job.state === "queued" || job.state === "running") timer = setTimeout(poll, 500);
  else { loadJobs(); loadConfig(); }
}

function fileUrl(job, name, inline) {
  return "/api/jobs/" + job.id + "/files/" + name.split("/").map(encodeURIComponent).join("/") + (inline ? "?inline=1" : "");
}

function showResults(job) {
  const box = $("results");
  box.innerHTML = "";
  for (const result of job.results) {
    const node = $("result-template").content.firstElementChild.cloneNode(true);
    node.dataset.name = result.name;
    node.querySelector(".name").textContent = result.name + " (" + result.size[1] + " x " + result.size[0] + ", " + result.bits + "-bit)";
    if (result.psnr != null) {
      node.querySelector(".psnr").textContent = "PSNR " + result.psnr.toFixed(2) + " dB"
        + (result.psnr_input != null ? " (input " + result.psnr_input.toFixed(2) + " dB)" : "");
    }
    node.querySelector("img.before").src = fileUrl(job, result.input_preview, true);
    node.querySelector("img.after").src = fileUrl(job, result.result_preview, true);
    const download = node.querySelector("a.download");
    download.href = fileUrl(job, result.download, false);
    download.setAttribute("download", "");
    const slider = node.querySelector(".slider"), zoom = node.querySelector(".zoom");
    const compare = node.querySelector(".compare"), after = node.querySelector("img.after"), divider = node.querySelector(".divider");
    slider.addEventListener("input", () => {
      after.style.clipPath = "inset(0 0 0 " + slider.value + "%)";
      divider.style.left = slider.value + "%";
    });
    zoom.addEventListener("input", () => {
      compare.style.width = (100 * zoom.value) + "%";
      node.querySelector(".zoom-value").textContent = zoom.value + "x";
    });
    box.appendChild(node);
  }
  const link = $("weights-download");
  link.hidden = $("weights-note").hidden = !job.weights;
  if (job.weights) { link.href = fileUrl(job, job.weights, false); link.setAttribute("download", ""); }
  $("results-section").hidden = false;
}

async function loadJobs() {
  const { jobs } = await (await fetch("/api/jobs")).json();
  const list = $("jobs");
  list.innerHTML = "";
  for (const job of jobs) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#job=" + job.id; a.textContent = job.id;
    a.addEventListener("click", (event) => { event.preventDefault(); follow(job.id); });
    li.appendChild(a);
    li.appendChild(document.createTextNode(" " + job.kind + ", " + job.images.length + " image(s): " + job.state));
    list.appendChild(li);
  }
}

async function cancel() {
  if (!current) return;
  await fetch("/api/jobs/" + current + "/cancel", { method: "POST", headers: HEADERS });
  poll();
}

function setUpDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    $("images").files = event.dataTransfer.files;
    listFiles();
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  document.querySelectorAll("input[name=mode]").forEach((el) => el.addEventListener("change", showFor));
  $("task").addEventListener("change", showFor);
  $("kernel_family").addEventListener("change", showFor);
  $("noise").addEventListener("change", showFor);
  $("images").addEventListener("change", listFiles);
  $("run").addEventListener("click", submit);
  $("cancel").addEventListener("click", cancel);
  setUpDrop();
  showFor();
  await loadConfig();
  await loadJobs();
  const match = location.hash.match(/job=([0-9a-f]+)/);
  if (match) follow(match[1]);
  document.body.dataset.ready = "1";
});
