// The mapping page: a column's "Not in the pass" reason and the list of such columns follow the choices as
// staff change them (the server computed both for the choices the page was loaded with).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form.mapping");
    var summary = document.getElementById("unused-columns");
    if (!form || !summary) return;
    function refresh() {
      var unused = [];
      form.querySelectorAll("tr[data-column]").forEach(function (row) {
        var chosen = row.querySelector("select").value;
        var reason = row.querySelector(".unused-reason");
        if (reason) reason.hidden = Boolean(chosen);
        if (!chosen) unused.push(row);
      });
      var count = summary.querySelector("[data-unused-count]");
      if (count) count.textContent = unused.length === 1 ? "1 column" : unused.length + " columns";
      summary.querySelectorAll("li[data-column]").forEach(function (item) {
        item.hidden = !unused.some(function (row) { return row.dataset.column === item.dataset.column; });
      });
      summary.hidden = unused.length === 0;
    }
    form.addEventListener("change", refresh);
  });
})();
