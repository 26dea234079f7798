// cluster.js: the controller's dashboard. Its events (GET api/v1/events)
// are the cluster roll-up (ClusterEvent, controllers/dashboard.go):
//   time (RFC 3339)
//   nodes[{node, attached, xdpMode, rates{bitsPerSecond, packetsPerSecond},
//     topTalker, trackedSources, capacity, lastReportAgeSeconds}]
//   totals{bitsPerSecond, packetsPerSecond, droppedPackets}
//   topTalkers[{address, internal, bitsPerSecond, packetsPerSecond,
//     packets, bytes, node (the node that saw the most of it)}]
//   ipBlocks[{name, mode, enforced, cidrCount, droppedPackets,
//     perNode[{node, enforced, generation, droppedPackets}]}]
//   lanMonitors[{name, conditions[{type, status, reason, message}]}]
// Rates are bits and packets per second, counters packets and bytes.
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
  // A node's top talker: an address, or {address, bitsPerSecond}.
  const talker = (t) => (!t ? "–" : typeof t === "string" ? t : t.address + (t.bitsPerSecond != null ? " (" + bits(t.bitsPerSecond) + ")" : ""));
  // An IPBlock's enforcement: a number of nodes (of those listed per
  // node), or yes/no.
  const enforced = (b) => (typeof b.enforced === "number" ? count(b.enforced) + " of " + count((b.perNode || []).length) : yesNo(b.enforced));

  function draw() {
    const last = hist.latest();
    if (!last) {
      $("#talkers-empty").hidden = false;
      return false;
    }
    const e = last.d, t = e.totals || {};
    const nodes = e.nodes || [];
    const attached = nodes.filter((n) => n.attached).length;
    const ready = $("#nodes-ready");
    put(ready, count(attached) + " of " + count(nodes.length), attached);
    ready.classList.toggle("warn", attached < nodes.length);
    put($("#rate-bits"), bits(t.bitsPerSecond), t.bitsPerSecond);
    put($("#rate-packets"), pps(t.packetsPerSecond), t.packetsPerSecond);
    const blocks = e.ipBlocks || [];
    const dropped = t.droppedPackets != null ? t.droppedPackets : blocks.reduce((s, b) => s + (b.droppedPackets || 0), 0);
    put($("#dropped"), count(dropped), dropped);
    const tracked = nodes.reduce((s, n) => s + (n.trackedSources || 0), 0);
    put($("#tracked"), count(tracked) + " on " + count(nodes.length) + " nodes", tracked);
    put($("#last-report"), LM.clock(e.time));

    const { evs, from, to } = hist.window(win.seconds);
    const xs = evs.map((x) => x.t);
    bitsChart.set(xs, [evs.map((x) => (x.d.totals || {}).bitsPerSecond)], from, to);
    packetsChart.set(xs, [evs.map((x) => (x.d.totals || {}).packetsPerSecond)], from, to);

    const all = (e.topTalkers || []).map((x) => ({ ...x, kind: x.internal ? "internal" : "external" }));
    const shown = LM.sortRows(filter.apply(all), order);
    $("#talkers tbody").replaceChildren(...shown.map((x) => row({ addr: x.address }, x.address,
      td("kind", x.kind), td("bitsPerSecond", bits(x.bitsPerSecond), x.bitsPerSecond),
      td("packetsPerSecond", pps(x.packetsPerSecond), x.packetsPerSecond),
      td("packets", count(x.packets), x.packets), td("bytes", bytes(x.bytes), x.bytes), td("node", x.node || "–"))));
    filter.report(shown.length, all.length);
    $("#talkers-empty").hidden = all.length > 0;

    $("#nodes tbody").replaceChildren(...nodes.map((n) => {
      const r = n.rates || {};
      const full = n.capacity > 0 ? n.trackedSources / n.capacity : 0;
      const src = td("trackedSources", count(n.trackedSources) + " of " + count(n.capacity) + (full > 0.9 ? " (over 90%)" : ""), n.trackedSources);
      src.classList.toggle("warn", full > 0.9);
      const tr = row({ node: n.node }, n.node, td("attached", yesNo(n.attached)), td("xdpMode", n.xdpMode || "–"),
        td("bitsPerSecond", bits(r.bitsPerSecond), r.bitsPerSecond), td("packetsPerSecond", pps(r.packetsPerSecond), r.packetsPerSecond),
        td("topTalker", talker(n.topTalker)), src, td("lastReport", LM.age(n.lastReportAgeSeconds) + " ago", n.lastReportAgeSeconds));
      tr.classList.toggle("warn", !n.attached);
      return tr;
    }));
    $("#nodes-empty").hidden = nodes.length > 0;

    $("#blocks tbody").replaceChildren(...blocks.map((b) => row({ block: b.name }, b.name,
      td("mode", b.mode), td("cidrCount", count(b.cidrCount), b.cidrCount),
      td("enforced", enforced(b), b.enforced), td("droppedPackets", count(b.droppedPackets), b.droppedPackets))));
    $("#blocks-empty").hidden = blocks.length > 0;
    $("#enforcement tbody").replaceChildren(...blocks.flatMap((b) => (b.perNode || []).map((p) => {
      const r = row({ block: b.name, node: p.node }, b.name, td("node", p.node), td("enforced", yesNo(p.enforced)),
        td("generation", String(p.generation), p.generation), td("droppedPackets", count(p.droppedPackets), p.droppedPackets));
      r.classList.toggle("warn", !p.enforced);
      return r;
    })));

    const monitors = e.lanMonitors || [];
    $("#monitors tbody").replaceChildren(...monitors.map((m) => row({ monitor: m.name }, m.name,
      el("td", { dataset: { col: "conditions" } }, conditions(m.conditions)))));
    $("#monitors-empty").hidden = monitors.length > 0;
    return true;
  }

  stream.start();
})();
