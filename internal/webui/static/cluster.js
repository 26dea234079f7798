// cluster.js: the controller's dashboard. Its events (GET api/v1/events)
// are the cluster roll-up:
//   time (RFC 3339)
//   nodes[{name, monitor, interface, attached, state, xdpMode,
//     bitsPerSecond, packetsPerSecond, topTalker, topTalkerBitsPerSecond,
//     trackedSources, trackedSourcesCapacity, lastReport,
//     lastReportAgeSeconds}]
//   totals{nodes, nodesReady, bitsPerSecond, packetsPerSecond, packets,
//     bytes, droppedPackets, malformedPackets, nonIPPackets, trackedSources}
//   topTalkers[{address, internal, packets, bytes, bitsPerSecond,
//     packetsPerSecond, node}]
//   ipBlocks[{name, mode, direction, cidrCount, expiresAt (optional),
//     conditions[{type, status, reason, message}], nodes{desired, enforced},
//     matchedPackets, droppedPackets,
//     perNode[{node, enforced, generation, matchedPackets, droppedPackets}]}]
//   lanMonitors[{name, interface, nodes{desired, ready},
//     conditions[{type, status, reason, message}]}]
"use strict";

(() => {
  const { $, el, put, td, bits, bytes, count, pps } = LM;
  const hist = new LM.History();
  const redraw = LM.renderer(draw);
  const bitsChart = new LM.Chart($("#chart-bits"), [{ label: "cluster", color: "--c1" }], bits);
  const packetsChart = new LM.Chart($("#chart-packets"), [{ label: "cluster", color: "--c1" }], pps);
  const order = LM.sortable($("#talkers"), redraw);
  const filter = LM.filterBox(redraw);
  const stream = new LM.Stream(new URLSearchParams(), (evs, replace) => {
    hist.add(evs, replace);
    redraw();
  }, () => {});
  const win = LM.controls(stream, redraw);

  const yesNo = (b) => (b ? "yes" : "no");
  const conditions = (cs) => el("ul", { class: "conds" }, ...(cs || []).map((c) =>
    el("li", { class: c.status === "True" ? "ok" : "warn", dataset: { type: c.type, status: c.status } },
      c.type + ": " + c.status + (c.reason ? " (" + c.reason + ")" : "") + (c.message ? " " + c.message : ""))));
  const row = (key, name, ...cells) => el("tr", { dataset: key }, el("th", { scope: "row" }, name), ...cells);

  function draw() {
    const last = hist.latest();
    if (!last) {
      $("#talkers-empty").hidden = false;
      return;
    }
    const e = last.d, t = e.totals;
    const ready = $("#nodes-ready");
    put(ready, count(t.nodesReady) + " of " + count(t.nodes), t.nodesReady);
    ready.classList.toggle("warn", t.nodesReady < t.nodes);
    put($("#rate-bits"), bits(t.bitsPerSecond), t.bitsPerSecond);
    put($("#rate-packets"), pps(t.packetsPerSecond), t.packetsPerSecond);
    put($("#total-packets"), count(t.packets), t.packets);
    put($("#total-bytes"), bytes(t.bytes), t.bytes);
    $("#total-bytes").title = count(t.bytes) + " bytes";
    put($("#dropped"), count(t.droppedPackets), t.droppedPackets);
    put($("#malformed"), count(t.malformedPackets), t.malformedPackets);
    put($("#nonip"), count(t.nonIPPackets), t.nonIPPackets);
    put($("#tracked"), count(t.trackedSources), t.trackedSources);
    put($("#last-report"), LM.clock(e.time));

    const { evs, from, to } = hist.window(win.seconds);
    const xs = evs.map((x) => x.t);
    bitsChart.set(xs, [evs.map((x) => x.d.totals.bitsPerSecond)], from, to);
    packetsChart.set(xs, [evs.map((x) => x.d.totals.packetsPerSecond)], from, to);

    const all = (e.topTalkers || []).map((x) => ({ ...x, kind: x.internal ? "internal" : "external" }));
    const shown = LM.sortRows(filter.apply(all), order);
    $("#talkers tbody").replaceChildren(...shown.map((x) => row({ addr: x.address }, x.address,
      td("kind", x.kind), td("bitsPerSecond", bits(x.bitsPerSecond), x.bitsPerSecond),
      td("packetsPerSecond", pps(x.packetsPerSecond), x.packetsPerSecond),
      td("packets", count(x.packets), x.packets), td("bytes", bytes(x.bytes), x.bytes), td("node", x.node))));
    filter.report(shown.length, all.length);
    $("#talkers-empty").hidden = all.length > 0;

    $("#nodes tbody").replaceChildren(...(e.nodes || []).map((n) => {
      const full = n.trackedSourcesCapacity > 0 ? n.trackedSources / n.trackedSourcesCapacity : 0;
      const tracked = td("tracked", count(n.trackedSources) + " of " + count(n.trackedSourcesCapacity), n.trackedSources);
      tracked.classList.toggle("warn", full > 0.9);
      const reported = td("lastReport", LM.age(n.lastReportAgeSeconds) + " ago", n.lastReportAgeSeconds);
      reported.title = n.lastReport;
      const r = row({ node: n.name }, n.name, td("monitor", n.monitor), td("interface", n.interface),
        td("attached", yesNo(n.attached) + (n.state ? " (" + n.state + ")" : "")), td("xdpMode", n.xdpMode || "–"),
        td("bitsPerSecond", bits(n.bitsPerSecond), n.bitsPerSecond), td("packetsPerSecond", pps(n.packetsPerSecond), n.packetsPerSecond),
        td("topTalker", n.topTalker ? n.topTalker + " (" + bits(n.topTalkerBitsPerSecond) + ")" : "–"), tracked, reported);
      r.classList.toggle("warn", !n.attached);
      return r;
    }));

    const blocks = e.ipBlocks || [];
    $("#blocks tbody").replaceChildren(...blocks.map((b) => row({ block: b.name }, b.name,
      td("mode", b.mode), td("direction", b.direction), td("cidrCount", count(b.cidrCount), b.cidrCount),
      td("enforced", count(b.nodes.enforced) + " of " + count(b.nodes.desired), b.nodes.enforced),
      td("matched", count(b.matchedPackets), b.matchedPackets), td("dropped", count(b.droppedPackets), b.droppedPackets),
      td("expiresAt", b.expiresAt ? new Date(b.expiresAt).toLocaleString([], { hour12: false }) : "never"),
      el("td", { dataset: { col: "conditions" } }, conditions(b.conditions)))));
    $("#blocks-empty").hidden = blocks.length > 0;
    $("#enforcement tbody").replaceChildren(...blocks.flatMap((b) => (b.perNode || []).map((p) => {
      const r = row({ block: b.name, node: p.node }, b.name, td("node", p.node), td("enforced", yesNo(p.enforced)),
        td("generation", String(p.generation), p.generation), td("matched", count(p.matchedPackets), p.matchedPackets),
        td("dropped", count(p.droppedPackets), p.droppedPackets));
      r.classList.toggle("warn", !p.enforced);
      return r;
    })));

    const monitors = e.lanMonitors || [];
    $("#monitors tbody").replaceChildren(...monitors.map((m) => row({ monitor: m.name }, m.name,
      td("interface", m.interface || "default route"), td("ready", count(m.nodes.ready) + " of " + count(m.nodes.desired), m.nodes.ready),
      el("td", { dataset: { col: "conditions" } }, conditions(m.conditions)))));
    $("#monitors-empty").hidden = monitors.length > 0;
  }

  stream.start();
})();
