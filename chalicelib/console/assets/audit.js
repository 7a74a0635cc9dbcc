// The audit log (admins): who did what, newest first, filtered by principal, site and
// rollout on the server, a page at a time.

import { get, query } from "./api.js";
import { h, table, when } from "./dom.js";

export const REFRESH_MS = 15000;
const filters = { principal: "", site: "", rollout: "" };
let pages = [null]; // the page tokens that led here

export async function render({ refresh }) {
  const data = await get("/audit" + query({ ...filters, limit: 50,
                                            next: pages[pages.length - 1] }));
  const field = (name, label) => h("label", {}, label, h("input", {
    name, value: filters[name], dataset: { key: `audit-${name}` },
    onchange: (event) => { filters[name] = event.target.value.trim(); pages = [null]; refresh(); },
  }));
  return h("div", {},
    h("h1", {}, "Audit log"),
    h("div", { class: "filters" }, field("principal", "Principal"), field("site", "Site"),
      field("rollout", "Rollout")),
    table(["When", "Principal", "Role", "Action", "Target", "Status"], data.records.map((r) =>
      h("tr", {},
        h("td", { title: r.at }, when(r.at)),
        h("td", {}, r.principal),
        h("td", {}, r.role || ""),
        h("td", {}, `${r.action} (${r.method} ${r.route})`),
        h("td", {}, `${r.target.kind} ${r.target.id}`),
        h("td", { class: "num" }, r.status)))),
    h("div", { class: "actions" },
      h("button", { type: "button", disabled: pages.length < 2, dataset: { key: "audit-prev" },
                    onclick: () => { pages.pop(); refresh(); } }, "Newer"),
      h("button", { type: "button", disabled: !data.next, dataset: { key: "audit-next" },
                    onclick: () => { pages.push(data.next); refresh(); } }, "Older")));
}
