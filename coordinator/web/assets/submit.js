// The submit page: frames from a folder, several files or one archive,
// the encode settings, an upload with a progress bar, and the farm's named
// errors shown beside the field or file they concern.
"use strict";
(() => {
  const $ = (s) => document.getElementById(s);
  const form = $("form");
  const pickers = [$("folder"), $("files"), $("archive")];
  let frames = [];

  function chosen(input) {
    for (const p of pickers) if (p !== input) p.value = "";
    frames = [...input.files];
    if (input === $("folder")) {
      // Only the folder's own files: frames are one folder's images.
      frames = frames.filter((f) => (f.webkitRelativePath || f.name).split("/").length <= 2 && !f.name.startsWith("."));
      const top = (input.files[0]?.webkitRelativePath || "").split("/")[0];
      if (top && !form.elements.name.value) form.elements.name.placeholder = top;
    }
    const total = frames.reduce((n, f) => n + f.size, 0);
    $("chosen").textContent = frames.length ? frames.length + " file(s), " + ff.bytes(total) : "";
    clearErrors();
  }
  for (const p of pickers) p.addEventListener("change", () => chosen(p));

  function clearErrors() {
    for (const p of document.querySelectorAll(".field-error[data-for]")) p.textContent = "";
    $("bad-files").replaceChildren();
    ff.showError(null);
  }

  function show(err) {
    const body = err.body || {};
    const field = body.field && document.querySelector('.field-error[data-for="' + body.field + '"]');
    if (field) field.textContent = body.error;
    else ff.showError(err);
    for (const f of body.files || []) $("bad-files").append(ff.el("li", {}, f));
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    if (!frames.length) { show({ body: { field: "frames", error: "choose a folder of numbered images, several images, or one .zip or .tar" } }); return; }
    const data = new FormData();
    for (const el of form.elements) {
      if (el.name && el.type !== "file") data.append(el.name, el.value);
    }
    if (!data.get("name")) data.set("name", form.elements.name.placeholder === "the folder's name" ? "" : form.elements.name.placeholder);
    if ($("audio").files[0]) data.append("audio", $("audio").files[0]);
    for (const f of frames) data.append("frames", f, f.name);
    const csrf = await ff.session();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/jobs");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    const bar = $("progress");
    bar.hidden = false;
    bar.value = 0;
    $("go").disabled = true;
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) { bar.value = e.loaded / e.total; $("percent").textContent = Math.floor(100 * e.loaded / e.total) + "%"; }
    });
    xhr.addEventListener("loadend", () => {
      $("go").disabled = false;
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = { error: xhr.responseText || "the upload failed: " + (xhr.statusText || "connection lost") }; }
      if (xhr.status === 200) { location.href = "/jobs/" + encodeURIComponent(body.job_id); return; }
      bar.hidden = true;
      $("percent").textContent = "";
      show({ message: body.error, body });
    });
    xhr.send(data);
  });
})();
