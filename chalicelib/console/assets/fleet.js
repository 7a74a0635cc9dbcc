// Fleet: how many sites are online, offline, stale, drifted and failing, under filters.
// Counted on the server (GET /fleet/summary); the filters' values come with the counts.

import { get, query } from "./api.js";
import { h, when } from "./dom.js";

export const REFRESH_MS = 10000;
const FILTERS = [["region", "Region"], ["tag", "Tag"], ["group", "Group"], ["vendor", "Vendor"],
                 ["firmware", "BMC firmware"], ["gateway_version", "Gateway version"]];
const chosen = {};

function card(label, value, tone) {
  return h("div", { class: `card ${tone || ""}`, dataset: { count: label } },
    h("div", { class: "n" }, value), h("div", {}, label));
}

export async function render({ refresh }) {
  const data = await get("/fleet/summary" + query(chosen));
  const filters = h("div", { class: "filters", role: "group", "aria-label": "Filters" },
    FILTERS.map(([name, label]) => {
      const values = Object.entries(data.facets[name] || {});
      return h("label", {}, label,
        h("select", {
          name, dataset: { key: `filter-${name}` },
          onchange: (event) => { chosen[name] = event.target.value || undefined; refresh(); },
        },
        h("option", { value: "" }, "all"),
        values.map(([value, count]) => h("option", { value, selected: chosen[name] === value },
                                         `${value} (${count})`))));
    }));
  return h("div", {},
    h("h1", {}, "Fleet"),
    filters,
    h("div", { class: "cards" },
      card("sites", data.total),
      card("online", data.online, "ok"),
      card("offline", data.offline, data.offline ? "bad" : ""),
      card("stale", data.stale, data.stale ? "warn" : ""),
      card("drifted", data.drifted, data.drifted ? "warn" : ""),
      card("failing", data.failing, data.failing ? "bad" : "")),
    h("p", { class: "muted" },
      "Stale: online, but what the cloud knows of the site (presence, inventory, " +
      `observations) is older than ${Math.round(data.stale_after_s / 3600)} h. ` +
      "Failing: the site's share of one of the five newest rollouts failed. " +
      `Counted ${when(data.counted_at)}.`));
}
