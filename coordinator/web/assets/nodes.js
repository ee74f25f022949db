// The nodes page: one row per node, updated in place from the farm's stream.
"use strict";
(() => {
  const tbody = document.querySelector("#nodes tbody");
  const rows = new Map(); // name → { tr, node }

  function draw(r) {
    const n = r.node, b = n.breaker || {};
    const list = (xs) => (xs && xs.length ? xs.join(" ") : "—");
    r.tr.replaceChildren(...[n.name, ff.ago(n.last_seen_unix_ms), Number(n.cpu_load).toFixed(2), Number(n.free_cores).toFixed(1), n.sets_done || 0,
      n.slots || "—", list(n.working_on), n.failures || 0, list(n.excluded_from), n.problem || "—",
      b.state || "—", b.opens || 0, Number(b.last_opened_unix_ms) ? ff.time(b.last_opened_unix_ms) : "—", b.total_failures || 0]
      .map((v) => ff.el("td", {}, String(v))));
  }

  ff.stream("", (m) => {
    for (const n of m.nodes || []) {
      let r = rows.get(n.name);
      if (!r) {
        r = { tr: ff.el("tr", { "data-node": n.name }), node: n };
        rows.set(n.name, r);
        const names = [...rows.keys()].sort();
        tbody.insertBefore(r.tr, rows.get(names[names.indexOf(n.name) + 1])?.tr || null);
      }
      r.node = n;
      draw(r);
    }
    if (m.waiting !== undefined && m.waiting !== null) document.getElementById("waiting").textContent = m.waiting + " waiting for work";
    document.getElementById("empty").hidden = rows.size > 0;
  });

  // "Last seen" ages between messages.
  setInterval(() => { for (const r of rows.values()) draw(r); }, 5000);
})();
