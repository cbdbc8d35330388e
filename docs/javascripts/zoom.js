// Figures open at full size: a click on a figure of a page shows it at its natural size in an
// overlay that scrolls (Escape or a second click closes it). Opened from disk (file://), where
// browsers do not run the search worker, the search box says how to search: through the local
// server of `make docs-serve`. No network, no library.
document$.subscribe(function () {
  if (location.protocol === "file:" && !document.querySelector(".bs-nosearch")) {
    var note = document.createElement("span");
    note.className = "bs-nosearch";
    note.textContent = "search: make docs-serve";
    note.title = "Browsers do not search a site opened from disk: run `make docs-serve` " +
      "(python -m http.server -d build/site 8000) and open http://127.0.0.1:8000/";
    var header = document.querySelector(".md-header__inner");
    if (header) header.appendChild(note);
  }
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
