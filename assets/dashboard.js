// Monitoring dashboard: fetches the JSON API and draws with the vendored
// uPlot. No inline script (CSP), no innerHTML (every value is text).
(function () {
  "use strict";
  var charts = {};
  var timer = null;

  function $(id) { return document.getElementById(id); }
  function text(el, t) { el.textContent = t; return el; }
  function el(tag, cls, t) { var e = document.createElement(tag); if (cls) e.className = cls; if (t != null) e.textContent = t; return e; }
  function fmt(n, d) { return n == null ? "—" : Number(n).toFixed(d == null ? 1 : d); }
  function badgeClass(status) { return status === "healthy" ? "badge ok" : status === "degraded" ? "badge warn" : "badge bad"; }
  function sevClass(s) { return s === "high" ? "badge bad" : s === "medium" ? "badge warn" : "badge"; }

  function chart(id, series, data, height, spark) {
    var host = $(id);
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    var width = Math.max(240, host.clientWidth || 300);
    var opts = {
      width: width, height: height || 180,
      series: [{}].concat(series),
      axes: spark ? [{ show: false }, { show: false }] : [{}, { size: 50 }],
      legend: { show: !spark && series.length > 1 },
      scales: spark ? { y: { range: [0, 2] } } : {},
      cursor: { show: !spark, drag: { x: false, y: false } }
    };
    charts[id] = new uPlot(opts, data, host);
  }

  function renderHealth(d, trends) {
    var o = $("overall");
    o.className = badgeClass(d.health.status);
    text(o, d.health.status);
    var box = $("components");
    while (box.firstChild) box.removeChild(box.firstChild);
    d.health.components.forEach(function (c) {
      var card = el("div", "card component");
      card.appendChild(el("h3", null, c.name));
      var b = el("span", badgeClass(c.status), c.status);
      card.appendChild(b);
      if (c.message) card.appendChild(el("p", "muted", c.message));
      var spark = el("div", "spark");
      spark.id = "spark-" + c.name;
      card.appendChild(spark);
      box.appendChild(card);
      var pts = trends.filter(function (t) { return t.component === c.name; });
      if (pts.length > 1) {
        var xs = pts.map(function (t) { return Date.parse(t.timestamp) / 1000; });
        var ys = pts.map(function (t) { return t.status === "healthy" ? 0 : t.status === "degraded" ? 1 : 2; });
        chart(spark.id, [{ label: "status (0 ok, 2 down)", stroke: "#6b2bd9", width: 2 }], [xs, ys], 40, true);
      } else {
        spark.appendChild(el("span", "muted", "not enough samples yet"));
      }
    });
  }

  function renderRoutes(d) {
    var body = $("routes").tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    d.routes.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", null, r.route));
      tr.appendChild(el("td", null, String(r.requests)));
      tr.appendChild(el("td", null, fmt(r.ratePerSec, 2)));
      tr.appendChild(el("td", null, fmt(r.errorRate, 2)));
      tr.appendChild(el("td", null, fmt(r.p50)));
      tr.appendChild(el("td", null, fmt(r.p95)));
      tr.appendChild(el("td", null, fmt(r.p99)));
      body.appendChild(tr);
    });
    if (!d.routes.length) {
      var tr = el("tr"); var td = el("td", "muted", "No traffic in this range yet."); td.colSpan = 7; tr.appendChild(td); body.appendChild(tr);
    }
  }

  function renderInstances(d) {
    var body = $("instances").tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    d.instances.forEach(function (i) {
      var tr = el("tr");
      tr.appendChild(el("td", null, i.instance));
      tr.appendChild(el("td", null, String(i.requests)));
      tr.appendChild(el("td", null, String(i.errors)));
      tr.appendChild(el("td", null, i.lastSeen));
      body.appendChild(tr);
    });
    if (!d.instances.length) {
      var tr = el("tr"); var td = el("td", "muted", "No instance has reported in this range yet."); td.colSpan = 4; tr.appendChild(td); body.appendChild(tr);
    }
  }

  function renderAlerts(d) {
    [["alerts-active", d.alerts.active], ["alerts-recent", d.alerts.recent]].forEach(function (pair) {
      var ul = $(pair[0]);
      while (ul.firstChild) ul.removeChild(ul.firstChild);
      if (!pair[1].length) ul.appendChild(el("li", "muted", "None"));
      pair[1].forEach(function (a) {
        var li = el("li");
        li.appendChild(el("span", sevClass(a.severity), a.severity));
        li.appendChild(document.createTextNode(" " + a.state + ": " + a.summary + " (since " + a.startedAt + ")"));
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
      { label: "p99", stroke: "#14121f", width: 2 }
    ], [s.timestamps, s.p95, s.p99]);
  }

  function load() {
    var range = $("range").value;
    $("loading").hidden = false;
    $("error").hidden = true;
    Promise.all([
      fetch("/api/monitoring/dashboard?range=" + encodeURIComponent(range), { credentials: "same-origin" }),
      fetch("/api/monitoring/health-trends?range=" + encodeURIComponent(range), { credentials: "same-origin" })
    ]).then(function (rs) {
      return Promise.all(rs.map(function (r) {
        if (!r.ok) throw new Error("the monitoring API answered " + r.status);
        return r.json();
      }));
    }).then(function (res) {
      var d = res[0];
      renderHealth(d, res[1]);
      renderCharts(d);
      renderRoutes(d);
      renderInstances(d);
      renderAlerts(d);
      renderCapacity(d);
      text($("updated"), "updated " + new Date(d.generatedAt).toLocaleTimeString());
      document.body.setAttribute("data-dashboard", "loaded-" + d.range);
    }).catch(function (e) {
      var box = $("error");
      text(box, "Could not load monitoring data: " + e.message);
      box.hidden = false;
    }).finally(function () {
      $("loading").hidden = true;
    });
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = $("auto").checked ? setInterval(load, 15000) : null;
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("range").addEventListener("change", load);
    $("auto").addEventListener("change", schedule);
    $("controls").addEventListener("submit", function (e) { e.preventDefault(); load(); });
    load();
    schedule();
  });
})();
