// The console's shell: sign-in, the views by URL fragment, live refresh, and the status
// line that says when data is stale or the API is down.

import { ApiError, get, health, onHealth, setToken, token } from "./api.js";
import * as audit from "./audit.js";
import * as failures from "./failures.js";
import * as fleet from "./fleet.js";
import * as matrix from "./matrix.js";
import * as rollouts from "./rollouts.js";
import * as run from "./run.js";
import * as site from "./site.js";
import * as sites from "./sites.js";

const ROUTES = [
  [/^#\/fleet$/, fleet],
  [/^#\/rollouts$/, rollouts],
  [/^#\/failures(?:\?rollout=([^&]+))?$/, failures],
  [/^#\/runs\/([^/]+)\/([^/]+)$/, run],
  [/^#\/sites$/, sites],
  [/^#\/sites\/([^/]+)$/, site],
  [/^#\/matrix$/, matrix],
  [/^#\/audit$/, audit],
];
const STALE_AFTER = 3; // refresh periods without an answer

const $ = (id) => document.getElementById(id);
let me = null;
let timer = null;
let generation = 0;
let period = 5000;

function route() {
  for (const [pattern, view] of ROUTES) {
    const found = location.hash.match(pattern);
    if (found) {
      return { view, params: found.slice(1).map((p) => (p ? decodeURIComponent(p) : p)) };
    }
  }
  return null;
}

async function show() {
  clearTimeout(timer);
  const current = route();
  if (!current) { location.hash = "#/fleet"; return; }
  for (const link of document.querySelectorAll("#nav a")) {
    if (location.hash.startsWith(link.getAttribute("href"))) {
      link.setAttribute("aria-current", "page");
    } else link.removeAttribute("aria-current");
  }
  const mine = ++generation;
  period = current.view.REFRESH_MS || 5000;
  const view = $("view");
  const refresh = async () => {
    if (mine !== generation) return;
    const focused = document.activeElement && document.activeElement.dataset.key;
    try {
      const content = await current.view.render({ me, params: current.params, refresh });
      if (mine !== generation) return;
      view.replaceChildren(content);
      if (focused) {
        const again = view.querySelector(`[data-key="${CSS.escape(focused)}"]`);
        if (again) again.focus();
      }
    } catch (error) {
      if (mine !== generation) return;
      if (error instanceof ApiError && error.status === 401) { signOut(error.message); return; }
      if (!(error instanceof ApiError) || error.status !== 0) {
        view.replaceChildren(Object.assign(document.createElement("p"),
          { className: "error", textContent: `Could not load this view: ${error.message}` }));
      }
    }
    clearTimeout(timer);
    timer = setTimeout(refresh, period);
  };
  await refresh();
}

function renderStatus() {
  const line = $("status");
  if (!me) { line.textContent = ""; line.className = ""; return; }
  const age = health.lastOk ? Math.round((Date.now() - health.lastOk) / 1000) : null;
  if (health.down) {
    line.className = "down";
    line.textContent = `API down: ${health.down}` +
      (age !== null ? ` — showing data from ${age} s ago` : "");
  } else if (age !== null && age * 1000 > STALE_AFTER * period) {
    line.className = "stale";
    line.textContent = `Data is stale: last updated ${age} s ago`;
  } else {
    line.className = "";
    line.textContent = age === null ? "Loading…" :
      `Live: updated ${age} s ago, every ${period / 1000} s`;
  }
}

async function signIn(candidate) {
  setToken(candidate);
  try {
    me = await get("/whoami");
  } catch (error) {
    setToken(null);
    me = null;
    throw error;
  }
  $("who").textContent = `${me.name} (${me.role || "no role"})`;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  for (const link of document.querySelectorAll("#nav [data-role=admin]")) {
    link.hidden = me.role !== "admin";
  }
  await show();
}

function signOut(reason) {
  clearTimeout(timer);
  generation++;
  setToken(null);
  me = null;
  $("who").textContent = "";
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("view").replaceChildren();
  $("signin").hidden = false;
  $("signin-error").textContent = reason || "";
  renderStatus();
  $("token").focus();
}

$("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  $("signin-error").textContent = "";
  try {
    await signIn(value);
    $("token").value = "";
    $("main").focus();
  } catch (error) {
    $("signin-error").textContent = error.status === 401 ?
      `Sign-in refused: ${error.message}` : `Sign-in failed: ${error.message}`;
  }
});
$("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => { if (me) show(); });
onHealth(renderStatus);
setInterval(renderStatus, 1000);

if (token()) signIn(token()).catch((error) => signOut(error.message));
else signOut();
