// The jobs page: one row per job, updated in place from the farm's stream.
"use strict";
(() => {
  const tbody = document.querySelector("#jobs tbody");
  const rows = new Map(); // job id → { tr, cells, job, rate }

  function act(id, what, body) {
    const url = "/api/jobs/" + encodeURIComponent(id) + (what === "delete" ? "" : "/" + what);
    ff.api(what === "delete" ? "DELETE" : "POST", url, body).then(() => ff.showError(null), ff.showError);
  }

  function row(id) {
    let r = rows.get(id);
    if (r) return r;
    const c = {};
    const td = (k, cls) => (c[k] = ff.el("td", cls ? { class: cls } : {}));
    const tr = ff.el("tr", { "data-job": id },
      td("name"), td("state"), td("priority"), td("progress", "wide"), td("frames"), td("fps"), td("eta"),
      td("submitted"), td("finished"), td("size"), td("actions", "actions"));
    c.link = ff.el("a", { href: "/jobs/" + encodeURIComponent(id) });
    c.name.append(c.link);
    c.stateSpan = ff.el("span", { class: "state" });
    c.state.append(c.stateSpan);
    c.prio = ff.el("span");
    c.priority.append(
      ff.el("button", { title: "lower priority", "data-act": "down", onclick: () => act(id, "priority", { priority: r.job.priority - 1 }) }, "−"), " ",
      c.prio, " ",
      ff.el("button", { title: "raise priority", "data-act": "up", onclick: () => act(id, "priority", { priority: r.job.priority + 1 }) }, "+"));
    c.bar = ff.el("div");
    c.barBox = ff.el("div", { class: "bar" }, c.bar);
    c.progress.append(c.barBox);
    c.btn = {
      cancel: ff.el("button", { "data-act": "cancel", onclick: () => act(id, "cancel") }, "Cancel"),
      reset: ff.el("button", { "data-act": "reset", onclick: () => act(id, "reset") }, "Reset"),
      delete: ff.el("button", { "data-act": "delete", onclick: () => { if (confirm("Delete job " + r.job.name + " and its files?")) act(id, "delete"); } }, "Delete"),
      download: ff.el("a", { href: "/api/jobs/" + encodeURIComponent(id) + "/video?download=1", "data-act": "download" }, "Download"),
    };
    c.actions.append(c.btn.cancel, c.btn.reset, c.btn.delete, c.btn.download);
    r = { tr, c, job: null, rate: new ff.Rate() };
    rows.set(id, r);
    return r;
  }

  function draw(r) {
    const j = r.job, c = r.c;
    c.link.textContent = j.name || j.job_id;
    c.link.title = j.job_id + " · " + j.frames_dir;
    c.stateSpan.textContent = j.state;
    c.stateSpan.className = "state " + j.state;
    c.stateSpan.title = j.reason || "";
    c.prio.textContent = j.priority;
    const total = j.frames_total || 1;
    c.bar.style.width = (100 * j.frames_done / total).toFixed(1) + "%";
    c.barBox.className = "bar " + (j.state === "done" ? "done" : j.state === "failed" ? "failed" : "");
    c.frames.textContent = j.frames_done + " / " + j.frames_total + " (" + j.sets_done + "/" + j.sets_total + " sets)";
    const finished = ["done", "failed", "cancelled"].includes(j.state);
    const fps = r.rate.fps();
    c.fps.textContent = !finished && fps > 0 ? fps.toFixed(1) : "";
    c.eta.textContent = !finished && fps > 0 ? ff.duration((j.frames_total - j.frames_done) / fps) : "";
    c.submitted.textContent = ff.time(j.submitted_unix_ms);
    c.finished.textContent = ff.time(j.finished_unix_ms);
    c.size.textContent = ff.bytes(j.final_size) + (j.container ? " " + j.codec + "/" + j.container : "");
    c.btn.cancel.hidden = finished;
    c.btn.reset.hidden = !(j.state === "failed" || j.state === "cancelled");
    c.btn.delete.hidden = !finished;
    c.btn.download.hidden = j.state !== "done";
  }

  function order(ids) {
    for (const id of ids) tbody.append(rows.get(id).tr);
  }

  ff.stream("", (m) => {
    for (const j of m.jobs || []) {
      const r = row(j.job_id);
      r.job = j;
      r.rate.add(j.frames_done);
      draw(r);
    }
    for (const id of m.removed || []) { rows.get(id)?.tr.remove(); rows.delete(id); }
    if (m.order) order(m.order);
    document.getElementById("empty").hidden = rows.size > 0;
  });

  // fps and ETA age even when no frame is done.
  setInterval(() => { for (const r of rows.values()) if (r.job && r.job.state === "running") { r.rate.add(r.job.frames_done); draw(r); } }, 2000);
})();
