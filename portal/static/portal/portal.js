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
              // The same address (a #fragment too, as after a send: #delivery) would only scroll: reload it.
              if (url2.toString() === window.location.href) { window.location.reload(); }
              else { window.location.replace(url2.toString()); }
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
  // A form with data-confirm asks first (the Content-Security-Policy forbids inline onsubmit handlers); so does
  // a form's one button with data-confirm-button (the other buttons of that form do not ask).
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = event.target.getAttribute("data-confirm") ||
      (button && button.getAttribute("data-confirm-button"));
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();

// Copy buttons ([data-copy]) put their value on the clipboard; the member list's tick boxes count and can tick
// a whole page. Without script the values stay readable (title and full text) and the form still posts.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button || !navigator.clipboard) { return; }
    navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
      var before = button.innerHTML;
      button.classList.add("copied");
      button.textContent = button.classList.contains("labelled") ? "Copied" : "✓";
      setTimeout(function () { button.classList.remove("copied"); button.innerHTML = before; }, 1500);
    });
  });
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("bulk-form");
    if (!form) { return; }
    var boxes = form.querySelectorAll('input[name="member"]');
    var all = form.querySelector("#select-all-matching");
    var counter = form.querySelector("[data-selected-count]");
    function update() {
      var ticked = Array.prototype.filter.call(boxes, function (box) { return box.checked; }).length;
      if (counter) { counter.textContent = all && all.checked ? "every matching member" : ticked + " ticked"; }
      form.querySelectorAll(".bulk-bar button").forEach(function (b) { b.disabled = !ticked && !(all && all.checked); });
    }
    form.addEventListener("change", function (event) {
      if (event.target.hasAttribute("data-tick-all")) {
        boxes.forEach(function (box) { box.checked = event.target.checked; });
      }
      update();
    });
    form.addEventListener("submit", function (event) {
      var message = event.submitter && event.submitter.getAttribute("data-confirm");
      if (message && !window.confirm(message)) { event.preventDefault(); }
    });
    update();
  });
})();
