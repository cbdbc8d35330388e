// Figures open at full size: a click on a figure of a page shows it at its natural size in an
// overlay that scrolls (Escape or a second click closes it). No network, no library.
document$.subscribe(function () {
  document.querySelectorAll("article img").forEach(function (img) {
    if (img.dataset.zoom) return;
    img.dataset.zoom = "1";
    img.classList.add("bs-zoomable");
    img.title = img.title || "click to open at full size";
    img.addEventListener("click", function () {
      var overlay = document.createElement("div");
      overlay.className = "bs-zoom";
      var big = document.createElement("img");
      big.src = img.currentSrc || img.src;
      big.alt = img.alt;
      overlay.appendChild(big);
      function close() { overlay.remove(); document.removeEventListener("keydown", onkey); }
      function onkey(e) { if (e.key === "Escape") close(); }
      overlay.addEventListener("click", close);
      document.addEventListener("keydown", onkey);
      document.body.appendChild(overlay);
    });
  });
});
