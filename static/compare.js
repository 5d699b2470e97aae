// Several runs' loss curves on one chart each (training loss, eval loss), drawn with the vendored uPlot.
(() => {
  // steps are whole numbers: ticks every 1, 2, 5, 10, 20, 50 … steps, never at 2.5
  const STEP_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map((p) => m * p)).sort((a, b) => a - b);
  const root = document.getElementById("compare-charts");
  if (!root) return;
  const spec = JSON.parse(root.dataset.compare);
  const colours = ["#2f6fde", "#d9822b", "#17833d", "#b42318", "#7a3fc0", "#0f8b8d"];

  function draw(key, title) {
    const el = root.querySelector(`[data-chart="${key}"]`);
    const steps = [...new Set(spec.curves.flatMap((c) => c[key].map((p) => p[0])))].sort((a, b) => a - b);
    if (!steps.length) { el.hidden = true; return; }
    const data = [steps];
    for (const curve of spec.curves) {
      const byStep = new Map(curve[key]);
      data.push(steps.map((s) => (byStep.has(s) ? byStep.get(s) : null)));
    }
    const series = [{ label: spec.labels.step }].concat(spec.curves.map((c, i) => ({
      label: c.name, stroke: colours[i % colours.length], width: 2, spanGaps: true,
      points: { show: key === "eval_loss", size: 6 },
    })));
    new uPlot({
      width: Math.max(320, el.clientWidth || 600), height: 260, title,
      scales: { x: { time: false } },
      axes: [{ label: spec.labels.step, incrs: STEP_INCRS }, { size: 60 }],
      series,
    }, data, el);
  }
  document.addEventListener("DOMContentLoaded", () => {
    draw("loss", spec.labels.compare_loss);
    draw("eval_loss", spec.labels.compare_eval_loss);
  });
})();
