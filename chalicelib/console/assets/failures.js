// Failure triage: failed steps grouped by task and message (numbers, addresses and names
// blanked out on the server), largest first; each group lists where it happened, and each
// place opens that site's run, machine by machine and step by step.

import { get, query } from "./api.js";
import { h, table } from "./dom.js";

export const REFRESH_MS = 10000;
const open = new Set(); // groups whose places are shown

export async function render({ params, refresh }) {
  const [rollout] = params;
  const data = await get("/failures" + query({ rollout }));
  const rows = data.groups.flatMap((group, index) => {
    const key = `${group.task}\u0000${group.message}`;
    const shown = open.has(key);
    const row = h("tr", { class: "group", dataset: { task: group.task } },
      h("td", {}, group.task),
      h("td", { class: "message" }, group.message),
      h("td", { class: "num" }, group.machines),
      h("td", { class: "num" }, group.sites),
      h("td", {}, h("button", {
        type: "button", "aria-expanded": shown ? "true" : "false",
        dataset: { key: `group-${index}` },
        onclick: () => { if (shown) open.delete(key); else open.add(key); refresh(); },
      }, shown ? "Hide places" : "Where")));
    if (!shown) return [row];
    const places = h("tr", { class: "places" }, h("td", { colspan: 5 },
      h("p", { class: "muted" }, "For example: ", h("span", { class: "message" }, group.example)),
      h("ul", {}, group.samples.map((s) => h("li", {},
        h("a", { href: `#/runs/${encodeURIComponent(s.rollout_id)}/${encodeURIComponent(s.site_id)}`,
                 dataset: { key: `run-${s.rollout_id}-${s.site_id}-${s.machine}` } },
          `${s.site_id}${s.machine ? " / " + s.machine : ""}`),
        h("span", { class: "muted" }, ` in ${s.rollout_id}`))))));
    return [row, places];
  });
  return h("div", {},
    h("h1", {}, rollout ? `Failures of ${rollout}` : "Failures of the newest rollouts"),
    h("p", { class: "muted" },
      `${data.failed_sites} failed sites in ${data.rollouts.length} rollouts; ` +
      `${data.groups_total} groups.`),
    data.groups.length ? table(["Task", "Message", "Machines", "Sites", ""], rows)
                       : h("p", {}, "No failure."));
}
