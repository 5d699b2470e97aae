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
