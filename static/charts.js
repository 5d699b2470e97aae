// Charts drawn with the vendored uPlot. Data comes from data-* attributes (the CSP allows no inline script).
function drawHistogram(el) {
  const spec = JSON.parse(el.dataset.histogram);
  if (!spec.counts || !spec.counts.length) return;
  const xs = spec.counts.map((_, i) => i);
  const bars = uPlot.paths.bars({ size: [0.8, 80] });
  const width = Math.max(320, el.clientWidth || 600);
  new uPlot({
    width, height: 220,
    legend: { show: false },
    scales: { x: { time: false, range: [-0.5, xs.length - 0.5] } },
    axes: [
      { label: spec.x_label, values: (u, ticks) => ticks.map((t) => spec.labels[t] ?? ""), splits: () => xs },
      { label: spec.y_label },
    ],
    series: [{ label: spec.x_label }, { label: spec.y_label, fill: "rgba(47,111,222,0.55)", stroke: "#2f6fde", paths: bars, points: { show: false } }],
  }, [xs, spec.counts], el);
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-histogram]").forEach(drawHistogram);
});
