// Controls marked data-autosubmit submit their form when changed (sort order, "in stock", "same category"):
// a script file rather than inline onchange handlers, which the Content-Security-Policy forbids.
(function () {
  document.querySelectorAll("[data-autosubmit]").forEach(function (control) {
    control.addEventListener("change", function () { if (control.form) control.form.submit(); });
  });
})();
