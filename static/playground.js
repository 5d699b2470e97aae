// Playground: stream answers from the inference server (text arrives piece by piece and is shown with
// textContent, never as HTML), one model or two side by side; thumbs and pairwise picks are saved.
(() => {
  const root = document.getElementById("playground");
  if (!root) return;
  const labels = JSON.parse(root.dataset.labels);
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
  const columns = { a: root.querySelector("[data-side=a]"), b: root.querySelector("[data-side=b]") };
  let history = { a: [], b: [] };
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };

  function models() {
    return { a: document.getElementById("model-a").value, b: document.getElementById("model-b").value };
  }
  function syncTitles() {
    const m = models();
    columns.b.hidden = !m.b;
    for (const side of ["a", "b"]) {
      const select = document.getElementById(`model-${side}`);
      columns[side].querySelector(".chat-title").textContent = select.selectedOptions[0]?.textContent || "";
    }
  }
  function reset() {
    history = { a: [], b: [] };
    root.querySelectorAll(".chat-log").forEach((log) => { log.textContent = ""; });
    document.getElementById("pick").hidden = true;
  }
  async function post(url, body) {
    return fetch(url, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body) });
  }
  function params() {
    return {
      temperature: Number(document.getElementById("temperature").value),
      top_p: Number(document.getElementById("top-p").value),
      max_tokens: Number(document.getElementById("max-tokens").value),
    };
  }

  async function streamInto(side, model, messages, target) {
    const response = await post("/playground/stream", { model, messages, ...params() });
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error.message; } catch (_) { /* keep the status text */ }
      target.textContent = `${labels.error} ${message}`;
      target.classList.add("error-text");
      return null;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      target.textContent = text;
    }
    return text;
  }

  function thumbs(item, prompt, model, answer) {
    const row = el("div", "thumbs");
    for (const [choice, label, sign] of [["up", labels.up, "👍"], ["down", labels.down, "👎"]]) {
      const button = el("button", "link", sign);
      button.type = "button";
      button.title = label;
      button.setAttribute("aria-label", label);
      button.dataset.choice = choice;
      button.addEventListener("click", async () => {
        const r = await post("/playground/feedback", { prompt, model_a: model, answer_a: answer, choice });
        if (r.ok) { row.textContent = labels.saved; }
      });
      row.appendChild(button);
    }
    item.appendChild(row);
  }

  async function send(event) {
    event.preventDefault();
    const text = document.getElementById("prompt").value.trim();
    if (!text) return;
    const m = models();
    const system = document.getElementById("system").value.trim();
    const sides = m.b ? ["a", "b"] : ["a"];
    document.getElementById("send").disabled = true;
    document.getElementById("pick").hidden = true;
    const prompts = {};
    const answers = {};
    await Promise.all(sides.map(async (side) => {
      const messages = [...(system ? [{ role: "system", content: system }] : []), ...history[side], { role: "user", content: text }];
      prompts[side] = messages;
      const log = columns[side].querySelector(".chat-log");
      log.appendChild(el("li", "msg msg-user", text));
      const item = el("li", "msg msg-assistant");
      const body = el("div", "msg-text");
      body.dataset.answer = side;
      item.appendChild(body);
      log.appendChild(item);
      const answer = await streamInto(side, m[side], messages, body);
      if (answer !== null) {
        answers[side] = answer;
        history[side].push({ role: "user", content: text }, { role: "assistant", content: answer });
        if (!m.b) thumbs(item, messages, m[side], answer);
      }
    }));
    if (m.b && answers.a !== undefined && answers.b !== undefined) {
      const pick = document.getElementById("pick");
      pick.hidden = false;
      for (const button of pick.querySelectorAll("button")) {
        button.textContent = button.dataset.pick === "a" ? labels.a_better : labels.b_better;
        button.onclick = async () => {
          const r = await post("/playground/feedback", {
            prompt: prompts.a, model_a: m.a, answer_a: answers.a, model_b: m.b, answer_b: answers.b, choice: button.dataset.pick,
          });
          if (r.ok) { pick.hidden = true; document.getElementById("status").textContent = labels.saved; }
        };
      }
    }
    document.getElementById("prompt").value = "";
    document.getElementById("send").disabled = false;
  }

  document.getElementById("chat-form").addEventListener("submit", send);
  document.getElementById("reset").addEventListener("click", reset);
  document.getElementById("model-a").addEventListener("change", () => { syncTitles(); reset(); });
  document.getElementById("model-b").addEventListener("change", () => { syncTitles(); reset(); });
  document.addEventListener("DOMContentLoaded", syncTitles);
  syncTitles();
})();
