// The job page: the sets as a canvas grid (one cell per set, only changed
// cells redrawn, once per animation frame), the set under the pointer or
// clicked in detail with its thumbnail, the job's nodes, settings and live
// event log, and the final video once done. Everything comes from the
// job's stream: the first "state" holds all, later ones what changed.
"use strict";
(() => {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const api = "/api/jobs/" + encodeURIComponent(id);
  const $ = (s) => document.getElementById(s);
  const canvas = $("grid"), ctx = canvas.getContext("2d", { alpha: false });
  const css = getComputedStyle(document.documentElement);
  const colour = { A: css.getPropertyValue("--a").trim(), B: css.getPropertyValue("--b").trim(), C: css.getPropertyValue("--c").trim(), F: css.getPropertyValue("--f").trim() };
  const sets = [];
  const dirty = new Set();
  let job = null, selected = -1, layout = null, frame = 0, all = true;
  const rate = new ff.Rate();
  const nodeRows = new Map();

  // Layout: cells as large as the set count allows, in rows that fill the
  // canvas's width.
  function place() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const n = Math.max(sets.length, 1);
    const cell = n <= 64 ? 28 : n <= 300 ? 18 : n <= 1200 ? 12 : 7;
    const gap = cell > 10 ? 2 : 1;
    const cols = Math.max(1, Math.floor((w + gap) / (cell + gap)));
    const h = Math.ceil(n / cols) * (cell + gap);
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    canvas.style.height = h + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    layout = { cell, gap, cols };
    // Where the cells are, for tests that read the grid's pixels.
    canvas.dataset.layout = cell + " " + gap + " " + cols + " " + sets.length;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    all = true;
  }

  function drawCell(i) {
    const s = sets[i];
    if (!s) return;
    const { cell, gap, cols } = layout;
    const x = (i % cols) * (cell + gap), y = Math.floor(i / cols) * (cell + gap);
    ctx.fillStyle = colour[s.state] || colour.A;
    if (s.state === "B") {
      // Rendering: the part done fills the cell from the bottom.
      ctx.fillStyle = colour.A;
      ctx.fillRect(x, y, cell, cell);
      const done = s.frame_count ? s.frames_done / s.frame_count : 0;
      ctx.fillStyle = colour.B;
      const h = Math.max(2, Math.round(cell * done));
      ctx.fillRect(x, y + cell - h, cell, h);
      ctx.fillRect(x, y, cell, 2);
    } else {
      ctx.fillRect(x, y, cell, cell);
    }
    if (i === selected) {
      ctx.strokeStyle = "#111";
      ctx.lineWidth = 2;
      ctx.strokeRect(x + 1, y + 1, cell - 2, cell - 2);
    }
  }

  function flush() {
    frame = 0;
    performance.mark("grid-draw-start");
    if (!layout || all) place();
    if (all) { for (let i = 0; i < sets.length; i++) drawCell(i); all = false; }
    else for (const i of dirty) drawCell(i);
    dirty.clear();
    performance.measure("grid-draw", "grid-draw-start");
  }

  function redraw(i) {
    if (i === undefined) all = true; else dirty.add(i);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function at(ev) {
    if (!layout) return -1;
    const r = canvas.getBoundingClientRect();
    const x = ev.clientX - r.left, y = ev.clientY - r.top;
    const col = Math.floor(x / (layout.cell + layout.gap)), row = Math.floor(y / (layout.cell + layout.gap));
    if (col >= layout.cols) return -1;
    const i = row * layout.cols + col;
    return i < sets.length ? i : -1;
  }

  function describe(s) {
    const rows = [
      ["Set", s.index + " (" + s.state + ")"],
      ["Frames", s.first_frame + "–" + s.last_frame + " (" + s.frame_count + ")"],
      ["Node", s.node || "—"],
      ["Progress", s.state === "C" ? "done" : s.frames_done + " / " + s.frame_count],
      ["Encode time", Number(s.encode_ms) ? (Number(s.encode_ms) / 1000).toFixed(2) + " s" : "—"],
      ["Part size", ff.bytes(s.part_size) || "—"],
      ["Failures", String(s.failures)],
      ["Last error", s.last_error || "—"],
    ];
    const dl = $("setinfo");
    dl.replaceChildren(...rows.flatMap(([k, v]) => [ff.el("dt", {}, k), ff.el("dd", {}, v)]));
  }

  function select(i) {
    const prev = selected;
    selected = i;
    if (prev >= 0) redraw(prev);
    if (i < 0) { $("set").hidden = true; return; }
    redraw(i);
    $("set").hidden = false;
    describe(sets[i]);
    $("thumb").src = api + "/sets/" + i + "/thumbnail";
  }

  canvas.addEventListener("click", (ev) => select(at(ev)));
  canvas.addEventListener("mousemove", (ev) => {
    const i = at(ev), s = sets[i];
    canvas.title = s ? "set " + i + ": " + s.state + ", frames " + s.first_frame + "–" + s.last_frame + (s.node ? ", " + s.node : "") : "";
  });
  new ResizeObserver(() => redraw()).observe(canvas);

  function act(what, method, body) {
    ff.api(method || "POST", api + (what ? "/" + what : ""), body).then((r) => { ff.showError(null); if (method === "DELETE") location.href = "/"; }, ff.showError);
  }
  const buttons = {
    cancel: ff.el("button", { "data-act": "cancel", onclick: () => act("cancel") }, "Cancel"),
    reset: ff.el("button", { "data-act": "reset", onclick: () => act("reset") }, "Reset"),
    down: ff.el("button", { "data-act": "down", title: "lower priority", onclick: () => act("priority", "POST", { priority: job.priority - 1 }) }, "Priority −"),
    up: ff.el("button", { "data-act": "up", title: "raise priority", onclick: () => act("priority", "POST", { priority: job.priority + 1 }) }, "Priority +"),
    delete: ff.el("button", { "data-act": "delete", onclick: () => { if (confirm("Delete this job and its files?")) act("", "DELETE"); } }, "Delete"),
  };
  $("actions").append(...Object.values(buttons));

  function drawJob() {
    const j = job;
    document.title = (j.name || j.job_id) + " · framefarm";
    $("name").textContent = j.name || j.job_id;
    $("state").textContent = j.state;
    $("state").className = "state " + j.state;
    $("reason").textContent = j.reason;
    $("reason").hidden = !j.reason;
    const finished = ["done", "failed", "cancelled"].includes(j.state);
    buttons.cancel.hidden = finished;
    buttons.reset.hidden = !(j.state === "failed" || j.state === "cancelled");
    buttons.delete.hidden = !finished;
    if (j.state === "done" && $("player").hidden) {
      $("player").hidden = false;
      $("video").src = api + "/video";
      $("download").href = api + "/video?download=1";
      $("size").textContent = ff.bytes(j.final_size);
    }
    const st = j.settings || {};
    const fps = st.fps_den && st.fps_den !== "1" ? st.fps_num + "/" + st.fps_den : st.fps_num;
    const rows = [["Job", j.job_id], ["Frames", j.frames_dir], ["Codec", st.codec], ["fps", fps], ["CRF", st.crf < 0 ? "default" : st.crf],
      ["Preset", st.preset || "default"], ["Pixel format", st.pix_fmt], ["Size", st.width + "×" + st.height + (st.pad_even ? " (padded to even)" : "")],
      ["Colour", st.color ? st.color + " " + st.color_range : "untagged (a job from before colour settings)"],
      ["OpenEXR frames", st.exr_transfer || "—"], ["Alpha", st.alpha || "drop"],
      ["Parts", st.part_ext], ["Priority", j.priority], ["Submitted", ff.time(j.submitted_unix_ms)], ["Finished", ff.time(j.finished_unix_ms) || "—"],
      ["Output", j.out_path || "—"], ["SHA-256", j.final_sha256 || "—"]];
    $("settings").replaceChildren(...rows.flatMap(([k, v]) => [ff.el("dt", {}, k), ff.el("dd", {}, String(v))]));
  }

  function progress() {
    let done = 0, total = 0;
    for (const s of sets) { done += s.state === "C" ? s.frame_count : s.frames_done; total += s.frame_count; }
    rate.add(done);
    const fps = rate.fps();
    const finished = job && ["done", "failed", "cancelled"].includes(job.state);
    $("bar").style.width = (total ? (100 * done) / total : 0).toFixed(1) + "%";
    $("bar").parentElement.className = "bar wide " + (job && job.state === "done" ? "done" : job && job.state === "failed" ? "failed" : "");
    const c = sets.filter((s) => s.state === "C").length;
    $("frames").textContent = done + " / " + total + " frames, " + c + " / " + sets.length + " sets";
    $("fps").textContent = !finished && fps > 0 ? fps.toFixed(1) + " fps" : "";
    $("eta").textContent = !finished && fps > 0 ? "about " + ff.duration((total - done) / fps) + " left" : "";
  }

  function drawNode(n) {
    let r = nodeRows.get(n.name);
    if (!r) {
      r = ff.el("tr", { "data-node": n.name });
      nodeRows.set(n.name, r);
      const tb = document.querySelector("#nodes tbody");
      const after = [...nodeRows.keys()].sort().indexOf(n.name);
      tb.insertBefore(r, tb.children[after] || null);
    }
    const b = n.breaker || {};
    r.replaceChildren(...[n.name, ff.ago(n.last_seen_unix_ms), Number(n.cpu_load).toFixed(2), Number(n.free_cores).toFixed(1), n.sets_done,
      n.failures, n.excluded ? "yes" : "no", b.state ? b.state + (b.opens ? " (opened " + b.opens + "×)" : "") : "—"].map((v) => ff.el("td", {}, String(v))));
  }

  // Events arrive by the hundred a second on a busy farm: they are added
  // once per animation frame, with one layout and one scroll.
  const log = $("log");
  let pending = [], logFrame = 0;
  function flushLog() {
    logFrame = 0;
    const frag = document.createDocumentFragment();
    for (const e of pending.slice(-500)) {
      const where = e.set_index >= 0 ? "set " + e.set_index + " " : "";
      frag.append(ff.el("li", {}, new Date(Number(e.unix_ms)).toLocaleTimeString() + " " + e.kind + " " + where + (e.node ? "[" + e.node + "] " : "") + e.detail));
    }
    pending = [];
    log.append(frag);
    for (let extra = log.children.length - 500; extra > 0; extra--) log.firstChild.remove();
    log.scrollTop = log.scrollHeight;
  }
  function addEvent(e) {
    pending.push(e);
    if (!logFrame) logFrame = requestAnimationFrame(flushLog);
  }

  ff.stream("?job=" + encodeURIComponent(id) + "&tail=200", (m) => {
    performance.mark("state-start");
    if (m.job) { job = m.job; drawJob(); }
    const grew = m.sets && m.sets.some((s) => s.index >= sets.length);
    for (const s of m.sets || []) {
      sets[s.index] = s;
      if (!grew) redraw(s.index);
      if (s.index === selected) describe(s);
    }
    if (grew) redraw();
    for (const n of m.nodes || []) drawNode(n);
    progress();
    performance.measure("state-apply", "state-start");
  }, addEvent, (e) => { ff.showError(e.error); });
})();
