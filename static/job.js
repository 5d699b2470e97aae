// Live training charts: fetch the metrics logged after the last step we have (so a reconnect resumes),
// redraw, and flag loss spikes and divergence. Drawn with the vendored uPlot.
(() => {
  // steps are whole numbers: ticks every 1, 2, 5, 10, 20, 50 … steps, never at 2.5
  const STEP_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map((p) => m * p)).sort((a, b) => a - b);
  const root = document.getElementById("charts");
  if (!root) return;
  const labels = JSON.parse(root.dataset.labels);
  const url = root.dataset.metricsUrl;
  const rows = [];
  let lastStep = 0;
  let totalSteps = null; // the job's planned steps, once the trainer has said: the x axis runs from 0 to it
  const charts = {};

  function series(key) {
    const steps = [], values = [];
    for (const r of rows) if (r[key] !== undefined && r[key] !== null) { steps.push(r.step); values.push(r[key]); }
    return [steps, values];
  }

  // small values (learning rates) read as 2.0e-4, not 0
  const tick = (v) => (v === 0 ? "0" : Math.abs(v) < 0.01 ? v.toExponential(1) : +v.toPrecision(4));

  function draw(key) {
    const el = root.querySelector(`[data-chart="${key}"]`);
    if (!el) return;
    const width = Math.max(300, el.clientWidth || 500);
    let data, seriesOpts;
    if (key === "loss") {
      // one x axis for both: the evaluation at step 0 (the base model) comes before any training step
      const losses = new Map(rows.filter((r) => r.loss != null).map((r) => [r.step, r.loss]));
      const evals = new Map(rows.filter((r) => r.eval_loss != null).map((r) => [r.step, r.eval_loss]));
      const steps = [...new Set([...losses.keys(), ...evals.keys()])].sort((a, b) => a - b);
      data = [steps, steps.map((s) => losses.get(s) ?? null), steps.map((s) => evals.get(s) ?? null)];
      seriesOpts = [{ label: labels.step }, { label: labels.loss, stroke: "#2f6fde", width: 2, spanGaps: true },
        { label: labels.eval_loss, stroke: "#d9822b", width: 2, spanGaps: true, points: { show: true, size: 6 } }];
    } else if (key === "reward") {
      // reinforcement: the mean reward of each step's answers, with its spread (mean ± one standard deviation)
      const logged = rows.filter((r) => r.reward != null);
      const std = (r) => r.reward_std ?? 0;
      data = [logged.map((r) => r.step), logged.map((r) => r.reward),
        logged.map((r) => r.reward - std(r)), logged.map((r) => r.reward + std(r))];
      const band = { stroke: "#9fd3ae", width: 1, dash: [4, 4], points: { show: false } };
      seriesOpts = [{ label: labels.step }, { label: labels.reward, stroke: "#17833d", width: 2 },
        { label: labels.reward_low, ...band }, { label: labels.reward_high, ...band }];
    } else {
      data = series(key);
      seriesOpts = [{ label: labels.step }, { label: labels[key], stroke: "#17833d", width: 2 }];
    }
    if (!data[0].length) return;
    if (charts[key]) { charts[key].setData(data); return; }
    el.textContent = "";
    // from step 0 to the planned last step (or the last one logged): a few steps never spread over 0–100
    const xRange = (u, min, max) => [0, Math.max(totalSteps || 0, max, 1)];
    charts[key] = new uPlot({
      width, height: 200, title: labels[key],
      scales: { x: { time: false, range: xRange } },
      axes: [{ label: labels.step, incrs: STEP_INCRS }, { size: 60, values: (u, ticks) => ticks.map(tick) }],
      series: seriesOpts,
      // the x range drawn, for people reading the page's markup (and the browser tests)
      hooks: { setScale: [(u, scale) => { if (scale === "x") el.dataset.xRange = `${u.scales.x.min},${u.scales.x.max}`; }] },
    }, data, el);
  }

  function flag() {
    const losses = rows.filter((r) => r.loss != null);
    const box = document.getElementById("loss-flag");
    if (!box || losses.length < 12) return;
    const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
    let message = "";
    for (let i = 10; i < losses.length; i++) {
      const m = median(losses.slice(i - 10, i).map((r) => r.loss));
      if (losses[i].loss > 2 * m) {
        message = labels.spike.replace("%(step)s", losses[i].step).replace("%(value)s", losses[i].loss.toFixed(3));
      }
    }
    if (losses.length >= 20) {
      const mean = (xs) => xs.reduce((a, r) => a + r.loss, 0) / xs.length;
      const last = mean(losses.slice(-10)), before = mean(losses.slice(-20, -10));
      if (last > 1.2 * before) message = labels.diverging.replace("%%", "%");
    }
    box.textContent = message;
    box.hidden = !message;
  }

  async function poll() {
    let live = true;
    try {
      // the last step again: its evaluation may have been logged after its training loss
      const response = await fetch(`${url}?after=${lastStep - 1}`, { headers: { Accept: "application/json" } });
      const body = await response.json();
      live = body.live;
      if (body.total_steps) totalSteps = body.total_steps;
      for (const r of body.rows) {
        const i = rows.findIndex((x) => x.step === r.step && ("eval_loss" in x) === ("eval_loss" in r));
        if (i >= 0) rows[i] = r; else rows.push(r);
      }
      rows.sort((a, b) => a.step - b.step);
      if (body.rows.length) lastStep = Math.max(...rows.filter((r) => r.loss != null).map((r) => r.step), lastStep);
      ["loss", "reward", "learning_rate", "grad_norm", "tokens_per_second"].forEach(draw);
      flag();
    } catch (_) { /* the next poll retries */ }
    if (live) setTimeout(poll, 2000);
  }
  document.addEventListener("DOMContentLoaded", poll);
})();
