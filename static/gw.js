/* tiktok-gateway browser snippet: one event_id shared by the TikTok pixel and the gateway. */
(function (w, d) {
  "use strict";
  var BEACON = "__BEACON_PATH__", NAMES = __NAME_MAP__;
  var me = d.currentScript;
  var url = (me && me.src ? new URL(me.src).origin : "") + BEACON;
  var host = new URL(url, location.href).hostname;
  // identifiers travel only over HTTPS (or to a gateway on this very machine, for testing)
  var safe = /^https:/.test(new URL(url, location.href).protocol) ||
    /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(host);
  var queued = (w.ttgw && w.ttgw.q) || [], who = {}, consent = null, pixel = null;
  // the pixel's script failed to load (seen by the stub, or here): its own copy is lost
  var blocked = !!(w.ttgw && w.ttgw.px);
  w.addEventListener("error", function (e) {
    if (/analytics\.tiktok\.com/.test((e.target && e.target.src) || "")) blocked = true;
  }, true);

  function uuid() {
    var c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    var b = c.getRandomValues(new Uint8Array(16)), h = "", i;
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    for (i = 0; i < 16; i++) h += (b[i] + 256).toString(16).slice(1);
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" +
      h.slice(16, 20) + "-" + h.slice(20);
  }
  function names(n) { return NAMES[n] || NAMES[String(n).toLowerCase()] || [n]; }
  function merge(a, b) { var o = {}, k; for (k in a) o[k] = a[k]; for (k in b) o[k] = b[k]; return o; }
  function send(body) {
    var data = JSON.stringify(body);
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([data], { type: "text/plain" }))) return;
    } catch (e) {}
    try {
      fetch(url, { method: "POST", body: data, keepalive: true, credentials: "include",
        headers: { "Content-Type": "text/plain" } });
    } catch (e) {}
  }

  var api = {
    track: function (name, params, user) {
      var id = uuid(), ttq = w.ttq, list = names(name), i;
      params = params || {};
      if (ttq && typeof ttq.track === "function") {
        for (i = 0; i < list.length; i++) { try { ttq.track(list[i], params, { event_id: id }); } catch (e) {} }
      }
      var u = safe ? merge(who, user || {}) : {};
      if (!u.locale && navigator.language) u.locale = navigator.language;
      var body = { event: name, event_id: id, event_time: Date.now(), properties: params,
        page: { url: location.href, referrer: d.referrer }, user: u };
      if (consent) body.consent = consent;
      if (pixel) body.pixel_id = pixel;
      body.pixel_copy = blocked ? "blocked" : ttq && typeof ttq.track === "function" ? "loaded" : "absent";
      send(body);
      return id;
    },
    identify: function (user) { who = merge(who, user || {}); },
    consent: function (state) {
      consent = state === "granted" ? "granted" : "denied";
      var t = w.ttq;
      try {
        if (t && consent === "granted" && t.grantConsent) t.grantConsent();
        if (t && consent === "denied" && t.revokeConsent) t.revokeConsent();
      } catch (e) {}
    },
    config: function (options) { if (options && options.pixel_id) pixel = options.pixel_id; }
  };
  w.ttgw = api;
  for (var i = 0; i < queued.length; i++) {
    if (api[queued[i][0]]) api[queued[i][0]].apply(null, queued[i][1]);
  }
})(window, document);
