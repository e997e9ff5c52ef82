/* tiktok-gateway browser snippet: one event_id shared by the TikTok pixel and the gateway. */
// Always on: ttgw.track / identify / consent / config, Google Consent Mode read from the
// dataLayer (a site that declares consent there must not need to repeat it), and route
// changes of single-page apps. On when the site asks (an attribute on this script's tag or
// ttgw.config): GA4 events from the dataLayer, and the click id in lead forms.
// Served without these comment lines (gateway/ingest/sources/beacon/snippet.py); the budget
// is 3 KB gzipped (tests/test_snippet.py).
(function (w, d) {
  "use strict";
  var BEACON = "__BEACON_PATH__", NAMES = __NAME_MAP__;
  // GA4 item and enhanced-conversions fields → TikTok content and user fields
  var ITEM = { item_id: "content_id", item_name: "content_name", item_category: "content_category",
    item_brand: "brand", price: "price", quantity: "quantity" };
  var USER = { email: "email", phone_number: "phone", sha256_email_address: "sha256_email",
    sha256_phone_number: "sha256_phone" };
  var ADDRESS = { first_name: "first_name", last_name: "last_name", postal_code: "zip_code",
    city: "city", region: "state", country: "country" };
  var ADS = ["ad_storage", "ad_user_data", "ad_personalization"], OP = Object.prototype;
  var me = d.currentScript, attr = (me && me.dataset) || {};
  var url = (me && me.src ? new URL(me.src).origin : "") + BEACON;
  var to = new URL(url, location.href);
  // identifiers travel only over HTTPS (or to a gateway on this very machine, for testing)
  var secure = to.protocol == "https:" ||
    /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(to.hostname);
  var queued = (w.ttgw && w.ttgw.q) || [], who = {}, sent = {}, consent, pixel;
  var page = location.href, ref = d.referrer, click = clickOf(page);
  var layer = [], layerOn = 0, modes = {}, limited = 0, field = null;
  // the pixel's script failed to load (seen by the stub, or here): its own copy is lost
  var blocked = w.ttgw && w.ttgw.px;
  w.addEventListener("error", function (e) { if (/analytics\.tiktok\.com/.test(e.target.src)) blocked = 1; }, !0);

  // every entry point from the site's code: whatever goes wrong here stays here
  function quiet(f) {
    return function () { try { return f.apply(this, arguments); } catch (e) {} };
  }
  function uuid() {
    var c = w.crypto;
    return c.randomUUID ? c.randomUUID() : "10000000-1000-4000-8000-100000000000".replace(/[018]/g,
      function (x) { return (x ^ c.getRandomValues(new Uint8Array(1))[0] & 15 >> x / 4).toString(16); });
  }
  // the server's name map, rendered in: the pixel is told the name the gateway will send
  function names(n) {
    var own = OP.hasOwnProperty, l = String(n).toLowerCase();
    return own.call(NAMES, n) ? NAMES[n] : own.call(NAMES, l) ? NAMES[l] : null;
  }
  function merge(a, b) { var o = {}, k; for (k in a) o[k] = a[k]; for (k in b) o[k] = b[k]; return o; }
  function pick(from, map) {
    var o = {}, k;
    for (k in map) if (from && from[k] != null) o[map[k]] = from[k];
    return o;
  }
  function clickOf(u) { try { return new URL(u).searchParams.get("ttclid"); } catch (e) { return null; } }
  function send(body) {
    var data = JSON.stringify(body);
    try {
      if (navigator.sendBeacon(url, new Blob([data], { type: "text/plain" }))) return;
    } catch (e) {}
    try {
      // a string body is sent as text/plain: no CORS preflight, as with sendBeacon
      fetch(url, { method: "POST", body: data, keepalive: true, credentials: "include" });
    } catch (e) {}
  }

  function track(name, params, user) {
    route();
    params = params || {};
    var list = names(name) || [name], i;
    // a conversion the site sends twice (dataLayer and ttgw.track, say) goes once per page
    var key = params.order_id && list[0] + "|" + params.order_id;
    if (key && sent[key]) return sent[key];
    var id = uuid(), px = w.ttq;
    if (key) sent[key] = id;
    for (i = 0; i < list.length; i++) try { w.ttq.track(list[i], params, { event_id: id }); } catch (e) {}
    var u = secure ? merge(who, user || {}) : {};
    if (!u.locale && navigator.language) u.locale = navigator.language;
    if (click && !u.ttclid) u.ttclid = click;
    // (undefined is left out of the JSON)
    send({ event: name, event_id: id, event_time: Date.now(), properties: params,
      page: { url: page, referrer: ref }, user: u, consent: consent, pixel_id: pixel,
      limited_data_use: limited || undefined,
      pixel_copy: blocked ? "blocked" : px && px.track ? "loaded" : "absent" });
    return id;
  }
  function setConsent(state) {
    consent = state == "granted" ? "granted" : "denied";
    try { w.ttq[consent == "granted" ? "grantConsent" : "revokeConsent"](); } catch (e) {}
    fill();
  }

  // Google Consent Mode v2: ad_storage or ad_user_data denied → denied, both known and not
  // denied → granted; ad_personalization denied → TikTok's limited data use. A default for
  // some regions only may deny but never grant: the snippet cannot tell where the visitor is.
  function consentMode(how, p) {
    var i, v, seen = 0;
    for (i = 0; i < 3; i++) {
      v = p[ADS[i]];
      if (v == "denied" || (v == "granted" && !(how == "default" && p.region))) {
        modes[ADS[i]] = v;
        seen |= i < 2;
      }
    }
    limited = modes.ad_personalization == "denied";
    if (seen) setConsent(modes.ad_storage == "denied" || modes.ad_user_data == "denied" ? "denied" : "granted");
  }
  // GA4 ecommerce (dataLayer object or gtag parameters) → TikTok properties
  function props(e) {
    var o = {}, items = e.items, i;
    // TikTok wants a value with its currency, or neither
    if (e.currency) { o.value = e.value; o.currency = e.currency; }
    if (e.transaction_id) o.order_id = "" + e.transaction_id;
    if (e.search_term) o.search_string = "" + e.search_term;
    if (items && items.length) {
      o.content_type = "product";
      o.contents = [];
      for (i = 0; i < items.length; i++) o.contents.push(pick(items[i], ITEM));
    }
    return o;
  }
  // one dataLayer message: a gtag command (an `arguments` object) or a GTM object
  function take(m, events) {
    var gtag = OP.toString.call(m) == "[object Arguments]";
    var p = gtag ? m[2] || {} : m, n = gtag ? m[0] == "event" && m[1] : p && p.event;
    if (gtag && m[0] == "consent") return consentMode(m[1], p);
    if (!events || !p) return;
    if (gtag && m[0] == "set" && m[1] == "user_data") p = { user_data: p };
    if (p.user_data) {
      var a = p.user_data.address;
      who = merge(who, merge(pick(p.user_data, USER), pick((a && a[0]) || a, ADDRESS)));
    }
    // only names the map knows: GTM's own events stay out; page views are the pixel's
    if (n && n != "page_view" && names(n)) track(n, props(gtag ? p : merge(p, p.ecommerce)));
  }
  function pass(events) { for (var i = 0; i < layer.length; i++) take(layer[i], events); }
  function watch() {
    var L = layer = w.dataLayer = w.dataLayer || [], push = L.push;
    if (typeof push != "function") return;
    // the site's push (and whoever wrapped it before) runs first and answers unchanged
    L.push = function () {
      var r = push.apply(L, arguments), i;
      for (i = 0; i < arguments.length; i++) take(arguments[i], layerOn);
      return r;
    };
  }

  // single-page apps: a route change is a new page for later events, and may bring a click id
  function route(replaced) {
    var u = location.href;
    if (u == page) return;
    if (!replaced) ref = page;
    page = u;
    click = clickOf(u) || click;
    fill();
  }
  function hook(method) {
    var f = history[method];
    if (typeof f == "function") history[method] = function () {
      var r = f.apply(this, arguments);
      route(method == "replaceState");
      return r;
    };
  }

  // lead forms carry the click id to the lead system that receives them
  function fill() {
    if (!field || consent == "denied") return;
    var v = click || (/(?:^|;\s*)ttclid=([^;]+)/.exec(d.cookie) || [])[1], f = d.forms, i, x;
    for (i = 0; v && i < f.length; i++) {
      x = f[i].elements.namedItem(field);
      if (!x) {
        x = d.createElement("input");
        x.type = "hidden";
        x.name = field;
        f[i].appendChild(x);
      }
      if ((x.type == "hidden" || !x.value) && x.value != v) x.value = v;
    }
  }
  function forms() {
    fill();
    new MutationObserver(fill).observe(d.documentElement, { childList: true, subtree: true });
    d.addEventListener("submit", fill, true);
  }

  take = quiet(take); route = quiet(route); fill = quiet(fill);
  var api = {
    track: track,
    identify: function (user) { who = merge(who, user || {}); },
    consent: setConsent,
    config: function (o) {
      o = o || {};
      if (o.pixel_id) pixel = o.pixel_id;
      if (o.forms && !field) { field = o.forms === true ? "ttclid" : "" + o.forms; forms(); }
      if (o.dataLayer && !layerOn) { layerOn = 1; pass(1); }
    }
  };
  for (var k in api) api[k] = quiet(api[k]);
  w.ttgw = api;
  quiet(function () {
    watch();
    // the consent the site already declared, before any queued call is sent
    pass(0);
    hook("pushState");
    hook("replaceState");
    w.addEventListener("popstate", function () { route(); });
    api.config({ dataLayer: "datalayer" in attr, forms: attr.forms === "" || attr.forms });
  })();
  for (var i = 0; i < queued.length; i++) {
    if (api[queued[i][0]]) api[queued[i][0]].apply(null, queued[i][1]);
  }
})(window, document);
