// Product gallery: clicking a thumbnail shows it in the main frame.
(function () {
  const gallery = document.querySelector("[data-gallery]");
  if (!gallery) return;
  const main = gallery.querySelector("[data-gallery-main]");
  const link = gallery.querySelector("[data-gallery-link]");
  gallery.querySelectorAll(".thumb").forEach(function (button) {
    button.addEventListener("click", function () {
      main.src = button.dataset.display;
      main.alt = button.dataset.alt;
      main.removeAttribute("width");
      main.removeAttribute("height");
      if (link) link.href = button.dataset.original;
      gallery.querySelectorAll(".thumb").forEach(function (b) { b.classList.toggle("is-current", b === button); });
    });
  });
})();
