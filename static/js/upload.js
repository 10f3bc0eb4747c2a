// Staff upload page: drop many images onto the zone; they join the form's file input.
(function () {
  const form = document.querySelector("[data-upload-form]");
  if (!form) return;
  const zone = form.querySelector("[data-dropzone]");
  const input = zone.querySelector("input[type=file]");
  const list = zone.querySelector("[data-drop-list]");
  const files = new DataTransfer();

  function render() {
    list.innerHTML = "";
    Array.from(files.files).forEach(function (file) {
      const li = document.createElement("li");
      li.textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)) + " KB)";
      list.appendChild(li);
    });
    input.files = files.files;
  }

  function add(fileList) {
    Array.from(fileList).forEach(function (file) { files.items.add(file); });
    render();
  }

  input.addEventListener("change", function () {
    // Choosing files through the dialog adds to what was dropped before.
    const chosen = Array.from(input.files);
    const known = new Set(Array.from(files.files).map(function (f) { return f.name + f.size; }));
    chosen.forEach(function (f) { if (!known.has(f.name + f.size)) files.items.add(f); });
    render();
  });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("is-over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.remove("is-over"); });
  });
  zone.addEventListener("drop", function (event) { add(event.dataTransfer.files); });

  // Show the single-product fields only in that mode.
  const modes = form.querySelectorAll("input[name=mode]");
  function syncMode() {
    const one = form.querySelector("input[name=mode]:checked");
    form.querySelectorAll("[data-one-product]").forEach(function (el) {
      el.hidden = !(one && one.value === "one_product");
    });
  }
  modes.forEach(function (m) { m.addEventListener("change", syncMode); });
  syncMode();
})();
