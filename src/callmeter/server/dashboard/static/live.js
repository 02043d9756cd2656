// callmeter dashboard: keeps the live table current over server-sent events.
// Part of callmeter, Apache-2.0 (see LICENSE.txt). No dependencies.
"use strict";
(function () {
  var body = document.getElementById("live-calls");
  var status = document.getElementById("live-status");
  if (!body || !window.EventSource) return;
  var es = new EventSource("/live/events");
  es.addEventListener("open", function () { body.setAttribute("data-live", "open"); });
  es.addEventListener("error", function () { body.setAttribute("data-live", "reconnecting"); });
  function cell(tr, text, href) {
    var td = document.createElement("td");
    if (href) {
      var a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    tr.appendChild(td);
  }
  es.addEventListener("calls", function (ev) {
    var calls = JSON.parse(ev.data);
    var rows = document.createDocumentFragment();
    calls.forEach(function (c) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-session-id", c.id);
      cell(tr, c.id, c.href);
      cell(tr, c.agent);
      cell(tr, c.started);
      cell(tr, String(c.turns));
      cell(tr, c.cost);
      cell(tr, c.last);
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    status.textContent = calls.length + " call(s) active now.";
  });
  window.addEventListener("pagehide", function () { es.close(); });
})();
