// Enhancement only: every page works without it. A "select all" box on
// listings and search results.
document.addEventListener("DOMContentLoaded", () => {
  for (const all of document.querySelectorAll("input.all")) {
    all.hidden = false;
    all.addEventListener("change", () => {
      for (const box of all.closest("form").querySelectorAll("input[name=item]")) {
        box.checked = all.checked;
      }
    });
  }
});
