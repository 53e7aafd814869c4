// The Managed Credentials page works without this script; it adds copy
// buttons for the integration ids and keeps the statuses current.
"use strict";

function copyButtons() {
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.hidden = false;
    b.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(b.dataset.copy);
        b.textContent = "Copied";
      } catch (e) {
        b.textContent = "Copy failed";
      }
      setTimeout(() => { b.textContent = "Copy"; }, 2000);
    });
  }
}


async function refresh() {
  let resp;
  try {
    const key = new URLSearchParams(location.search).get("s") || "";
    resp = await fetch("/settings/integrations.json?s=" + encodeURIComponent(key), { credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    return;
  }
  if (resp.status === 401) {
    const n = document.getElementById("notice");
    n.hidden = false;
    n.textContent = "This session has ended. Run oauthfs settings for a new link.";
    return;
  }
  if (!resp.ok) return;
  const list = await resp.json();
  for (const it of list) {
    const li = document.querySelector(`li[data-guid="${CSS.escape(it.guid)}"]`);
    if (!li) continue;
    const st = li.querySelector("[data-status]");
    if (st && st.dataset.status !== it.status) {
      location.reload(); // the buttons change too
      return;
    }
    const ex = li.querySelector("[data-expiry]");
    if (ex) ex.textContent = it.expiry || "—";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  copyButtons();
  setInterval(refresh, 5000);
});
