// Shared by every page: the API with its CSRF header, the live stream, and
// formatting. No framework: the pages are small and update by element.
"use strict";

const ff = (() => {
  let csrf = null;

  async function session() {
    if (csrf === null) {
      const r = await fetch("/api/session", { credentials: "same-origin" });
      if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("signed out"); }
      const s = await r.json();
      csrf = s.csrf;
      document.getElementById("signout").hidden = !s.token_required;
    }
    return csrf;
  }

  // api calls the JSON API; a refusal throws an Error with the answer's
  // message and its .body (field, files).
  async function api(method, url, body) {
    const headers = { "X-CSRF-Token": await session() };
    let payload;
    if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    const r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    const text = await r.text();
    let data = {};
    try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { error: text }; }
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    if (!r.ok) { const e = new Error(data.error || r.statusText); e.body = data; throw e; }
    return data;
  }

  // stream follows /api/events: onState gets each "state" message,
  // onEvent each event. The browser reconnects by itself, resuming after
  // the last event it saw.
  function stream(query, onState, onEvent, onGone) {
    const live = document.getElementById("live");
    const es = new EventSource("/api/events" + query);
    es.addEventListener("open", () => { live.textContent = "● live"; live.classList.add("on"); });
    es.addEventListener("error", () => { live.textContent = "○ reconnecting"; live.classList.remove("on"); });
    es.addEventListener("state", (m) => onState(JSON.parse(m.data)));
    es.addEventListener("event", (m) => onEvent && onEvent(JSON.parse(m.data)));
    es.addEventListener("gone", (m) => { es.close(); onGone && onGone(JSON.parse(m.data)); });
    return es;
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }

  function bytes(n) {
    n = Number(n);
    if (!n) return "";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }

  function duration(s) {
    if (!isFinite(s) || s < 0) return "";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
  }

  function time(ms) {
    ms = Number(ms);
    if (!ms) return "";
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function ago(ms) {
    ms = Number(ms);
    if (!ms) return "never";
    return duration((Date.now() - ms) / 1000) + " ago";
  }

  // Rate measures frames per second from the frames done seen over the
  // last 30 seconds: the farm's measured encode rate, not a guess.
  class Rate {
    constructor() { this.samples = []; }
    add(frames) {
      const now = performance.now();
      const s = this.samples;
      if (s.length && s[s.length - 1][1] > frames) s.length = 0; // reset
      s.push([now, frames]);
      while (s.length > 2 && now - s[0][0] > 30000) s.shift();
    }
    fps() {
      const s = this.samples;
      if (s.length < 2) return NaN;
      const dt = (s[s.length - 1][0] - s[0][0]) / 1000;
      return dt >= 1 ? (s[s.length - 1][1] - s[0][1]) / dt : NaN;
    }
  }

  function showError(err) {
    const p = document.getElementById("error");
    if (!p) return;
    p.textContent = err ? String(err.message || err) : "";
    p.hidden = !err;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.nav === page);
    document.getElementById("signout").addEventListener("click", async () => {
      await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
      location.href = "/login";
    });
    session().catch(() => {});
  });

  return { api, stream, el, bytes, duration, time, ago, Rate, showError, session };
})();
