"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("error");
  const r = await fetch("/api/login", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }),
  });
  if (r.ok) {
    const next = new URLSearchParams(location.search).get("next") || "/";
    // Only a path of this site: never an address another site gave.
    location.href = /^\/[^/\\]/.test(next) ? next : "/";
    return;
  }
  const data = await r.json().catch(() => ({}));
  err.textContent = data.error || r.statusText;
  err.hidden = false;
});
