// Small behaviours kept out of the markup (the CSP forbids inline scripts).
document.addEventListener("change", (event) => {
  const el = event.target;
  if (el instanceof HTMLSelectElement && el.hasAttribute("data-autosubmit") && el.form) {
    el.form.requestSubmit();
  }
});
document.addEventListener("htmx:afterSwap", () => {
  for (const toast of document.querySelectorAll("#toasts .toast")) {
    setTimeout(() => toast.remove(), 6000);
  }
});

// Uploads with a progress bar: forms marked data-upload are sent with XHR (the CSRF token travels in a
// header, as htmx sends it). A JSON answer with an id opens that dataset; a redirect is followed.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-upload")) return;
  event.preventDefault();
  const bar = form.querySelector("[data-upload-progress]");
  const text = form.querySelector("[data-upload-text]");
  const error = form.querySelector("[data-upload-error]");
  const progress = bar ? bar.querySelector("progress") : null;
  const data = new FormData(form);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", form.action);
  xhr.setRequestHeader("X-CSRF-Token", data.get("csrf_token") || "");
  xhr.setRequestHeader("Accept", "application/json");
  const started = Date.now();
  if (bar) bar.hidden = false;
  if (error) error.hidden = true;
  xhr.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable || !progress) return;
    progress.value = e.loaded / e.total;
    const elapsed = (Date.now() - started) / 1000;
    const left = e.loaded > 0 ? Math.round(elapsed * (e.total - e.loaded) / e.loaded) : 0;
    if (text) text.textContent = `${Math.round(100 * e.loaded / e.total)}% · ${left}s`;
  });
  xhr.addEventListener("load", () => {
    if (xhr.status >= 200 && xhr.status < 300) {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { body = null; }
      window.location.href = body && body.id ? form.dataset.redirect + body.id : xhr.responseURL;
      return;
    }
    let message = xhr.statusText;
    try { message = JSON.parse(xhr.responseText).error.message; } catch (_) { /* keep the status text */ }
    if (error) { error.textContent = message; error.hidden = false; }
    if (bar) bar.hidden = true;
  });
  xhr.addEventListener("error", () => {
    if (error) { error.textContent = "The upload failed: the connection was lost."; error.hidden = false; }
  });
  xhr.send(data);
});

// Drag and drop onto a .dropzone fills its file input.
document.addEventListener("dragover", (event) => {
  const zone = event.target instanceof Element ? event.target.closest(".dropzone") : null;
  if (zone) { event.preventDefault(); zone.classList.add("dragging"); }
});
document.addEventListener("dragleave", (event) => {
  const zone = event.target instanceof Element ? event.target.closest(".dropzone") : null;
  if (zone) zone.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  const zone = event.target instanceof Element ? event.target.closest(".dropzone") : null;
  if (!zone || !event.dataTransfer) return;
  event.preventDefault();
  zone.classList.remove("dragging");
  const input = zone.querySelector("input[type=file]");
  if (input) { input.files = event.dataTransfer.files; zone.querySelector("span").textContent = input.files[0].name; }
});
document.addEventListener("change", (event) => {
  const input = event.target;
  if (input instanceof HTMLInputElement && input.type === "file" && input.closest(".dropzone") && input.files.length) {
    input.closest(".dropzone").querySelector("span").textContent = input.files[0].name;
  }
});

// New-job form: show the settings of the chosen adapter and method only.
function syncJobForm() {
  const form = document.getElementById("job-form");
  if (!form) return;
  const adapter = form.querySelector("select[name=adapter]").value;
  const method = form.querySelector("select[name=method]").value;
  form.querySelectorAll("[data-adapters]").forEach((el) => { el.hidden = !el.dataset.adapters.split(" ").includes(adapter); });
  form.querySelectorAll("[data-methods]").forEach((el) => { el.hidden = !el.dataset.methods.split(" ").includes(method); });
}
document.addEventListener("DOMContentLoaded", syncJobForm);
document.addEventListener("change", syncJobForm);
// Enter in the preset name saves the preset; it must not launch the job the form describes.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target instanceof HTMLInputElement && event.target.name === "preset_name") {
    event.preventDefault();
    document.getElementById("save-preset")?.click();
  }
});

// Buttons marked data-fill put their data-value into the field their selector names (example graders).
document.addEventListener("click", (e) => {
  const button = e.target instanceof Element ? e.target.closest("[data-fill]") : null;
  if (!button) return;
  const field = document.querySelector(button.dataset.fill);
  if (field) { field.value = button.dataset.value; field.dispatchEvent(new Event("input", { bubbles: true })); }
});

// New-job form: the method follows the chosen data (pairs → DPO, labelled answers → KTO, text → continued
// pre-training) until the user picks one; a method brings its own defaults (learning rate, epochs, beta) to
// the fields the user has not changed; a learning rate far outside the method's usual range is flagged
// beside the field (the estimate panel says the same from the server).
(() => {
  const form = document.getElementById("job-form");
  if (!form || !form.dataset.methodDefaults) return;
  const defaults = JSON.parse(form.dataset.methodDefaults);
  const usual = JSON.parse(form.dataset.usualRates);
  const touched = new Set();
  const field = (name) => form.elements.namedItem(name);
  const note = document.createElement("small");
  note.className = "notice-warn";
  note.id = "lr-warning";
  note.hidden = true;
  field("learning_rate")?.closest("label")?.append(note);

  function flag() {
    const method = field("method").value, adapter = field("adapter").value;
    const rate = parseFloat(field("learning_rate")?.value || "");
    let [low, high] = usual[method] || [0, Infinity];
    if (adapter === "full" || adapter === "freeze") { low /= 10; high /= 10; }
    const off = Number.isFinite(rate) && (rate < low || rate > high);
    note.hidden = !off;
    if (off) {
      note.textContent = form.dataset.lrMessage.replace("{side}", rate > high ? form.dataset.above : form.dataset.below)
        .replace("{method}", method.toUpperCase()).replace("{low}", low).replace("{high}", high);
    }
  }
  function apply(method) {
    for (const [name, value] of Object.entries(defaults[method] || {})) {
      const input = field(name);
      if (input && !touched.has(name)) input.value = value;
    }
    syncJobForm();
    flag();
    echo = true; // the estimate follows the new values; this handler ignores its own event
    form.dispatchEvent(new Event("change", { bubbles: true }));
    echo = false;
  }
  let echo = false;
  form.addEventListener("input", (event) => {
    if (event.target.name && event.target.name !== "dataset_version_id") touched.add(event.target.name);
    if (event.target.name === "learning_rate") flag(); // as it is typed
  });
  form.addEventListener("change", (event) => {
    if (echo) return;
    const target = event.target;
    if (target.name === "dataset_version_id" && !touched.has("method")) {
      const method = target.selectedOptions[0]?.dataset.method;
      if (method && method !== field("method").value) { field("method").value = method; apply(method); return; }
    }
    if (target.name === "method") { touched.add("method"); apply(target.value); return; }
    flag();
  });
  document.addEventListener("DOMContentLoaded", flag);
})();
