// The tiktok-gateway console: live events over Server-Sent Events, an event's detail,
// the overview, dead letters with replay, the postback log, and the send-test form. No
// library, no build step; every value reaches the page through textContent, never as HTML.
(function () {
  "use strict";
  var meta = function (name) {
    var tag = document.querySelector('meta[name="' + name + '"]');
    return tag ? tag.content : "";
  };
  var base = meta("console-path");
  var csrf = meta("csrf-token");
  var rows = new Map(); // "pixel|event|event_id" -> {data, tr}
  var held = []; // rows that arrived while paused
  var MAX_ROWS = 500;
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function time(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  // A cell with a local date and time, the UTC instant on hover.
  function when(seconds) {
    if (seconds === null || seconds === undefined) return el("td", "");
    var at = new Date(seconds * 1000);
    var cell = el("td", at.toLocaleString());
    cell.title = at.toISOString();
    return cell;
  }

  function stepsTable(steps) {
    var table = el("table", undefined, "steps");
    var head = el("tr");
    ["time", "outcome", "request", "code", "TikTok's message", "request_id", "retry at"]
      .forEach(function (h) { head.appendChild(el("th", h)); });
    table.appendChild(head);
    steps.forEach(function (s) {
      var tr = el("tr");
      tr.appendChild(when(s.at));
      [s.outcome, s.request, s.code, s.message].forEach(function (text) {
        tr.appendChild(el("td", text));
      });
      tr.appendChild(el("td", s.request_id, "copy"));
      tr.appendChild(when(s.retry_at));
      table.appendChild(tr);
    });
    return table;
  }

  function delivery(data) {
    if (data.kind === "dropped") return "dropped · " + data.why;
    var last = data.steps.length ? data.steps[data.steps.length - 1] : null;
    if (!last) return "accepted";
    var text = last.outcome;
    if (last.code !== null && last.code !== undefined) text += " · code " + last.code;
    if (last.message) text += " · " + last.message;
    if (last.request_id) text += " · request " + last.request_id;
    var retries = data.steps.filter(function (s) { return s.outcome === "retry"; }).length;
    if (retries) text += " · " + retries + " retr" + (retries === 1 ? "y" : "ies");
    return text;
  }

  function keysText(data) {
    if (data.kind === "dropped") return "–";
    if (!data.keys) return "(not kept: opened later)";
    var from = data.from || {};
    return data.keys.map(function (k) {
      var source = k === "ip_user_agent" ? from.ip : from[k];
      return source ? k + " (" + source + ")" : k;
    }).join(", ") || "none";
  }

  function visible(data) {
    var pixel = $("f-pixel").value, source = $("f-source").value.trim().toLowerCase();
    var name = $("f-event").value.trim().toLowerCase(), outcome = $("f-outcome").value;
    return (!pixel || data.pixel === pixel) &&
      (!source || data.source.toLowerCase().indexOf(source) >= 0) &&
      (!name || data.event.toLowerCase().indexOf(name) >= 0) &&
      (!outcome || data.state === outcome);
  }

  function render(data) {
    var key = data.kind === "dropped" ? "dropped|" + data.sequence :
      data.pixel + "|" + data.event + "|" + data.event_id;
    var known = rows.get(key);
    var tr = el("tr");
    tr.className = "state-" + data.state;
    tr.dataset.key = key;
    var source = data.replica ? data.source + " @ " + data.replica : data.source;
    [time(data.at), source, data.pixel, data.event, data.event_id, keysText(data),
      data.score === undefined ? "–" : data.score + "/10", delivery(data)]
      .forEach(function (text, i) { tr.appendChild(el("td", text, "c" + i)); });
    tr.hidden = !visible(data);
    tr.addEventListener("click", function () {
      if (data.kind === "dropped") showDropped(data); else showDetail(data);
    });
    var body = document.querySelector("#events tbody");
    if (known) {
      if (!data.keys && known.data.keys) { // a step of an event seen before: keep its keys
        data.keys = known.data.keys; data.score = known.data.score; data.from = known.data.from;
        return render(data);
      }
      body.replaceChild(tr, known.tr);
    } else {
      body.insertBefore(tr, body.firstChild);
    }
    rows.set(key, {data: data, tr: tr});
    while (rows.size > MAX_ROWS) {
      var oldest = rows.keys().next().value;
      var gone = rows.get(oldest);
      rows.delete(oldest);
      if (gone.tr.parentNode) gone.tr.parentNode.removeChild(gone.tr);
    }
  }

  function applyFilters() {
    rows.forEach(function (entry) { entry.tr.hidden = !visible(entry.data); });
  }

  function showDetail(data) {
    var url = base + "/event?pixel=" + encodeURIComponent(data.pixel) +
      "&event=" + encodeURIComponent(data.event) + "&id=" + encodeURIComponent(data.event_id);
    fetch(url, {credentials: "same-origin"}).then(function (r) { return r.json(); })
      .then(function (shown) {
        var box = $("detail");
        box.textContent = "";
        box.hidden = false;
        if (shown.error) {
          box.appendChild(el("h2", data.event + " · " + data.event_id));
          box.appendChild(el("p", shown.message || shown.error));
          return;
        }
        box.appendChild(el("h2", shown.event + " · " + shown.event_id));
        var parts = [
          ["Match keys and where they came from", {keys: shown.keys, from: shown.from,
            score: shown.score}],
          ["The Events API request it went out in (digests shortened)",
            {headers: shown.headers, body: shown.request, batch_size: shown.batch_size}],
          ["TikTok's response", shown.response || "not sent yet"],
        ];
        parts.forEach(function (part) {
          box.appendChild(el("h3", part[0]));
          box.appendChild(el("pre", JSON.stringify(part[1], null, 2)));
        });
        box.appendChild(el("h3", "Delivery steps"));
        box.appendChild(shown.steps.length ? stepsTable(shown.steps) : el("p", "none yet"));
        box.hidden = false;
      });
  }

  function showDropped(data) {  // all there is of a dropped event is in its row
    var box = $("detail");
    box.textContent = "";
    box.hidden = false;
    box.appendChild(el("h2", (data.event || "(no event read)") + " · dropped"));
    box.appendChild(el("pre", JSON.stringify(data, null, 2)));
  }

  function connect() {
    var source = new EventSource(base + "/stream");
    var sampling = 1;
    function live() {
      $("status").textContent = sampling > 1 ?
        "live · a flood: showing 1 event in " + sampling : "live";
    }
    source.onopen = function () { sampling = 1; live(); };  // a new stream says if it samples
    source.addEventListener("sampling", function (message) {
      sampling = Number(message.data) || 1;
      live();
    });
    source.addEventListener("ended", function () {  // the session was logged out elsewhere
      source.close();
      window.location.reload();  // the login page
    });
    source.onerror = function () { $("status").textContent = "reconnecting…"; };
    source.onmessage = function (message) {
      var data = JSON.parse(message.data);
      if ($("pause").checked) { held.push(data); return; }
      render(data);
    };
  }

  function post(path, payload) {
    return fetch(base + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(payload),
    }).then(function (r) { return r.json(); });
  }

  function loadDead() {
    fetch(base + "/dead-letters", {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (answer) {
        var box = $("dead-body");
        box.textContent = "";
        if (!answer.letters.length) { box.appendChild(el("p", "No dead letters.")); return; }
        answer.groups.forEach(function (group) {
          var line = el("p", group.count + " × pixel " + group.pixel + ", code " + group.code + " ");
          var button = el("button", "Replay", "replay");
          button.dataset.pixel = group.pixel;
          button.dataset.code = group.code;
          button.addEventListener("click", function () {
            var code = group.code === null ? null : Number(group.code);
            post("/replay", {pixel: group.pixel, code: code}).then(function (result) {
              line.appendChild(el("span", " replayed " + result.replayed, "done"));
              setTimeout(loadDead, 1000);
            });
          });
          line.appendChild(button);
          box.appendChild(line);
        });
        var table = el("table");
        var head = el("tr");
        ["pixel", "event", "event_id", "code", "TikTok's reason", "request_id", "attempts",
          "died"].forEach(function (h) { head.appendChild(el("th", h)); });
        table.appendChild(head);
        answer.letters.forEach(function (d) {
          var tr = el("tr");
          [d.pixel, d.event].forEach(function (text) { tr.appendChild(el("td", text)); });
          tr.appendChild(el("td", d.event_id, "copy"));
          [d.code, d.reason].forEach(function (text) { tr.appendChild(el("td", text)); });
          tr.appendChild(el("td", d.request_id, "copy"));
          tr.appendChild(el("td", d.attempts));
          tr.appendChild(when(d.dead_at));
          table.appendChild(tr);
        });
        box.appendChild(table);
      });
  }

  function loadOverview() {
    fetch(base + "/overview", {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (answer) {
        var box = $("overview-body");
        box.textContent = "";
        Object.keys(answer.pixels).forEach(function (pixel) {
          var p = answer.pixels[pixel];
          var card = el("div", null, "card");
          card.appendChild(el("h2", "Pixel " + pixel));
          card.appendChild(el("p", "delivered (recent) " + p.delivered + " · waiting " +
            p.pending + " · retrying " + p.retrying + " · dead " + p.dead +
            " · average score " + (p.average_score === null ? "–" : p.average_score + "/10")));
          card.appendChild(el("p", "Recovered conversions (pixel blocked or absent): " +
            p.recovered, "recovered"));
          var chart = el("div", null, "chart");
          var top = Math.max.apply(null, p.per_minute.concat([1]));
          p.per_minute.forEach(function (n, i) {
            var bar = el("span", null, "bar");
            bar.style.height = Math.round(60 * n / top) + "px";
            bar.title = n + " event(s), " + (59 - i) + " min ago";
            chart.appendChild(bar);
          });
          card.appendChild(el("h3", "Events per minute, last hour" + (answer.shared ? " (every replica)" : "")));
          card.appendChild(chart);
          card.appendChild(el("h3", "Share of events carrying each match key"));
          var list = el("ul");
          Object.keys(p.key_share).forEach(function (k) {
            list.appendChild(el("li", k + ": " + Math.round(100 * p.key_share[k]) + "%"));
          });
          card.appendChild(list);
          box.appendChild(card);
        });
      });
  }

  function eventLink(event) {
    var text = event.event + " " + event.event_id + " [" + event.state +
      (event.code !== undefined && event.code !== null ? " · code " + event.code : "") +
      (event.message ? " · " + event.message : "") + "]";
    var link = el("a", text, "pb-event");
    link.href = "#";
    link.addEventListener("click", function (e) {
      e.preventDefault();
      showTab("live");
      showDetail({pixel: event.pixel, event: event.event, event_id: event.event_id});
    });
    return link;
  }

  function loadPostbacks() {
    var source = $("pb-source").value;
    var url = base + "/postbacks?last=100" + (source ? "&source=" + encodeURIComponent(source) : "");
    fetch(url, {credentials: "same-origin"}).then(function (r) { return r.json(); })
      .then(function (answer) {
        var body = document.querySelector("#postback-log tbody");
        body.textContent = "";
        if (answer.error) {  // 503 while Redis is down: say so, the next refresh retries
          $("pb-empty").hidden = false;
          $("pb-empty").textContent = "Not available now: " + answer.message;
          return;
        }
        var only = $("pb-none").checked;
        var shown = answer.postbacks.filter(function (p) { return !only || !p.fired.length; });
        var empty = $("pb-empty");
        empty.hidden = shown.length > 0;
        empty.textContent = answer.enabled ? "No postbacks logged yet." :
          "The postback log is off ([postbacks] log_size = 0).";
        shown.forEach(function (p) {
          var tr = el("tr", null, p.fired.length ? "pb-fired" : "pb-nothing");
          tr.appendChild(el("td", time(p.at)));
          tr.appendChild(el("td", p.source));
          tr.appendChild(el("td", !p.trigger ? "(none)" : p.trigger +
            (p.trigger_from === "given" ? " (given)" : " (from " + p.trigger_from + ")")));
          tr.appendChild(el("td", p.ttclid, "ttclid-" + p.ttclid));
          var fired = el("td");
          p.fired.forEach(function (rule) {
            var line = el("div", rule.rule + ": ", "pb-rule");
            rule.events.forEach(function (event) { line.appendChild(eventLink(event)); });
            fired.appendChild(line);
          });
          if (!p.fired.length) fired.textContent = "nothing fired";
          tr.appendChild(fired);
          var missed = el("td");
          p.not_fired.forEach(function (rule) {
            missed.appendChild(el("div", rule.rule + ": " + rule.reason, "pb-reason"));
          });
          tr.appendChild(missed);
          var fields = el("td");
          var more = el("details");
          more.appendChild(el("summary", Object.keys(p.fields).length + " field(s)"));
          var renames = Object.keys(p.renamed).map(function (k) { return k + " → " + p.renamed[k]; });
          if (renames.length) more.appendChild(el("p", "renamed: " + renames.join(", ")));
          more.appendChild(el("pre", JSON.stringify(p.fields, null, 2)));
          fields.appendChild(more);
          tr.appendChild(fields);
          body.appendChild(tr);
        });
      });
  }

  var postbackTimer = null;

  function showTab(name) {
    document.querySelectorAll("nav button[data-tab]").forEach(function (b) {
      b.classList.toggle("active", b.dataset.tab === name);
    });
    document.querySelectorAll("section.tab").forEach(function (s) { s.hidden = s.id !== name; });
    if (name === "dead") loadDead();
    if (name === "overview") loadOverview();
    if (postbackTimer !== null) { clearInterval(postbackTimer); postbackTimer = null; }
    if (name === "postbacks") {
      loadPostbacks();
      postbackTimer = setInterval(loadPostbacks, 2000);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("nav button[data-tab]").forEach(function (b) {
      b.addEventListener("click", function () { showTab(b.dataset.tab); });
    });
    ["f-pixel", "f-source", "f-event", "f-outcome"].forEach(function (id) {
      $(id).addEventListener("input", applyFilters);
    });
    $("pause").addEventListener("change", function () {
      if (!$("pause").checked) { held.splice(0).forEach(render); }
    });
    $("dead-refresh").addEventListener("click", loadDead);
    $("pb-refresh").addEventListener("click", loadPostbacks);
    $("pb-source").addEventListener("input", loadPostbacks);
    $("pb-none").addEventListener("change", loadPostbacks);
    $("send-test").addEventListener("submit", function (e) {
      e.preventDefault();
      var payload = {};
      new FormData(e.target).forEach(function (v, k) { if (v) payload[k] = v; });
      $("send-test-result").textContent = "sending…";
      post("/send-test", payload).then(function (result) {
        $("send-test-result").textContent = JSON.stringify(result, null, 2);
      });
    });
    connect();
  });
})();
