// The console's search: what happened to an event_id or an order_id, in every place the
// gateway keeps events (recent buffer, recent drops, outbox). Values go in as textContent.
(function () {
  "use strict";
  var base = document.querySelector('meta[name="console-path"]').content;
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  var WHERE = {recent: "recent events", dropped: "dropped", outbox: "outbox"};

  function what(found) {
    if (found.where === "dropped") return found.why;
    if (found.where === "outbox") {
      var text = found.state + (found.attempts ? " · " + found.attempts + " attempt(s)" : "");
      if (found.code !== null && found.code !== undefined) text += " · code " + found.code;
      return found.why ? text + " · " + found.why : text;
    }
    var last = found.steps.length ? found.steps[found.steps.length - 1] : null;
    var said = last && last.code !== null ? " · code " + last.code + " " + (last.message || "") : "";
    return found.state + said;
  }

  function show(answer) {
    var body = document.querySelector("#search-results tbody");
    body.textContent = "";
    var note = $("search-note");
    if (answer.error) { note.textContent = answer.message || answer.error; return; }
    note.textContent = answer.found.length ? answer.found.length + " found" :
      "Nothing kept under " + answer.query + " (see how long each place keeps events).";
    answer.found.forEach(function (found) {
      var tr = el("tr", null, "found-" + found.where + " state-" + found.state);
      var at = new Date(found.at * 1000);
      [at.toLocaleString(), WHERE[found.where], found.source || "", found.pixel, found.event,
        found.event_id, found.order_id || "", what(found)]
        .forEach(function (text) { tr.appendChild(el("td", text)); });
      body.appendChild(tr);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("search-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var q = $("search-q").value.trim();
      if (!q) return;
      $("search-note").textContent = "searching…";
      fetch(base + "/search?q=" + encodeURIComponent(q), {credentials: "same-origin"})
        .then(function (r) { return r.json(); }).then(show);
    });
  });
})();
