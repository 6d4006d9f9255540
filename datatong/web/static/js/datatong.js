/* Small progressive enhancements; every page also works without this script. */
(function () {
  "use strict";

  // htmx requests carry the session's CSRF token, read from the page's meta tag.
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) {
      event.detail.headers["X-CSRF-Token"] = meta.getAttribute("content");
    }
  });

  function renumber(body) {
    body.querySelectorAll("tr").forEach(function (row, i) {
      var cell = row.querySelector(".row-no");
      if (cell) { cell.textContent = String(i + 1); }
    });
  }

  // Data-item rows: add from the <template>, remove in place. Without JS the same
  // buttons submit the form and the server redraws it with one row more or less.
  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-row]");
    if (add) {
      event.preventDefault();
      var template = document.getElementById(add.getAttribute("data-add-row"));
      var body = document.getElementById(add.getAttribute("data-target"));
      body.appendChild(template.content.cloneNode(true));
      renumber(body);
      var first = body.lastElementChild.querySelector("input, select");
      if (first) { first.focus(); }
      return;
    }
    // Show or hide the element a [data-toggle] link controls (an audit record's
    // details); without this script the link opens the record's own page.
    var toggle = event.target.closest("[data-toggle]");
    if (toggle) {
      var panel = document.getElementById(toggle.getAttribute("aria-controls"));
      if (panel) {
        event.preventDefault();
        var open = toggle.getAttribute("aria-expanded") === "true";
        toggle.setAttribute("aria-expanded", String(!open));
        toggle.textContent = open ? "展开" : "收起";
        panel.hidden = open;
      }
      return;
    }
    var remove = event.target.closest("[data-remove-row]");
    if (remove) {
      event.preventDefault();
      var row = remove.closest("tr");
      var tbody = row.parentElement;
      row.remove();
      renumber(tbody);
    }
  });

  // After a refused form, take keyboard and screen-reader users to the list of problems.
  document.addEventListener("DOMContentLoaded", function () {
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  });
})();
