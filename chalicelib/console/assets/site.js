// One site: its machines, its parameters and where each value came from (the explain
// view), its drift, and its share of the newest rollouts.

import { ApiError, get } from "./api.js";
import { badge, h, table, when } from "./dom.js";

export const REFRESH_MS = 10000;

function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

async function optional(path) {
  try {
    return await get(path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) return { error: error.message };
    throw error;
  }
}

export async function render({ params }) {
  const [siteId] = params;
  const id = encodeURIComponent(siteId);
  const [detail, explained, drift, runs] = await Promise.all([
    get(`/sites/${id}`), optional(`/params/explain?site=${id}`), get(`/drift?site=${id}`),
    get(`/sites/${id}/executions`)]);
  const { site, machines } = detail;
  const driftOf = Object.fromEntries(drift.machines.map((m) => [m.machine_id, m]));
  return h("div", {},
    h("p", {}, h("a", { href: "#/sites" }, "← sites")),
    h("h1", {}, `${site.name || site.site_id} `, badge(site.online ? "online" : "offline")),
    h("p", { class: "muted" },
      `${site.site_id} · ${site.region || "no region"} · tags ${site.tags.join(", ") || "none"}` +
      ` · gateway ${site.gateway_version || "?"} · last seen ${when(site.last_seen_at)}`),
    h("h2", {}, "Machines"),
    table(["Machine", "Protocol", "Vendor", "Model", "Power", "Drift"], machines.map((m) => {
      const found = driftOf[m.machine_id];
      return h("tr", {},
        h("td", {}, m.machine_id),
        h("td", {}, m.protocol || ""),
        h("td", {}, m.manufacturer || ""),
        h("td", {}, m.model || ""),
        h("td", {}, m.inventory_error ? h("span", { class: "error" }, m.inventory_error)
                                      : m.power || ""),
        h("td", {}, !found ? "no desired state" : found.in_sync ? "in sync" :
          found.drift.map((d) => `${d.field}: wants ${show(d.desired)}, is ${show(d.observed)}`)
            .join("; ") || "not observed yet"));
    })),
    h("h2", {}, "Parameters"),
    explained.error ? h("p", { class: "error" }, explained.error) :
      !explained.params.length ? h("p", { class: "muted" }, "No parameter applies here.") :
      table(["Parameter", "Value", "From", "Overrides"], explained.params.map((p) =>
        h("tr", {},
          h("td", {}, p.name),
          h("td", { class: "message" }, show(p.value)),
          h("td", {}, p.level + (p.profile ? ` (${p.profile})` : "")),
          h("td", {}, p.overrides.map((o) => `${o.level}${o.profile ? ` ${o.profile}` : ""}: ` +
                                             show(o.value)).join("; "))))),
    h("h2", {}, "Recent executions"),
    table(["Rollout", "State", "Message", "Finished"], runs.executions.map((run) =>
      h("tr", {},
        h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.rollout_id)}/${id}` },
                      run.rollout_name || run.rollout_id)),
        h("td", {}, badge(run.execution.state)),
        h("td", { class: "message" }, run.execution.message || ""),
        h("td", {}, when(run.execution.finished_at))))));
}
