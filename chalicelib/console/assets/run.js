// One site's share of a rollout: each machine and its steps in order, with what the BMC
// said (GET /rollouts/{id}/sites/{site}).

import { get } from "./api.js";
import { badge, h, table } from "./dom.js";

export const REFRESH_MS = 5000;

function time(iso) { return iso ? iso.slice(11, 23) : ""; }

export async function render({ params }) {
  const [rolloutId, siteId] = params;
  const { execution } = await get(
    `/rollouts/${encodeURIComponent(rolloutId)}/sites/${encodeURIComponent(siteId)}`);
  return h("div", {},
    h("p", {}, h("a", { href: `#/failures?rollout=${encodeURIComponent(rolloutId)}` },
                 "← failures of this rollout")),
    h("h1", {}, `${siteId} in ${rolloutId} `, badge(execution.state)),
    execution.message ? h("p", { class: "message" }, execution.message) : null,
    h("p", { class: "muted" },
      `attempt ${execution.attempt} · sent ${time(execution.sent_at)} · ` +
      `finished ${time(execution.finished_at) || "not yet"} (UTC)`),
    (execution.machines || []).map((machine) => h("section", {
      class: "machine", dataset: { machine: machine.machine }, "aria-label": machine.machine },
      h("h2", {}, machine.machine, " ", badge(machine.state || "pending")),
      table(["#", "Task", "State", "Changed", "Started", "Finished", "What the BMC said"],
        machine.steps.map((step, index) => h("tr", { class: `step ${step.state}` },
          h("td", { class: "num" }, index + 1),
          h("td", {}, step.task),
          h("td", {}, badge(step.state || "pending")),
          h("td", {}, step.changed ? "yes" : "no"),
          h("td", {}, time(step.started_at)),
          h("td", {}, time(step.finished_at)),
          h("td", { class: "message" }, step.message || "")))))));
}
