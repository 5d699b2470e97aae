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

  // the text, then (after an ASCII record separator the text never holds) how the answer ended
  const END_MARK = "\x1e";
  async function streamInto(side, model, messages, target, pair) {
    const response = await post("/playground/stream", { model, messages, ...params(), ...(pair ? { pair } : {}) });
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error.message; } catch (_) { /* keep the status text */ }
      target.textContent = `${labels.error} ${message}`;
      target.classList.add("error-text");
      return null;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let received = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      received += decoder.decode(value, { stream: true });
      target.textContent = received.split(END_MARK)[0];
    }
    const [text, tail] = received.split(END_MARK);
    let ending = {};
    try { ending = JSON.parse(tail || "{}"); } catch (_) { /* no ending: the stream broke off */ }
    const cut = ending.finish_reason === "length";
    if (cut) {
      target.dataset.cut = "true";
      target.parentElement.appendChild(el("p", "small muted cut-note", labels.cut));
    }
    return { text, cut };
  }

  // the "not yet used" counts under the chat, as the server counts them after each saved pick
  function showCounts(counts) {
    if (!counts) return;
    const shown = { up: counts.up, down: counts.down, pairs: counts.a + counts.b };
    for (const [key, value] of Object.entries(shown)) {
      const span = document.querySelector(`#preferences [data-count=${key}]`);
      if (span) span.textContent = value;
    }
  }
  async function saveFeedback(body) {
    const r = await post("/playground/feedback", body);
    if (r.ok) showCounts((await r.json()).counts);
    return r.ok;
  }

  function thumbs(item, prompt, model, answer) {
    const row = el("div", "thumbs");
    for (const [choice, label, sign] of [["up", labels.up, "👍"], ["down", labels.down, "👎"]]) {
      const button = el("button", "link", sign);
      button.type = "button";
      button.title = label;
      button.setAttribute("aria-label", label);
      button.dataset.choice = choice;
      if (choice === "up" && answer.cut) { button.disabled = true; button.title = labels.cut_no_pick; }
      button.addEventListener("click", async () => {
        const body = { prompt, model_a: model, answer_a: answer.text, cut_a: answer.cut, choice };
        if (await saveFeedback(body)) { row.textContent = labels.saved; }
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
    const status = document.getElementById("status");
    document.getElementById("send").disabled = true;
    document.getElementById("pick").hidden = true;
    status.textContent = "";
    // a pair compares two answers to one conversation: only while both models have seen the same turns
    const same = JSON.stringify(history.a) === JSON.stringify(history.b);
    const prompts = {};
    const answers = {};
    // side by side, both requests carry one id: the inference process generates the two answers together
    const pair = m.b ? `p${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}` : null;
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
      const answer = await streamInto(side, m[side], messages, body, pair);
      if (answer !== null) {
        answers[side] = answer;
        history[side].push({ role: "user", content: text }, { role: "assistant", content: answer.text });
        thumbs(item, messages, m[side], answer);
      }
    }));
    if (m.b && answers.a !== undefined && answers.b !== undefined) {
      if (!same) {
        status.textContent = labels.diverged;
      } else {
        const pick = document.getElementById("pick");
        pick.hidden = false;
        for (const button of pick.querySelectorAll("button")) {
          const side = button.dataset.pick;
          button.textContent = side === "a" ? labels.a_better : labels.b_better;
          button.disabled = answers[side].cut;
          button.title = answers[side].cut ? labels.cut_no_pick : "";
          button.onclick = async () => {
            const saved = await saveFeedback({
              prompt: prompts.a, model_a: m.a, answer_a: answers.a.text, model_b: m.b, answer_b: answers.b.text,
              cut_a: answers.a.cut, cut_b: answers.b.cut, choice: side,
            });
            if (saved) {
              pick.hidden = true;
              status.textContent = labels.saved;
              // the conversation goes on from the chosen answer, on both sides
              const chosen = { role: "assistant", content: answers[side].text };
              for (const s of ["a", "b"]) history[s] = [...history[s].slice(0, -1), chosen];
            }
          };
        }
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
