// common.js: what both dashboards share: units, the event stream, charts
// (uPlot), sortable tables and the address filter. Plain browser
// JavaScript, no build step.
"use strict";

const LM = (() => {
  // ---- units ----

  // scaled formats v with 3 significant digits in the largest unit of
  // units (each step a factor base) that keeps it at least 1; the first
  // unit prints whole numbers.
  function scaled(v, base, units) {
    if (v == null || !isFinite(v)) return "–";
    let i = 0;
    while (i < units.length - 1 && Math.abs(v) >= base ** (i + 1)) i++;
    if (i === 0) return Math.round(v) + " " + units[0];
    let x = v / base ** i;
    let s = x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
    if (Number(s) >= base && i < units.length - 1) return scaled(base ** (i + 1), base, units);
    return s + " " + units[i];
  }
  const bitUnits = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
  const byteUnits = ["B", "KiB", "MiB", "GiB", "TiB"];
  // bits: a rate in bits per second, decimal prefixes (39.7 Mbit/s).
  const bits = (v) => scaled(v, 1000, bitUnits);
  // bytes: a size in bytes, binary prefixes (1.50 MiB).
  const bytes = (v) => scaled(v, 1024, byteUnits);
  const grouping = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  // count: an exact integer with thousands separators (1,234,567).
  const count = (v) => (v == null ? "–" : grouping.format(v));
  // pps: packets per second (1,234 pkt/s).
  const pps = (v) => count(v) + " pkt/s";
  // percent of a in a+b, one decimal.
  const share = (a, b) => (a + b === 0 ? "–" : ((100 * a) / (a + b)).toFixed(1) + "%");
  // age: seconds as "4 s", "3 min 2 s", "2 h 5 min".
  function age(s) {
    if (s == null || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  const clock = (t) => new Date(t).toLocaleTimeString([], { hour12: false });

  // ---- DOM ----

  const $ = (sel, root) => (root || document).querySelector(sel);
  // el makes an element: el("td", {class: "num", dataset: {col: "x"}}, "text", child...)
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "dataset") Object.assign(e.dataset, v);
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v === true) e.setAttribute(k, "");
      else if (v !== false && v != null) e.setAttribute(k, v);
    }
    e.append(...kids);
    return e;
  }
  // put sets a node's text (and its data-value, for tests and tooltips).
  function put(node, text, value) {
    if (!node) return;
    if (node.textContent !== text) node.textContent = text;
    if (value !== undefined) node.dataset.value = String(value);
  }
  // td makes a table cell; with a value it is numeric (right-aligned)
  // and carries the value as data-value.
  function td(col, text, value) {
    const c = el("td", { dataset: { col }, class: value === undefined ? "" : "num" }, text);
    if (value !== undefined) c.dataset.value = String(value);
    return c;
  }
  function alert(msg) {
    const a = $("#alert");
    a.textContent = msg || "";
    a.hidden = !msg;
  }

  // ---- addresses ----

  // parseIP returns the address's bytes (4 for IPv4, 16 for IPv6) or null.
  function parseIP(s) {
    s = String(s).trim();
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(s)) {
      const b = s.split(".").map(Number);
      return b.every((x) => x <= 255) ? b : null;
    }
    if (!/^[0-9a-fA-F:.]+$/.test(s) || !s.includes(":")) return null;
    let tail = [];
    const v4 = s.match(/^(.*:)(\d{1,3}(\.\d{1,3}){3})$/);
    if (v4) {
      const b = parseIP(v4[2]);
      if (!b) return null;
      tail = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
      s = v4[1].endsWith("::") ? v4[1] : v4[1].slice(0, -1);
    }
    const halves = s.split("::");
    if (halves.length > 2) return null;
    const groups = (h) => (h === "" ? [] : h.split(":"));
    const head = groups(halves[0]), rest = halves.length === 2 ? groups(halves[1]) : [];
    if (![...head, ...rest].every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return null;
    const n = head.length + rest.length + tail.length;
    if (halves.length === 1 ? n !== 8 : n > 7) return null;
    const words = [...head.map((g) => parseInt(g, 16)), ...Array(8 - n).fill(0), ...rest.map((g) => parseInt(g, 16)), ...tail];
    return words.flatMap((w) => [w >> 8, w & 255]);
  }
  // compareIP orders addresses: IPv4 before IPv6, then numerically.
  function compareIP(a, b) {
    const x = parseIP(a) || [], y = parseIP(b) || [];
    if (x.length !== y.length) return x.length - y.length;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
    return 0;
  }
  // parseFilter reads the filter box: empty (everything), an address
  // (exact), a CIDR (IPv4 or IPv6, host bits ignored), or a partial
  // address (text match while typing). It returns {match, what} or
  // {error}.
  function parseFilter(s) {
    s = s.trim();
    if (s === "") return { match: () => true, what: "" };
    if (s.includes("/")) {
      const m = s.match(/^([^/]+)\/(\d{1,3})$/);
      const ip = m && parseIP(m[1]);
      const bitsLen = m && Number(m[2]);
      if (!ip || bitsLen > ip.length * 8) return { error: `invalid CIDR "${s}": want an address/prefix length such as 198.18.0.0/24 or 2001:db8::/32` };
      return {
        what: "CIDR",
        match: (addr) => {
          const a = parseIP(addr);
          if (!a || a.length !== ip.length) return false;
          for (let i = 0; i < bitsLen; i++) {
            const bit = 7 - (i % 8);
            if (((a[i >> 3] >> bit) & 1) !== ((ip[i >> 3] >> bit) & 1)) return false;
          }
          return true;
        },
      };
    }
    const ip = parseIP(s);
    if (ip) return { what: "address", match: (addr) => compareIP(addr, s) === 0 && (parseIP(addr) || []).length === ip.length };
    if (!/^[0-9a-fA-F:.]+$/.test(s)) return { error: `"${s}" is neither an address nor a CIDR` };
    const low = s.toLowerCase();
    return { what: "text", match: (addr) => addr.toLowerCase().includes(low) };
  }

  // filterBox wires the #filter input: apply(rows) keeps the rows whose
  // address matches (all of them while the filter is invalid);
  // report(shown, all) says how many match, or why the filter is invalid.
  function filterBox(changed) {
    const input = $("#filter"), msg = $("#filter-msg");
    let f = parseFilter("");
    input.addEventListener("input", () => {
      f = parseFilter(input.value);
      changed();
    });
    return {
      apply: (rows) => (f.error ? rows : rows.filter((r) => f.match(r.address))),
      report: (shown, all) => {
        put(msg, f.error ? f.error : f.what ? shown + " of " + all + " talkers match" : "");
        msg.classList.toggle("warn", !!f.error);
        input.setAttribute("aria-invalid", String(!!f.error));
      },
    };
  }

  // ---- sortable tables ----

  // sortable makes the headers of table with a data-key sort it: click or
  // Enter/Space on the header's button; aria-sort says the order. It calls
  // changed({key, dir, type}) and returns the current order.
  function sortable(table, changed) {
    const ths = [...table.querySelectorAll("th[data-key]")];
    const initial = ths.find((th) => th.hasAttribute("aria-sort")) || ths[0];
    const order = { key: initial.dataset.key, dir: initial.getAttribute("aria-sort") || "ascending", type: initial.dataset.type || "num" };
    const show = () => ths.forEach((th) => (th.dataset.key === order.key ? th.setAttribute("aria-sort", order.dir) : th.removeAttribute("aria-sort")));
    for (const th of ths) {
      th.querySelector("button").addEventListener("click", () => {
        const type = th.dataset.type || "num";
        if (order.key === th.dataset.key) order.dir = order.dir === "ascending" ? "descending" : "ascending";
        else Object.assign(order, { key: th.dataset.key, type, dir: type === "num" ? "descending" : "ascending" });
        show();
        changed(order);
      });
    }
    show();
    return order;
  }
  // sortRows sorts objects by order.key; ties keep the server's ranking.
  function sortRows(rows, order) {
    const sign = order.dir === "ascending" ? 1 : -1;
    const cmp = order.type === "ip" ? compareIP : order.type === "text" ? (a, b) => String(a).localeCompare(String(b)) : (a, b) => a - b;
    return rows.map((r, i) => [r, i]).sort(([a, i], [b, j]) => sign * cmp(a[order.key], b[order.key]) || i - j).map(([r]) => r);
  }

  // ---- charts ----

  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const dark = matchMedia("(prefers-color-scheme: dark)");

  // Chart is a time chart of one or more series in a container that
  // follows the container's width. series: [{label, color (CSS variable)}];
  // fmt formats values (axis and legend).
  class Chart {
    constructor(container, series, fmt, height) {
      this.container = container;
      this.series = series;
      this.fmt = fmt;
      this.height = height || 200;
      this.data = [[], ...series.map(() => [])];
      this.range = null;
      this.build();
      new ResizeObserver(() => this.u && this.u.setSize({ width: this.width(), height: this.height })).observe(container);
      dark.addEventListener("change", () => this.build());
    }
    width() {
      return Math.max(200, this.container.clientWidth);
    }
    build() {
      if (this.u) this.u.destroy();
      const fg = css("--muted"), grid = css("--grid");
      const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      // Ticks are round: 4 Mbit/s rather than 4.00 Mbit/s.
      const tick = (v) => this.fmt(v).replace(/\.0+(?= )/, "").replace(/(\.\d*?[1-9])0+(?= )/, "$1");
      // The legend shows the values under the cursor, else the latest.
      const latest = (u, si) => u.data[si][u.data[si].length - 1];
      this.u = new uPlot(
        {
          width: this.width(),
          height: this.height,
          scales: { x: { time: true, range: (u, min, max) => this.range || [min, max] }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1) * 1.1] } },
          axes: [
            { ...axis, space: 70, values: (u, splits) => splits.map((v) => clock(v * 1000)) },
            { ...axis, size: (u, vals) => (vals ? Math.max(...vals.map((v) => v.length)) : 6) * 7 + 20, values: (u, vals) => vals.map(tick) },
          ],
          series: [
            { label: "Time", value: (u, v, si, i) => (i == null ? (u.data[0].length ? "latest" : "–") : clock(v * 1000)) },
            ...this.series.map((s) => ({ label: s.label, stroke: css(s.color), width: 2, spanGaps: false, value: (u, v, si, i) => this.fmt(i == null ? latest(u, si) : v) })),
          ],
          cursor: { drag: { x: false, y: false } },
          legend: { live: true },
        },
        this.data,
        this.container,
      );
    }
    // set draws xs (seconds) and one array per series, over [from, to];
    // the container's data-points says how many reports are drawn.
    set(xs, ys, from, to) {
      this.data = [xs, ...ys];
      this.range = [from, to];
      this.container.dataset.points = String(xs.length);
      this.u.setData(this.data);
    }
    destroy() {
      this.u.destroy();
    }
  }

  // Sparkline is a small rate line without axes (a talker's history).
  class Sparkline {
    constructor(container) {
      this.container = container;
      this.data = [[], []];
      this.build();
      this.onScheme = () => this.build();
      dark.addEventListener("change", this.onScheme);
    }
    build() {
      if (this.u) this.u.destroy();
      this.u = new uPlot(
        {
          width: 120,
          height: 28,
          cursor: { show: false },
          select: { show: false },
          legend: { show: false },
          scales: { x: { time: false, range: (u, min, max) => this.range || [min, max] }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1)] } },
          axes: [{ show: false }, { show: false }],
          series: [{}, { stroke: css("--c1"), width: 1.5, fill: css("--c1-fill"), spanGaps: false }],
        },
        this.data,
        this.container,
      );
    }
    set(xs, ys, from, to) {
      this.data = [xs, ys];
      this.range = [from, to];
      this.u.setData(this.data);
    }
    destroy() {
      dark.removeEventListener("change", this.onScheme);
      this.u.destroy();
    }
  }

  // ---- the event stream ----

  // signIn sends the browser to the sign-in form when the server answered
  // 401 (no or expired token: a server behind secureserve) or 403 (a
  // token that may not read this page); it returns whether it did.
  function signIn(status) {
    if (status !== 401 && status !== 403) return false;
    window.location.assign(status === 401 ? "login?expired=1" : "login?forbidden=1");
    return true;
  }

  // Stream reads a dashboard's events: the history first, then the event
  // stream from the history's lastId on. The browser's EventSource
  // reconnects by itself (sending Last-Event-ID); when the server refuses
  // the stream (a status other than 200: EventSource gives up), Stream
  // asks why, says so, and opens it again later.
  //
  // onEvents(events, replace): events are [{id, data}], oldest first;
  // replace: they are the whole history. onState(state, message): state
  // is connecting, live, reconnecting, paused or refused.
  //
  // #events-received shows how many distinct events the page has (the
  // history's and the stream's). For tests and measurements,
  // document.body carries data-last-event-id, and window.lmReceived holds
  // [{id, arrivedMs, live}] of the events received (the newest 10,000),
  // live for those of the stream (the others came in the history).
  class Stream {
    constructor(query, onEvents, onState) {
      this.query = query; // URLSearchParams of both requests (interface)
      this.onEvents = onEvents;
      this.onState = onState;
      this.lastId = 0;
      this.received = 0;
      this.es = null;
      this.timer = 0;
      this.paused = false;
      this.gen = 0; // bumped by stop(): late answers of an older start are ignored
      window.lmReceived = [];
    }
    url(what, extra) {
      const q = new URLSearchParams(this.query);
      for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
      const s = q.toString();
      return "api/v1/" + what + (s ? "?" + s : "");
    }
    state(s, msg) {
      const c = $("#conn");
      c.dataset.state = s;
      c.textContent = s;
      alert(msg);
      this.onState(s);
    }
    note(id, live) {
      this.lastId = id;
      this.received++;
      window.lmReceived.push({ id, arrivedMs: Date.now(), live });
      if (window.lmReceived.length > 10000) window.lmReceived.splice(0, 1000);
      document.body.dataset.lastEventId = String(id);
      put($("#events-received"), count(this.received), this.received);
    }
    async start() {
      const gen = ++this.gen;
      this.state("connecting");
      let h;
      try {
        const r = await fetch(this.url("history"));
        if (signIn(r.status)) return;
        if (!r.ok) throw new Error(await errorText(r));
        h = await r.json();
      } catch (e) {
        if (gen !== this.gen) return;
        this.state("reconnecting", "cannot read the history: " + e.message);
        this.timer = setTimeout(() => this.start(), 3000);
        return;
      }
      if (gen !== this.gen) return;
      this.received = 0;
      window.lmReceived = [];
      for (const ev of h.events) this.note(ev.id, false);
      this.lastId = h.lastId;
      document.body.dataset.lastEventId = String(h.lastId);
      this.onEvents(h.events, true);
      if (this.paused) this.state("paused");
      else this.open();
    }
    open() {
      clearTimeout(this.timer);
      // since=1 when the history was empty: replay everything published
      // after it was read (since=0 would mean no replay).
      const es = new EventSource(this.url("events", { since: this.lastId || 1 }));
      this.es = es;
      es.onopen = () => this.state("live");
      es.onmessage = (m) => {
        const id = Number(m.lastEventId);
        if (!(id > this.lastId)) return; // a replay of what the history had
        this.note(id, true);
        this.onEvents([{ id, data: JSON.parse(m.data) }], false);
      };
      es.onerror = () => {
        if (this.es !== es) return;
        if (es.readyState === EventSource.CLOSED) this.refused(es);
        else this.state("reconnecting", "connection to the agent lost; reconnecting…");
      };
    }
    // refused finds out why the server answered the stream with an error
    // (EventSource does not tell) and opens it again later.
    async refused(es) {
      es.close();
      this.es = null;
      let status = 0, msg = "";
      const ctl = new AbortController();
      try {
        const r = await fetch(this.url("events", { since: this.lastId || 1 }), { signal: ctl.signal, headers: { Accept: "text/event-stream" } });
        status = r.status;
        if (!r.ok) msg = await errorText(r);
      } catch (e) {
        msg = e.message;
      }
      ctl.abort();
      if (this.paused || this.es) return;
      if (signIn(status)) return;
      if (status === 429) {
        this.state("refused", "too many dashboard clients: the server refused this page's live stream (" + msg + "). Close other dashboard tabs; retrying in 30 s.");
        this.timer = setTimeout(() => this.open(), 30000);
      } else if (status === 200) {
        this.open();
      } else {
        this.state("reconnecting", "the live stream failed" + (status ? " (HTTP " + status + ")" : "") + (msg ? ": " + msg : "") + "; retrying…");
        this.timer = setTimeout(() => this.open(), 3000);
      }
    }
    pause() {
      this.paused = true;
      this.close();
      this.state("paused");
    }
    resume() {
      this.paused = false;
      this.open();
      this.state("reconnecting");
    }
    close() {
      clearTimeout(this.timer);
      if (this.es) this.es.close();
      this.es = null;
    }
    stop() {
      this.gen++;
      this.close();
    }
  }
  async function errorText(r) {
    try {
      const j = await r.json();
      return j.error || r.statusText;
    } catch {
      return r.status + " " + r.statusText;
    }
  }

  // ---- page plumbing ----

  // renderer coalesces redraws into one per animation frame, but for the
  // first with data (the history), drawn at once. draw returns whether it
  // had data to draw; the first time it has, renderer marks
  // "lm-first-paint" (performance) and sets document.body's
  // data-first-paint-ms.
  function renderer(draw) {
    let queued = false, first = true;
    const run = () => {
      if (draw() && first) {
        first = false;
        performance.mark("lm-first-paint");
        document.body.dataset.firstPaintMs = performance.now().toFixed(1);
      }
    };
    return () => {
      if (first) return run();
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        run();
      });
    };
  }

  // controls wires the window selector and the pause button.
  function controls(stream, redraw) {
    const win = $("#window"), pause = $("#pause");
    const w = { seconds: Number(win.value) };
    win.addEventListener("change", () => {
      w.seconds = Number(win.value);
      redraw();
    });
    pause.addEventListener("click", () => {
      const paused = pause.getAttribute("aria-pressed") !== "true";
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      paused ? stream.pause() : stream.resume();
    });
    return w;
  }

  // History keeps the events of the last ten minutes (the longest
  // window), oldest first, each as {id, t (seconds), d (data)}.
  class History {
    constructor() {
      this.events = [];
    }
    add(evs, replace) {
      if (replace) this.events = [];
      for (const e of evs) this.events.push({ id: e.id, t: Date.parse(e.data.time) / 1000, d: e.data });
      const last = this.latest();
      if (last) {
        const keep = this.events.findIndex((e) => e.t >= last.t - 600);
        if (keep > 0) this.events.splice(0, keep);
      }
    }
    latest() {
      return this.events[this.events.length - 1];
    }
    // window returns the events of the last seconds (later than the
    // newest's time minus seconds) and the range to draw them over: the
    // window, or from the first of them when the history is shorter.
    window(seconds) {
      const last = this.latest();
      if (!last) return { evs: [], from: 0, to: 0 };
      const start = last.t - seconds;
      const evs = this.events.filter((e) => e.t > start);
      return { evs, from: evs.length > 1 ? Math.max(start, evs[0].t) : start, to: last.t };
    }
  }

  return { bits, bytes, count, pps, share, age, clock, $, el, put, td, alert, parseIP, compareIP, parseFilter, filterBox, sortable, sortRows, Chart, Sparkline, Stream, renderer, controls, History };
})();
