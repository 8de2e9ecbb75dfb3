// eventmesh-health: live updates of the page (it works without this script).
// The grid polls the REST API's /api/v1/summary with If-None-Match (304 while nothing
// changed) and rebuilds its rows with DOM methods (no HTML parsing of data: every text is a text node);
// an application or flow page fetches itself again (by ETag) and swaps in the new <main>.
"use strict";
(function () {
  var INTERVAL = 1000;
  var MARK = { Healthy: "\u2713", Progressing: "\u2026", Unknown: "?", Degraded: "!",
               Unhealthy: "\u2717" };
  var live = document.getElementById("live");
  var etag = null;
  var failures = 0;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function mark(health) { return el("span", { "class": "mark", "aria-hidden": "true" }, [MARK[health] || "?"]); }
  function since(iso) {
    if (!iso) { return ""; }
    var s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) { return s + "s ago"; }
    if (s < 3600) { return Math.floor(s / 60) + "m ago"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m ago"; }
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h ago";
  }
  function when(iso) {
    if (!iso) { return el("span", { "class": "muted" }, ["not recorded"]); }
    return el("time", { datetime: iso, "data-since": "", title: iso }, [since(iso)]);
  }
  function tick() {
    document.querySelectorAll("time[data-since]").forEach(function (t) {
      var text = since(t.getAttribute("datetime"));
      if (text && t.textContent !== text) { t.textContent = text; }
    });
  }
  function status(text) { if (live) { live.textContent = text; } }
  function stamp() { return new Date().toLocaleTimeString(); }

  function appRow(a) {
    var nss;
    if (a.namespaces.length) {
      nss = el("ul", { "class": "nss" }, a.namespaces.map(function (ns) {
        return el("li", { "class": "ns h-" + ns.health, "data-ns": ns.name }, [
          mark(ns.health), " " + ns.name + " ",
          el("span", { "class": "vh" }, [ns.health + (ns.rootCause ? ": " + ns.rootCause : "")])]);
      }));
    } else {
      nss = el("span", { "class": "muted" }, ["not bound"]);
    }
    var sig = a.health + " " + a.rootCause + a.namespaces.map(function (ns) { return " " + ns.name + "=" + ns.health; }).join("");
    return el("tr", { "data-key": a.name, "data-sig": sig }, [
      el("th", { scope: "row" }, [el("a", { href: "/applications/" + encodeURIComponent(a.name) }, [a.name])]),
      el("td", { "class": "cell h-" + a.health }, [mark(a.health), " " + a.health]),
      el("td", {}, [a.state + "/4"]),
      el("td", { "class": "rc" }, [a.rootCause]),
      el("td", {}, [when(a.lastTransitionTime)]),
      el("td", {}, [nss])]);
  }
  function flowRow(f) {
    var key = f.namespace + "/" + f.kind + "/" + f.name;
    return el("tr", { "data-key": key, "data-sig": f.health + " " + f.rootCause }, [
      el("th", { scope: "row" }, [el("a", { href: "/flows/" + key.split("/").map(encodeURIComponent).join("/") }, [f.kind + " " + f.name])]),
      el("td", {}, [f.namespace]),
      el("td", { "class": "cell h-" + f.health }, [mark(f.health), " " + f.health]),
      el("td", { "class": "rc" }, [f.rootCause]),
      el("td", {}, [when(f.lastTransitionTime)])]);
  }
  // Replace the rows of one table; rows whose content changed flash once; focus kept.
  function patch(tableId, items, build) {
    var table = document.getElementById(tableId);
    if (!table) { return items.length > 0; }  // the list appeared: needs the full page
    var body = table.tBodies[0];
    var focused = document.activeElement;
    var focusKey = null;
    if (focused && body.contains(focused)) { focusKey = focused.closest("tr").getAttribute("data-key"); }
    var old = {};
    Array.prototype.forEach.call(body.rows, function (r) { old[r.getAttribute("data-key")] = r.getAttribute("data-sig"); });
    var fresh = document.createDocumentFragment();
    items.forEach(function (item) {
      var row = build(item);
      var key = row.getAttribute("data-key");
      if (old[key] !== undefined && old[key] !== row.getAttribute("data-sig")) { row.classList.add("changed"); }
      fresh.appendChild(row);
    });
    body.replaceChildren(fresh);
    if (focusKey) {
      var again = body.querySelector("tr[data-key=\"" + CSS.escape(focusKey) + "\"] a");
      if (again) { again.focus(); }
    }
    return false;
  }
  function counts(s) {
    var node = document.getElementById("counts");
    if (!node) { return; }
    var parts = [];
    function add(label, values) {
      var shown = Object.keys(MARK).filter(function (h) { return values[h]; });
      if (!shown.length) { return; }
      parts.push(label);
      shown.forEach(function (h) {
        parts.push(el("span", { "class": "count" }, [
          el("span", { "class": "badge h-" + h }, [mark(h), " " + h]), " " + values[h]]), " ");
      });
    }
    add("Applications: ", s.counts);
    add(" Flows: ", s.flowCounts);
    node.replaceChildren.apply(node, parts);
  }
  function badgeText(node, health) {
    if (!node) { return; }
    node.className = "badge h-" + health;
    node.replaceChildren(mark(health), " " + health);
  }

  function pollGrid() {
    var params = new URLSearchParams(location.search);
    var query = new URLSearchParams();
    ["q", "health", "page", "flowPage"].forEach(function (k) { if (params.get(k)) { query.set(k, params.get(k)); } });
    var headers = etag ? { "If-None-Match": etag } : {};
    return fetch("/api/v1/summary?" + query.toString(), { headers: headers, cache: "no-store" }).then(function (r) {
      if (r.status === 304) { return null; }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      etag = r.headers.get("ETag");
      return r.json();
    }).then(function (s) {
      if (!s) { return false; }
      var reload = patch("apps", s.applications.items, appRow);
      reload = patch("flows", s.flows.items, flowRow) || reload;
      var a = document.getElementById("apps-total"); if (a) { a.textContent = s.applications.total; }
      var f = document.getElementById("flows-total"); if (f) { f.textContent = s.flows.total; }
      counts(s);
      badgeText(document.querySelector("h1 .badge"), s.health);
      badgeText(document.querySelector("#system-h .badge"), s.system.health);
      document.title = "Event mesh: " + s.health + " \u00b7 eventmesh-health";
      if (reload) { return swapMain(); }
      return true;
    });
  }

  // A detail page: fetch it again; on news, swap in the new <main> (focus kept by id).
  function swapMain() {
    var headers = etag ? { "If-None-Match": etag } : {};
    return fetch(location.pathname + location.search, { headers: headers, cache: "no-store" }).then(function (r) {
      if (r.status === 304) { return null; }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      etag = r.headers.get("ETag");
      return r.text();
    }).then(function (html) {
      if (!html) { return false; }
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("main");
      var main = document.getElementById("main");
      if (!fresh || !main) { return false; }
      var norm = function (n) { return n.textContent.replace(/\d+[smhd]( \d+[mh])? ago/g, ""); };
      if (norm(fresh) === norm(main)) { return false; }
      var focusId = document.activeElement && document.activeElement.id;
      var open = {};
      main.querySelectorAll("details[open] summary").forEach(function (s) { open[s.textContent] = true; });
      main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes).map(function (n) { return document.importNode(n, true); }));
      main.querySelectorAll("details summary").forEach(function (s) { if (open[s.textContent]) { s.parentNode.open = true; } });
      document.title = doc.title;
      if (focusId) { var f = document.getElementById(focusId); if (f) { f.focus(); } }
      return true;
    });
  }

  var page = document.body.getAttribute("data-page");
  var poll = page === "grid" ? pollGrid : (page === "detail" ? swapMain : null);
  if (!poll) { status(""); return; }
  status("Live: checks for news every second.");
  function loop() {
    poll().then(function (news) {
      // Announced (aria-live) only when something changed, or after a failure.
      if (news || failures) { status("Live: last change shown at " + stamp() + "."); }
      failures = 0;
      tick();
    }).catch(function (err) {
      failures += 1;
      status("Live updates paused (" + err.message + "); retrying.");
    }).then(function () {
      setTimeout(loop, Math.min(INTERVAL * Math.pow(2, failures), 30000));
    });
  }
  setTimeout(loop, INTERVAL);
  setInterval(tick, 5000);
}());
