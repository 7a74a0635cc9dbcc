// Which hardware fails: the failure rate of the newest rollouts' machines by vendor (rows)
// and BMC firmware (columns), computed on the server (GET /failures/matrix).

import { get } from "./api.js";
import { h, table } from "./dom.js";

export const REFRESH_MS = 15000;

export async function render() {
  const data = await get("/failures/matrix");
  const cell = Object.fromEntries(data.cells.map((c) => [`${c.vendor}\u0000${c.firmware}`, c]));
  const rows = data.vendors.map((vendor) => h("tr", { dataset: { vendor } },
    h("th", { scope: "row" }, vendor),
    data.firmware.map((firmware) => {
      const found = cell[`${vendor}\u0000${firmware}`];
      if (!found) return h("td", { class: "muted" }, "—");
      const tone = found.rate >= 0.2 ? "error" : "";
      return h("td", { class: `num ${tone}`, title: `${found.failed} of ${found.machines} failed`,
                       dataset: { firmware } },
        `${(100 * found.rate).toFixed(1)}% (${found.failed}/${found.machines})`);
    })));
  return h("div", {},
    h("h1", {}, "Failure rate by vendor and BMC firmware"),
    h("p", { class: "muted" }, `Machines that ran to the end in the newest ` +
      `${data.rollouts.length} rollouts. BMC firmware is what the BMC read back for machines ` +
      "with a desired state; (none) where it is not known."),
    data.cells.length ? table(["Vendor \\ BMC firmware", ...data.firmware], rows)
                      : h("p", {}, "No machine has finished a rollout yet."));
}
