// agent.js: the dashboard of one agent's interface. Its events are the
// agent's ReportEvent (GET api/v1/events): time, node, interface, state,
// message, xdpMode, xdpModeReason, promiscuous, reportIntervalSeconds,
// elapsedSeconds, totals{packets, bytes, dropped, malformed, nonIP,
// trackedSources, trackedSourcesCapacity}, rates{bitsPerSecond,
// packetsPerSecond, internal/external bits, local/snooped/dropped/
// malformed/nonIP packets per second}, topTalkers[{address, internal,
// packets, bytes, localPackets, snoopedPackets, bitsPerSecond,
// packetsPerSecond}], rules[{name, mode, direction, cidrCount, cidrs,
// matchedPackets, droppedPackets, matchedPacketsPerSecond,
// droppedPacketsPerSecond, exemptedAddresses}], evictions.
"use strict";

(() => {
  const { $, el, put, td, bits, bytes, count, pps, share } = LM;
  const hist = new LM.History();
  const redraw = LM.renderer(draw);
  const bitsChart = new LM.Chart($("#chart-bits"), [
    { label: "total", color: "--c1" },
    { label: "internal", color: "--c2" },
    { label: "external", color: "--c3" },
  ], bits);
  const packetsChart = new LM.Chart($("#chart-packets"), [
    { label: "total", color: "--c1" },
    { label: "local", color: "--c2" },
    { label: "snooped", color: "--c3" },
  ], pps);
  let talkerChart = null;
  let selected = null; // the address whose history is shown
  const filter = LM.filterBox(redraw);
  const rows = new Map(); // address -> {row, cells, spark}
  const order = LM.sortable($("#talkers"), redraw);

  let stream = null;
  const win = LM.controls({ pause: () => stream.pause(), resume: () => stream.resume() }, redraw);

  $("#talker-detail-close").addEventListener("click", () => select(null));

  function select(addr) {
    const prev = selected;
    selected = addr === selected ? null : addr;
    if (prev && rows.has(prev)) rows.get(prev).button.setAttribute("aria-pressed", "false");
    redraw();
  }

  // connect (re)starts the stream of interface iface ("" for the default).
  function connect(iface) {
    if (stream) stream.stop();
    hist.add([], true);
    const q = new URLSearchParams();
    if (iface) q.set("interface", iface);
    const paused = stream ? stream.paused : false;
    stream = new LM.Stream(q, (evs, replace) => {
      hist.add(evs, replace);
      redraw();
    }, () => {});
    stream.paused = paused;
    stream.start();
  }

  // interfaces shows the selector when the agent monitors more than one;
  // current is the one shown ("": the agent's default, its first).
  async function interfaces(current) {
    try {
      const r = await fetch("api/v1/interfaces");
      if (!r.ok) return;
      const names = (await r.json()).interfaces.map((i) => i.name);
      if (names.length < 2) return;
      const sel = $("#iface");
      sel.replaceChildren(...names.map((n) => el("option", { value: n, selected: n === (current || names[0]) }, n)));
      $("#iface-box").hidden = false;
      sel.addEventListener("change", () => {
        const u = new URL(location.href);
        u.searchParams.set("interface", sel.value);
        history.replaceState(null, "", u);
        connect(sel.value);
      });
    } catch {
      // The stream's own errors say what is wrong.
    }
  }

  function draw() {
    const last = hist.latest();
    if (!last) {
      $("#talkers-empty").hidden = false;
      return false;
    }
    const e = last.d;
    put($("#title"), e.node + " · " + e.interface);
    document.title = "lanmonitor · " + e.node + " · " + e.interface;
    status(e);
    const { evs, from, to } = hist.window(win.seconds);
    const xs = evs.map((x) => x.t);
    const rate = (f) => evs.map((x) => (x.d.elapsedSeconds > 0 ? f(x.d.rates) : null));
    bitsChart.set(xs, [rate((r) => r.bitsPerSecond), rate((r) => r.internalBitsPerSecond), rate((r) => r.externalBitsPerSecond)], from, to);
    packetsChart.set(xs, [rate((r) => r.packetsPerSecond), rate((r) => r.localPacketsPerSecond), rate((r) => r.snoopedPacketsPerSecond)], from, to);
    talkers(e, evs, xs, from, to);
    blocks(e);
    return true;
  }

  function status(e) {
    const t = e.totals, r = e.rates;
    // Attached's message is the mode's reason, shown with the mode.
    put($("#state"), e.state + (e.message && e.message !== e.xdpModeReason ? ": " + e.message : ""), e.state);
    put($("#xdp-mode"), (e.xdpMode || "–") + (e.xdpModeReason ? " (" + e.xdpModeReason + ")" : ""), e.xdpMode);
    put($("#promisc"), e.promiscuous ? "yes" : "no", e.promiscuous);
    const full = t.trackedSourcesCapacity > 0 ? t.trackedSources / t.trackedSourcesCapacity : 0;
    const tracked = $("#tracked");
    put(tracked, count(t.trackedSources) + " of " + count(t.trackedSourcesCapacity) + " (" + (100 * full).toFixed(1) + "%)" +
      (full > 0.9 ? ": over 90% full, the sources idle longest are evicted (" + count(e.evictions) + " so far)" : ""), t.trackedSources);
    tracked.classList.toggle("warn", full > 0.9);
    put($("#rate-bits"), bits(r.bitsPerSecond), r.bitsPerSecond);
    put($("#rate-packets"), pps(r.packetsPerSecond), r.packetsPerSecond);
    put($("#total-packets"), count(t.packets), t.packets);
    put($("#total-bytes"), bytes(t.bytes), t.bytes);
    $("#total-bytes").title = count(t.bytes) + " bytes";
    put($("#dropped"), count(t.dropped) + " (" + pps(r.droppedPacketsPerSecond) + ")", t.dropped);
    put($("#malformed"), count(t.malformed) + " (" + pps(r.malformedPacketsPerSecond) + ")", t.malformed);
    put($("#nonip"), count(t.nonIP) + " (" + pps(r.nonIPPacketsPerSecond) + ")", t.nonIP);
    put($("#last-report"), LM.clock(e.time) + ", every " + e.reportIntervalSeconds + " s");
  }

  // byAddr indexes an event's top talkers (cached on the event).
  const byAddr = (x) => x.byAddr || (x.byAddr = new Map(x.d.topTalkers.map((t) => [t.address, t])));
  const rateOf = (evs, addr) => evs.map((x) => {
    const t = byAddr(x).get(addr);
    return t && x.d.elapsedSeconds > 0 ? t.bitsPerSecond : null;
  });

  function newRow(addr) {
    const button = el("button", { type: "button", class: "addr", "aria-pressed": "false" }, addr);
    const cells = {};
    for (const k of ["kind", "bitsPerSecond", "packetsPerSecond", "packets", "bytes", "localShare"]) {
      cells[k] = el("td", { dataset: { col: k }, class: k === "kind" ? "" : "num" });
    }
    const sparkCell = el("td", { dataset: { col: "history" }, class: "spark" });
    const row = el("tr", { dataset: { addr }, onclick: () => select(addr) }, el("th", { scope: "row" }, button), ...Object.values(cells), sparkCell);
    const r = { row, cells, button, spark: new LM.Sparkline(sparkCell) };
    rows.set(addr, r);
    return r;
  }

  function talkers(e, evs, xs, from, to) {
    const all = e.topTalkers.map((t) => ({ ...t, kind: t.internal ? "internal" : "external", localShare: t.packets ? t.localPackets / t.packets : 0 }));
    const shown = LM.sortRows(filter.apply(all), order);
    const tb = $("#talkers tbody");
    const keep = new Set();
    shown.forEach((t, i) => {
      const r = rows.get(t.address) || newRow(t.address);
      keep.add(t.address);
      put(r.cells.kind, t.kind);
      put(r.cells.bitsPerSecond, bits(t.bitsPerSecond), t.bitsPerSecond);
      put(r.cells.packetsPerSecond, pps(t.packetsPerSecond), t.packetsPerSecond);
      put(r.cells.packets, count(t.packets), t.packets);
      put(r.cells.bytes, bytes(t.bytes), t.bytes);
      r.cells.bytes.title = count(t.bytes) + " bytes";
      put(r.cells.localShare, share(t.localPackets, t.snoopedPackets) + " / " + share(t.snoopedPackets, t.localPackets), t.localShare);
      r.button.setAttribute("aria-pressed", String(t.address === selected));
      r.spark.set(xs, rateOf(evs, t.address), from, to);
      // Move only rows out of place, so that a focused button keeps focus.
      if (tb.children[i] !== r.row) tb.insertBefore(r.row, tb.children[i] || null);
    });
    for (const [addr, r] of rows) {
      if (keep.has(addr)) continue;
      r.spark.destroy();
      r.row.remove();
      rows.delete(addr);
    }
    filter.report(shown.length, all.length);
    $("#talkers-empty").hidden = all.length > 0;
    detail(evs, xs, from, to);
  }

  function detail(evs, xs, from, to) {
    const box = $("#talker-detail");
    box.hidden = !selected;
    if (!selected) return;
    if (!talkerChart) talkerChart = new LM.Chart($("#chart-talker"), [{ label: "bits/s", color: "--c1" }], bits, 160);
    put($("#talker-detail-title"), "Rate history of " + selected);
    talkerChart.set(xs, [rateOf(evs, selected)], from, to);
  }

  function blocks(e) {
    const tb = $("#blocks tbody");
    tb.replaceChildren(...e.rules.map((b) => {
      const cidrs = td("cidrCount", count(b.cidrCount), b.cidrCount);
      cidrs.title = b.cidrs.join(", ") + (b.cidrCount > b.cidrs.length ? ", …" : "");
      return el("tr", { dataset: { block: b.name } },
        el("th", { scope: "row" }, b.name),
        td("mode", b.mode), td("direction", b.direction), cidrs,
        td("matched", count(b.matchedPackets), b.matchedPackets),
        td("matchedRate", pps(b.matchedPacketsPerSecond), b.matchedPacketsPerSecond),
        td("dropped", count(b.droppedPackets), b.droppedPackets),
        td("droppedRate", pps(b.droppedPacketsPerSecond), b.droppedPacketsPerSecond),
        td("exempted", b.exemptedAddresses.length ? b.exemptedAddresses.join(", ") : "none"));
    }));
    $("#blocks-empty").hidden = e.rules.length > 0;
  }

  // The history is asked for at once (the page preloads it), the
  // interfaces meanwhile.
  const want = new URLSearchParams(location.search).get("interface") || "";
  connect(want);
  interfaces(want);
})();
