// Monitoring dashboard: fetches the JSON API and draws with the vendored
// uPlot. No inline script (CSP), no innerHTML (every value is text).
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var RANGE_MS = { "15m": 9e5, "1h": 36e5, "6h": 216e5, "24h": 864e5, "7d": 6048e5 };
  var RANGE_TEXT = { "15m": "15 minutes", "1h": "hour", "6h": "6 hours", "24h": "24 hours", "7d": "7 days" };
  // Columns of a health sparkline: few enough to read, whatever the range.
  var SPARK_BUCKETS = 60;
  var STATUS_RANK = { healthy: 0, degraded: 1, unhealthy: 2 };
  var RANK_STATUS = ["healthy", "degraded", "unhealthy"];
  var CHART_HEIGHT = 180;
  var charts = {};
  var timer = null;
  // Answers of an older load (a slow refresh overtaken by a range change)
  // must not overwrite a newer one.
  var generation = 0;

  function $(id) { return document.getElementById(id); }
  // Unchanged text is left alone: a live region would announce it again at
  // every refresh.
  function text(el, t) { if (el.textContent !== t) el.textContent = t; return el; }
  function el(tag, cls, t) { var e = document.createElement(tag); if (cls) e.className = cls; if (t != null) e.textContent = t; return e; }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmt(n, d) { return n == null ? "—" : Number(n).toFixed(d == null ? 1 : d); }
  function statusClass(status) { return status === "healthy" ? "ok" : status === "degraded" ? "warn" : "bad"; }
  function badgeClass(status) { return "badge " + statusClass(status); }
  function sevClass(s) { return s === "high" ? "badge bad" : s === "medium" ? "badge warn" : "badge"; }
  function rank(status) { return STATUS_RANK.hasOwnProperty(status) ? STATUS_RANK[status] : 2; }
  // UTC to the second, as an operator compares it with log timestamps.
  function utc(ts) {
    var t = Date.parse(ts);
    return isNaN(t) ? String(ts) : new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function timeEl(ts) { var t = el("time", null, utc(ts)); t.setAttribute("datetime", ts); return t; }
  function td(t, cls) { return el("td", cls || null, t); }
  function emptyRow(body, cols, message) {
    var tr = el("tr"); var cell = el("td", "muted text", message); cell.colSpan = cols; tr.appendChild(cell); body.appendChild(tr);
  }

  // uPlot draws into a canvas of a fixed pixel size: follow the card's
  // width, which the grid decides (never the other way round).
  var resizer = typeof ResizeObserver === "function" ? new ResizeObserver(function (entries) {
    entries.forEach(function (entry) {
      var c = charts[entry.target.id];
      var width = Math.floor(entry.target.clientWidth);
      if (c && width > 0 && width !== c.width) c.setSize({ width: width, height: c.height });
    });
  }) : null;

  // Draws only the values that have no neighbour: a lone sample between
  // gaps has no segment to show it.
  function isolated(u, i) {
    var ys = u.data[i], out = [];
    for (var j = 0; j < ys.length; j++) {
      if (ys[j] != null && (j === 0 || ys[j - 1] == null) && (j === ys.length - 1 || ys[j + 1] == null)) out.push(j);
    }
    return out;
  }

  function chart(id, series, data) {
    var host = $(id);
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    var opts = {
      width: Math.max(1, Math.floor(host.clientWidth)), height: CHART_HEIGHT,
      series: [{}].concat(series.map(function (s) {
        // A bucket without requests has no latency: a gap, never a line
        // to zero or across.
        s.spanGaps = false;
        s.points = { show: true, size: 5, filter: isolated };
        return s;
      })),
      axes: [{}, { size: 50 }],
      // UTC like every other time on the page and in the logs.
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      legend: { show: series.length > 1 },
      cursor: { drag: { x: false, y: false } }
    };
    charts[id] = new uPlot(opts, data, host);
    if (resizer) resizer.observe(host);
  }

  // The worst status of each time slice of the range across instances, as
  // bars whose height says the status (colour only repeats it).
  function sparkline(name, points, fromMs, toMs, range) {
    var worst = [], i;
    for (i = 0; i < SPARK_BUCKETS; i++) worst.push(-1);
    var span = Math.max(1, toMs - fromMs);
    points.forEach(function (p) {
      var t = Date.parse(p.timestamp);
      if (isNaN(t)) return;
      var b = Math.min(SPARK_BUCKETS - 1, Math.max(0, Math.floor((t - fromMs) / span * SPARK_BUCKETS)));
      worst[b] = Math.max(worst[b], rank(p.status));
    });
    var counts = [0, 0, 0], none = 0;
    var s = svg("svg", { "class": "spark", viewBox: "0 0 " + SPARK_BUCKETS + " 3", preserveAspectRatio: "none", role: "img", focusable: "false" });
    s.appendChild(svg("line", { "class": "base", x1: 0, y1: 2.95, x2: SPARK_BUCKETS, y2: 2.95, "vector-effect": "non-scaling-stroke" }));
    worst.forEach(function (r, x) {
      if (r < 0) { none++; return; }
      counts[r]++;
      s.appendChild(svg("rect", { "class": statusClass(RANK_STATUS[r]), x: x + 0.1, y: 2 - r, width: 0.8, height: r + 1 }));
    });
    var label = name + ", last " + RANGE_TEXT[range] + ": healthy in " + counts[0] + " of " + SPARK_BUCKETS +
      " intervals, degraded in " + counts[1] + ", unhealthy in " + counts[2] + ", no samples in " + none;
    s.setAttribute("aria-label", label);
    var title = svg("title", {});
    title.textContent = label;
    s.insertBefore(title, s.firstChild);
    return s;
  }

  function componentNames(d, trends) {
    var names = d.health.components.map(function (c) { return c.name; });
    trends.forEach(function (t) { if (names.indexOf(t.component) < 0) names.push(t.component); });
    return names;
  }

  function renderHealth(d, trends) {
    var o = $("overall");
    o.className = badgeClass(d.health.status);
    text(o, d.health.status);
    var box = $("components");
    clear(box);
    var toMs = Date.parse(d.generatedAt), fromMs = toMs - RANGE_MS[d.range];
    var byInstance = latestByInstance(trends);
    d.health.components.forEach(function (c) {
      var card = el("div", "card component");
      card.appendChild(el("h3", null, c.name));
      card.appendChild(el("span", badgeClass(c.status), c.status));
      if (c.message) card.appendChild(el("p", "muted", c.message));
      // The badge is this server's view; another instance may see worse.
      var elsewhere = Object.keys(byInstance.latest).sort().filter(function (i) {
        var t = byInstance.latest[i][c.name];
        return t && t.status !== "healthy";
      }).map(function (i) { return byInstance.latest[i][c.name].status + " on " + i; });
      if (elsewhere.length) card.appendChild(el("p", "note", "Latest: " + elsewhere.join("; ")));
      var pts = trends.filter(function (t) { return t.component === c.name; });
      if (pts.length) {
        card.appendChild(sparkline(c.name, pts, fromMs, toMs, d.range));
      } else {
        card.appendChild(el("p", "muted", "No samples in this range yet."));
      }
      box.appendChild(card);
    });
    renderInstanceHealth(d, trends, byInstance);
  }

  // Each instance's latest sample of each component, and of any component.
  function latestByInstance(trends) {
    var latest = {}, lastAt = {};
    trends.forEach(function (t) {
      var at = Date.parse(t.timestamp);
      var row = latest[t.instance] || (latest[t.instance] = {});
      var prev = row[t.component];
      if (!prev || Date.parse(prev.timestamp) <= at) row[t.component] = t;
      if (!(lastAt[t.instance] >= at)) lastAt[t.instance] = at;
    });
    return { latest: latest, lastAt: lastAt };
  }

  // Cells of a table that stacks into label/value lines on a phone keep
  // their roles explicit: browsers drop table semantics of restyled tables.
  function cell(tag, label, cls) {
    var c = el(tag, cls || null);
    c.setAttribute("role", tag === "td" ? "cell" : "rowheader");
    if (tag === "th") c.setAttribute("scope", "row");
    if (label) c.setAttribute("data-label", label);
    return c;
  }
  function row() { var r = el("tr"); r.setAttribute("role", "row"); return r; }
  function headerCell(name, cls) {
    var c = el("th", cls || null, name);
    c.setAttribute("scope", "col");
    c.setAttribute("role", "columnheader");
    return c;
  }

  function renderInstanceHealth(d, trends, byInstance) {
    var names = componentNames(d, trends);
    var latest = byInstance.latest, lastAt = byInstance.lastAt;
    var instances = Object.keys(latest);
    d.instances.forEach(function (i) { if (instances.indexOf(i.instance) < 0) instances.push(i.instance); });
    instances.sort();

    var table = $("instance-health");
    var head = table.tHead.rows[0];
    clear(head);
    head.appendChild(headerCell("Instance"));
    names.forEach(function (n) { head.appendChild(headerCell(n, "text")); });
    head.appendChild(headerCell("Last sample"));

    var body = table.tBodies[0];
    clear(body);
    instances.forEach(function (inst) {
      var tr = row();
      tr.appendChild(cell("th", null, "text")).textContent = inst;
      names.forEach(function (n) {
        var c = cell("td", n, "text");
        var t = latest[inst] && latest[inst][n];
        if (t) c.appendChild(el("span", badgeClass(t.status), t.status));
        else c.appendChild(el("span", "muted", "no sample"));
        tr.appendChild(c);
      });
      var last = cell("td", "Last sample");
      if (lastAt[inst] != null) last.appendChild(timeEl(new Date(lastAt[inst]).toISOString()));
      else text(last, "—");
      tr.appendChild(last);
      body.appendChild(tr);
    });
    if (!instances.length) emptyRow(body, names.length + 2, "No instance has reported health in this range yet.");
  }

  function renderErrors(groups) {
    var state = $("errors-state"), table = $("errors"), body = table.tBodies[0];
    clear(body);
    if (groups == null) {
      text(state, "Error groups are not available from this server.");
      table.hidden = true;
      return;
    }
    if (!groups.length) {
      text(state, "No errors in this range.");
      table.hidden = true;
      return;
    }
    text(state, groups.length + (groups.length === 1 ? " group" : " groups") + ", most recently seen first.");
    groups.forEach(function (g) {
      var tr = row();
      var add = function (label, cls, content) {
        var c = tr.appendChild(cell("td", label, cls));
        if (typeof content === "string") c.textContent = content; else c.appendChild(content);
      };
      add("Route", "text", g.method + " " + g.route);
      add("Status", "text", g.status + " " + g.code);
      add("Cause", "text", g.cause);
      add("Count", null, String(g.count));
      add("First seen", null, timeEl(g.firstSeen));
      add("Last seen", null, timeEl(g.lastSeen));
      add("Instances", "text", (g.instances || []).join(", "));
      add("Last request id", "text", el("code", null, g.lastRequestId));
      body.appendChild(tr);
    });
    table.hidden = false;
  }

  function renderRoutes(d) {
    var body = $("routes").tBodies[0];
    clear(body);
    d.routes.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(td(r.route));
      tr.appendChild(td(String(r.requests)));
      tr.appendChild(td(fmt(r.ratePerSec, 2)));
      tr.appendChild(td(fmt(r.errorRate, 2)));
      tr.appendChild(td(fmt(r.p50)));
      tr.appendChild(td(fmt(r.p95)));
      tr.appendChild(td(fmt(r.p99)));
      body.appendChild(tr);
    });
    if (!d.routes.length) emptyRow(body, 7, "No traffic in this range yet.");
  }

  function renderInstances(d) {
    var body = $("instances").tBodies[0];
    clear(body);
    d.instances.forEach(function (i) {
      var tr = el("tr");
      tr.appendChild(td(i.instance));
      tr.appendChild(td(String(i.requests)));
      tr.appendChild(td(String(i.errors)));
      tr.appendChild(el("td")).appendChild(timeEl(i.lastSeen));
      body.appendChild(tr);
    });
    if (!d.instances.length) emptyRow(body, 4, "No instance has reported in this range yet.");
  }

  function renderAlerts(d) {
    [["alerts-active", d.alerts.active], ["alerts-recent", d.alerts.recent]].forEach(function (pair) {
      var ul = $(pair[0]);
      clear(ul);
      if (!pair[1].length) ul.appendChild(el("li", "muted", "None"));
      pair[1].forEach(function (a) {
        var li = el("li");
        li.appendChild(el("span", sevClass(a.severity), a.severity));
        li.appendChild(document.createTextNode(" " + a.state + ": " + a.summary + " (since " + utc(a.startedAt) + ")"));
        ul.appendChild(li);
      });
    });
  }

  function renderCapacity(d) {
    var c = d.cache;
    text($("cache"), c.stats ? ("hit ratio " + (c.hitRatio == null ? "—" : (c.hitRatio * 100).toFixed(1) + "%") +
      " · " + c.stats.hits + " hits, " + c.stats.misses + " misses, " + c.stats.staleServed + " stale, " + c.stats.entries + " entries") : "off");
    var p = d.pool;
    text($("pool"), p.size + " open (" + p.inUse + " in use, " + p.idle + " idle) of " + p.max + "; " + p.waiting + " waiting");
    var s = d.scaling;
    text($("scaling"), "now " + fmt(s.currentRate, 2) + " req/s → " + fmt(s.forecast15m, 2) + " in 15 min (" + s.instances15m +
      " instance" + (s.instances15m === 1 ? "" : "s") + "), " + fmt(s.forecast60m, 2) + " in 60 min (" + s.instances60m + ")");
  }

  function renderCharts(d) {
    var s = d.series;
    chart("chart-rate", [{ label: "req/s", stroke: "#6b2bd9", width: 2 }], [s.timestamps, s.requestsPerSec]);
    chart("chart-errors", [{ label: "% 5xx", stroke: "#b3261e", width: 2 }], [s.timestamps, s.errorRate]);
    chart("chart-latency", [
      { label: "p95", stroke: "#8a5a00", width: 2 },
      { label: "p99", stroke: "#14121f", width: 2, dash: [6, 4] }
    ], [s.timestamps, s.p95, s.p99]);
  }

  function getJson(path, range) {
    return fetch(path + "?range=" + encodeURIComponent(range), { credentials: "same-origin" });
  }

  function monitoringJson(path, range) {
    return getJson(path, range).then(function (r) {
      if (!r.ok) throw new Error("the monitoring API answered " + r.status);
      return r.json();
    });
  }

  // Health samples. The latest statuses come from the last 15 minutes at
  // every refresh; a longer range's history (the sparklines) changes little
  // in 15 s, so it is read again only after 1/240 of the range (6 min of
  // 24 h) and the recent samples are added to it meanwhile.
  var history = null;
  function loadTrends(range) {
    if (RANGE_MS[range] <= RANGE_MS["1h"]) return monitoringJson("/api/monitoring/health-trends", range);
    var now = Date.now();
    var past = history && history.range === range && now - history.at < RANGE_MS[range] / 240
      ? Promise.resolve(history.items)
      : monitoringJson("/api/monitoring/health-trends", range).then(function (items) {
        history = { range: range, at: now, items: items };
        return items;
      });
    return Promise.all([past, monitoringJson("/api/monitoring/health-trends", "15m")])
      .then(function (r) { return r[0].concat(r[1]); });
  }

  // The error groups: null when this server has no such route (404).
  function loadErrors(range) {
    return getJson("/api/monitoring/errors", range).then(function (r) {
      if (r.status === 404) return null;
      if (!r.ok) throw new Error("the error groups API answered " + r.status);
      return r.json();
    });
  }

  function load() {
    var range = $("range").value;
    var mine = ++generation;
    $("loading").hidden = false;
    $("error").hidden = true;
    var main = Promise.all([
      monitoringJson("/api/monitoring/dashboard", range),
      loadTrends(range)
    ]).then(function (res) {
      if (mine !== generation) return;
      var d = res[0];
      renderHealth(d, res[1]);
      renderCharts(d);
      renderRoutes(d);
      renderInstances(d);
      renderAlerts(d);
      renderCapacity(d);
      text($("updated"), "updated " + utc(d.generatedAt).slice(11, 19) + " UTC");
    }).catch(function (e) {
      if (mine !== generation) return;
      var box = $("error");
      text(box, "Could not load monitoring data: " + e.message);
      box.hidden = false;
    });
    var errors = loadErrors(range).then(function (groups) {
      if (mine === generation) renderErrors(groups);
    }, function (e) {
      if (mine !== generation) return;
      renderErrors([]);
      text($("errors-state"), "Could not load error groups: " + e.message);
    });
    Promise.all([main, errors]).then(function () {
      if (mine !== generation) return;
      $("loading").hidden = true;
      document.body.setAttribute("data-dashboard", "loaded-" + range);
    });
  }

  // A hidden tab is not refreshed: nobody reads it, and every refresh
  // reads the whole range from the database.
  function tick() { if (!document.hidden) load(); }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = $("auto").checked ? setInterval(tick, 15000) : null;
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("range").addEventListener("change", load);
    $("auto").addEventListener("change", schedule);
    $("controls").addEventListener("submit", function (e) { e.preventDefault(); load(); });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && $("auto").checked) load();
    });
    load();
    schedule();
  });
})();
