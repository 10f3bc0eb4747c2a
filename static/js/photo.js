// Search by photo: dropping (or choosing) a photo submits the form straight away. On the results, the shopper's
// photo is shown back; dragging a box on it and pressing "Search this part" searches with just that part, cropped
// here in a canvas and sent as a new photo.
(function () {
  const form = document.querySelector("[data-photo-form]");
  if (!form) return;
  const zone = form.querySelector("[data-dropzone]");
  const input = zone.querySelector("input[type=file]");

  function submitWith(file) {
    const one = new DataTransfer();
    one.items.add(file);
    input.files = one.files;
    const chosen = zone.querySelector("[data-chosen]");
    if (chosen) chosen.textContent = "Searching with " + file.name + " …";
    form.requestSubmit();
  }

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("is-over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.remove("is-over"); });
  });
  zone.addEventListener("drop", function (event) {
    if (event.dataTransfer.files.length) submitWith(event.dataTransfer.files[0]);
  });
  input.addEventListener("change", function () { if (input.files.length) submitWith(input.files[0]); });

  // Cropping: a box in the shown photo's own pixels.
  const frame = document.querySelector("[data-crop-frame]");
  if (!frame) return;
  const img = frame.querySelector("[data-your-photo-img]");
  const box = frame.querySelector("[data-crop-box]");
  const searchPart = document.querySelector("[data-crop-search]");
  const clear = document.querySelector("[data-crop-clear]");
  let start = null;
  let area = null; // {x, y, w, h} in displayed pixels

  function point(event) {
    const rect = img.getBoundingClientRect();
    return {
      x: Math.min(Math.max(event.clientX - rect.left, 0), rect.width),
      y: Math.min(Math.max(event.clientY - rect.top, 0), rect.height),
    };
  }

  function draw() {
    box.hidden = !area;
    searchPart.disabled = !area;
    clear.hidden = !area;
    if (!area) return;
    box.style.left = area.x + "px";
    box.style.top = area.y + "px";
    box.style.width = area.w + "px";
    box.style.height = area.h + "px";
  }

  frame.addEventListener("pointerdown", function (event) {
    event.preventDefault();
    frame.setPointerCapture(event.pointerId);
    start = point(event);
    area = null;
    draw();
  });
  frame.addEventListener("pointermove", function (event) {
    if (!start) return;
    const now = point(event);
    area = {x: Math.min(start.x, now.x), y: Math.min(start.y, now.y),
            w: Math.abs(now.x - start.x), h: Math.abs(now.y - start.y)};
    draw();
  });
  frame.addEventListener("pointerup", function () {
    start = null;
    if (area && (area.w < 12 || area.h < 12)) area = null; // a click, not a box
    draw();
  });
  clear.addEventListener("click", function () { area = null; draw(); });

  searchPart.addEventListener("click", function () {
    if (!area) return;
    const scale = img.naturalWidth / img.getBoundingClientRect().width;
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(area.w * scale));
    canvas.height = Math.max(1, Math.round(area.h * scale));
    canvas.getContext("2d").drawImage(img, area.x * scale, area.y * scale, area.w * scale, area.h * scale,
                                      0, 0, canvas.width, canvas.height);
    searchPart.disabled = true;
    canvas.toBlob(function (blob) {
      submitWith(new File([blob], "part-of-my-photo.jpg", {type: "image/jpeg"}));
    }, "image/jpeg", 0.92);
  });
})();
