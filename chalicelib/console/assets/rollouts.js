// Rollouts: each active rollout's waves as progress bars, its counts by state, its failure
// rate against its abort threshold, its limits; pause, resume and cancel for operators.
// Live: the list and each active rollout's counters (GET /rollouts/{id}?executions=false).

import { ApiError, get, post } from "./api.js";
import { badge, h, table, when } from "./dom.js";

export const REFRESH_MS = 2000;
const ACTIVE = new Set(["running", "paused"]);
const FAILED = ["failed", "timed_out", "rejected"];
const RANK = { viewer: 0, operator: 1, admin: 2 };
let notice = null; // the answer to the last action, shown until the next one

function waveRow(wave) {
  const ok = Math.max(wave.done - wave.failed, 0);
  const pct = (n) => (wave.size ? (100 * n) / wave.size : 0);
  return h("div", { class: "wave", dataset: { wave: wave.wave } },
    h("span", {}, `wave ${wave.wave + 1}`),
    h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0,
               "aria-valuemax": wave.size, "aria-valuenow": wave.done,
               "aria-label": `wave ${wave.wave + 1}: ${wave.done} of ${wave.size} done` },
      h("div", { class: "done", style: { width: `${pct(ok)}%` } }),
      h("div", { class: "failed", style: { width: `${pct(wave.failed)}%` } })),
    h("span", { class: "wave-text" },
      `${wave.done}/${wave.size} done` + (wave.failed ? `, ${wave.failed} failed` : "")));
}

function limits(policy) {
  if (!policy) return "";
  const parts = [];
  if (policy.max_in_flight) parts.push(`at most ${policy.max_in_flight} sites at once`);
  if (policy.max_per_minute) parts.push(`${policy.max_per_minute} sites/min`);
  parts.push(policy.maintenance_windows === false ? "ignores maintenance windows"
                                                  : "in each site's maintenance window");
  if (policy.site_timeout) parts.push(`site timeout ${Math.round(policy.site_timeout)} s`);
  if (policy.retries && policy.retries.max) parts.push(`${policy.retries.max} retries`);
  return parts.join(" · ");
}

function failureRate(rollout, waves) {
  const abort = (rollout.policy && rollout.policy.abort) || { percent: 20, min_sample: 5 };
  const wave = waves.find((w) => w.wave === rollout.current_wave) || waves[0];
  const done = wave ? wave.done : 0;
  const failed = wave ? wave.failed : 0;
  const rate = done ? (100 * failed) / done : 0;
  const over = done >= abort.min_sample && rate >= abort.percent;
  return h("span", { class: `threshold ${over ? "over" : ""}` },
    `failure rate ${rate.toFixed(0)}% (${failed}/${done}) in the current wave; ` +
    `aborts at ${abort.percent}% once ${abort.min_sample} sites finished`);
}

function actions(rollout, me, refresh) {
  const may = RANK[me.role] >= RANK.operator;
  const act = async (verb) => {
    if (verb === "cancel" && !confirm(`Cancel rollout ${rollout.name || rollout.rollout_id}?`)) {
      return;
    }
    try {
      const answer = await post(`/rollouts/${encodeURIComponent(rollout.rollout_id)}/${verb}`);
      notice = { id: rollout.rollout_id, text: `${verb}: now ${answer.rollout.state}` };
    } catch (error) {
      notice = { id: rollout.rollout_id, error: true,
                 text: error instanceof ApiError ? error.message : String(error) };
    }
    refresh();
  };
  const button = (verb, label, enabled) => h("button", {
    type: "button", disabled: !may || !enabled, onclick: () => act(verb),
    dataset: { key: `${verb}-${rollout.rollout_id}`, action: verb },
    title: may ? null : `needs role operator; you are ${me.role}`,
  }, label);
  const shown = notice && notice.id === rollout.rollout_id ? notice : null;
  return h("div", { class: "actions" },
    button("pause", "Pause", rollout.state === "running"),
    button("resume", "Resume", rollout.state === "paused"),
    button("cancel", "Cancel", ACTIVE.has(rollout.state)),
    may ? null : h("span", { class: "note" },
                   `Your role (${me.role}) can watch rollouts, not change them.`),
    shown ? h("span", { class: shown.error ? "error" : "note", role: "status" }, shown.text)
          : null);
}

function counts(stateCounts) {
  const entries = Object.entries(stateCounts || {});
  if (!entries.length) return h("div", { class: "counts muted" }, "no site started yet");
  return h("div", { class: "counts" }, entries.map(([state, n]) =>
    h("span", { class: FAILED.includes(state) ? "error" : "" }, `${state}: ${n}`)));
}

function activeCard(rollout, waves, me, refresh) {
  const id = rollout.rollout_id;
  return h("article", { class: "rollout", dataset: { rollout: id, state: rollout.state },
                        "aria-label": `rollout ${rollout.name || id}` },
    h("h2", {}, rollout.name || id, " ", badge(rollout.state)),
    h("div", { class: "meta" },
      `${id} · ${rollout.total} sites · ${rollout.done} done, ${rollout.in_flight} in flight · ` +
      `started ${when(rollout.created_at)}`),
    waves.map(waveRow),
    counts(rollout.state_counts),
    h("div", { class: "counts" }, failureRate(rollout, waves)),
    h("div", { class: "meta" }, limits(rollout.policy)),
    rollout.message ? h("div", { class: "meta" }, rollout.message) : null,
    h("div", {}, h("a", { href: `#/failures?rollout=${encodeURIComponent(id)}`,
                          dataset: { key: `failures-${id}` } }, "Failures of this rollout")),
    actions(rollout, me, refresh));
}

export async function render({ me, refresh }) {
  const { rollouts } = await get("/rollouts");
  const active = rollouts.filter((r) => ACTIVE.has(r.state));
  const details = await Promise.all(active.map((r) =>
    get(`/rollouts/${encodeURIComponent(r.rollout_id)}?executions=false`)));
  const finished = rollouts.filter((r) => !ACTIVE.has(r.state)).slice(0, 50);
  return h("div", {},
    h("h1", {}, "Rollouts"),
    active.length ? details.map((d) => activeCard(d.rollout, d.waves, me, refresh))
                  : h("p", { class: "muted" }, "No rollout is running."),
    h("h2", {}, "Finished"),
    table(["Rollout", "State", "Sites", "Outcome", "Started", ""], finished.map((r) =>
      h("tr", { dataset: { rollout: r.rollout_id } },
        h("td", {}, r.name || r.rollout_id),
        h("td", {}, badge(r.state)),
        h("td", { class: "num" }, r.total),
        h("td", {}, Object.entries(r.state_counts).map(([s, n]) => `${s} ${n}`).join(", ")),
        h("td", {}, when(r.created_at)),
        h("td", {}, h("a", { href: `#/failures?rollout=${encodeURIComponent(r.rollout_id)}` },
                      "failures"))))));
}
