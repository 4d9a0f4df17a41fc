// Live progress for long work (sync runs, link batches): an element with data-run-status polls that JSON
// URL once a second, fills its [data-field] children, moves its <progress>, and reloads the page when
// the work is done if data-reload is set. Without script the page still shows the state when loaded.
(function () {
  "use strict";
  function follow(el) {
    var url = el.getAttribute("data-run-status");
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (state) {
          if (!state) { return setTimeout(tick, 3000); }
          Object.keys(state).forEach(function (key) {
            el.querySelectorAll('[data-field="' + key + '"]').forEach(function (node) {
              node.textContent = state[key] === null ? "" : state[key];
            });
          });
          var bar = el.querySelector('progress[data-field="progress"]');
          var total = state.total_pages || state.total || null;
          var done = state.pages !== undefined ? state.pages : state.done;
          if (bar && total) { bar.max = total; bar.value = done || 0; }
          var badge = el.querySelector(".badge[data-field='status']");
          if (badge) { badge.className = "badge status-" + state.status; }
          if (state.finished) {
            el.setAttribute("data-finished", "true");
            if (bar) { bar.max = 1; bar.value = 1; }
            if (el.getAttribute("data-reload") === "true") {
              var url2 = new URL(window.location.href);
              url2.searchParams.delete("run");
              window.location.replace(url2.toString());
            }
            return;
          }
          setTimeout(tick, 1000);
        })
        .catch(function () { setTimeout(tick, 3000); });
    }
    tick();
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll('[data-run-status][data-finished="false"]').forEach(follow);
  });
  // A form with data-confirm asks first (the Content-Security-Policy forbids inline onsubmit handlers).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();
