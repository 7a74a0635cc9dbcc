// Sites: a table sorted and cut into pages on the server (GET /fleet/sites), each row
// leading to the site's page.

import { get, query } from "./api.js";
import { badge, h, table, when } from "./dom.js";

export const REFRESH_MS = 10000;
const PAGE = 50;
const COLUMNS = [["site_id", "Site"], [null, "Region"], [null, "State"],
                 ["last_seen", "Last seen"], ["gateway_version", "Gateway"],
                 ["in_sync", "Desired vs observed"], ["healthy", "Healthy machines"]];
const state = { sort: "site_id", order: "asc", offset: 0 };

function header([key, title], refresh) {
  if (!key) return title;
  const sorted = state.sort === key;
  return h("button", {
    type: "button", class: "sort", dataset: { key: `sort-${key}` },
    "aria-label": `sort by ${title}`,
    onclick: () => {
      state.order = sorted && state.order === "asc" ? "desc" : "asc";
      state.sort = key;
      state.offset = 0;
      refresh();
    },
  }, title, sorted ? (state.order === "asc" ? " ▲" : " ▼") : "");
}

function presence(site) {
  if (!site.online) return badge("offline");
  return site.stale ? badge("stale") : badge("online");
}

export async function render({ refresh }) {
  const data = await get("/fleet/sites" + query({ ...state, limit: PAGE }));
  const last = Math.min(data.offset + data.sites.length, data.total);
  const rows = data.sites.map((site) => h("tr", { dataset: { site: site.site_id } },
    h("td", {}, h("a", { href: `#/sites/${encodeURIComponent(site.site_id)}` }, site.site_id)),
    h("td", {}, site.region),
    h("td", {}, presence(site), site.failing ? [" ", badge("failing")] : null,
      site.drifted ? [" ", badge("drifted")] : null),
    h("td", {}, when(site.last_seen_at)),
    h("td", {}, site.gateway_version,
      site.desired_gateway && site.desired_gateway !== site.gateway_version
        ? h("span", { class: "error" }, ` (wants ${site.desired_gateway})`) : null),
    h("td", { class: "num" }, site.with_desired ? `${site.in_sync}/${site.with_desired}` : "—"),
    h("td", { class: "num" }, `${site.healthy}/${site.machines}`)));
  return h("div", {},
    h("h1", {}, "Sites"),
    table(COLUMNS.map((column) => header(column, refresh)), rows),
    h("div", { class: "actions" },
      h("button", { type: "button", disabled: data.offset === 0, dataset: { key: "prev" },
                    onclick: () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); } },
        "Previous"),
      h("span", { class: "note" }, data.total ? `${data.offset + 1}–${last} of ${data.total}`
                                               : "no site"),
      h("span", { class: "muted" }, `counted ${when(data.counted_at)}`),
      h("button", { type: "button", disabled: last >= data.total, dataset: { key: "next" },
                    onclick: () => { state.offset += PAGE; refresh(); } }, "Next")));
}
