"""The web console in a real browser (Debian's chromium, driven by playwright) against the
whole local stack: sign in, watch a real rollout's waves fill, pause and resume it, drill
into a failed machine and read what its BMC said, and see that a viewer cannot pause.

Screenshots go to ``build/test-output/console/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeplane_cli.client import ApiClient
from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.stack import LocalStack, StackState, plan_sites
from tests.support import ROOT, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (make install installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (the [dev] extra has it)")

SHOTS = ROOT / "build" / "test-output" / "console"
WAIT_MS = 60_000  # what a busy machine takes to move a rollout along
sync_api.expect.set_options(timeout=WAIT_MS)
SLOW_STEPS = [{"task": "power.ensure", "params": {"state": "off"}},
              {"task": "power.ensure", "params": {"state": "on"}}]
ONE_AT_A_TIME = {"canary": {"sites": 1}, "max_in_flight": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[StackState]:
    """Three sites, each a gateway and one BMC (the Redfish simulator)."""
    local = LocalStack(tmp_path_factory.mktemp("console") / "dev",
                       plan_sites(3, redfish_per_site=0, ipmi_per_site=0, servers_per_site=1))
    state = local.up()
    try:
        yield state
    finally:
        local.down()


@pytest.fixture(scope="module")
def admin(stack) -> ApiClient:
    return ApiClient(stack.context, timeout=30)


@pytest.fixture(scope="module")
def tokens(admin) -> dict[str, str]:
    return {role: admin.post("/principals", {"name": f"console-{role}", "role": role})["token"]
            for role in ("viewer", "operator")}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        launched.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page threw: {errors}"


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page, stack: StackState, token: str) -> None:
    page.goto(stack.console_url)
    page.get_by_label("Token").fill(token)
    page.keyboard.press("Enter")  # the keyboard is enough
    page.locator("#who").wait_for()


def rollout_state(admin: ApiClient, rollout_id: str) -> dict[str, Any]:
    return admin.get(f"/rollouts/{rollout_id}?executions=false")


def test_an_operator_watches_the_waves_fill_pauses_and_resumes(stack, admin, tokens, page):
    created = admin.post("/rollouts", {"name": "console: power cycle", "tag": "dev",
                                       "steps": SLOW_STEPS, "policy": ONE_AT_A_TIME})
    rollout_id = created["rollout"]["rollout_id"]
    assert created["rollout"]["waves"] == [1, 2]

    sign_in(page, stack, tokens["operator"])
    expect = sync_api.expect
    expect(page.locator("#who")).to_have_text("console-operator (operator)")
    page.get_by_role("link", name="Rollouts").click()
    card = page.locator(f'article[data-rollout="{rollout_id}"]')
    expect(card.locator("h2")).to_contain_text("console: power cycle")
    # The canary's bar fills while the rollout runs; the second wave's has not yet.
    canary = card.get_by_role("progressbar", name="wave 1: 1 of 1 done")
    expect(canary).to_be_visible()
    expect(card.locator('[data-wave="0"] .wave-text')).to_have_text("1/1 done")
    bar = canary.bounding_box()
    filled = canary.locator(".done").bounding_box()
    assert bar and filled and filled["width"] >= bar["width"] - 1, "the bar is drawn full"
    shot(page, "rollout-running")

    card.get_by_role("button", name="Pause").click()
    expect(card.locator(".badge")).to_have_text("paused")
    expect(card.get_by_role("button", name="Resume")).to_be_enabled()
    # Nothing new starts: what was in flight finishes, the rest of the second wave waits.
    stopped = wait_until(lambda: (r := rollout_state(admin, rollout_id)["rollout"])
                         ["in_flight"] == 0 and r, timeout=WAIT_MS / 1000,
                         what="the site in flight to finish")
    assert stopped["state"] == "paused" and stopped["done"] < stopped["total"] == 3
    shot(page, "rollout-paused")
    audit = admin.get(f"/audit?rollout={rollout_id}")["records"]  # newest first
    assert [(r["principal"], r["action"]) for r in audit] == [
        ("console-operator", "paused"), ("admin", "started")]

    card.get_by_role("button", name="Resume").click()
    # Done: it leaves the active rollouts for the finished ones, every site succeeded.
    finished = page.locator(f'tr[data-rollout="{rollout_id}"]')
    expect(finished.locator(".badge")).to_have_text("succeeded", timeout=2 * WAIT_MS)
    expect(finished).to_contain_text("succeeded 3")
    actions = [(r["principal"], r["action"])
               for r in admin.get(f"/audit?rollout={rollout_id}")["records"]]
    assert actions == [("console-operator", "resumed"), ("console-operator", "paused"),
                       ("admin", "started")]


def test_a_failed_machine_shows_what_its_bmc_said(stack, admin, tokens, page):
    missing = f"http://{LOOPBACK}:{free_port()}/missing.iso"  # nothing listens there
    created = admin.post("/rollouts", {"name": "console: media", "sites": ["site-003"],
                                       "steps": [{"task": "media.insert",
                                                  "params": {"image": missing}}]})
    rollout_id = created["rollout"]["rollout_id"]
    wait_until(lambda: rollout_state(admin, rollout_id)["rollout"]["state"] == "failed",
               timeout=WAIT_MS / 1000, what="the media rollout to fail")

    sign_in(page, stack, tokens["viewer"])
    page.get_by_role("link", name="Failures").click()
    group = page.locator('tr.group[data-task="media.insert"]')
    sync_api.expect(group).to_contain_text("<url>")
    group.get_by_role("button", name="Where").click()
    page.get_by_role("link", name="site-003 / srv-1").first.click()
    machine = page.locator('section[data-machine="srv-1"]')
    failed = machine.locator("tr.step.failed")
    sync_api.expect(failed).to_contain_text("media.insert")
    sync_api.expect(failed.locator(".message")).to_contain_text(missing)
    sync_api.expect(failed.locator(".message")).to_contain_text("could not be fetched")
    shot(page, "failed-machine")


def test_a_viewer_sees_a_rollout_but_cannot_pause_it(stack, admin, tokens, page):
    created = admin.post("/rollouts", {"name": "console: held", "tag": "dev",
                                       "steps": SLOW_STEPS, "policy": ONE_AT_A_TIME})
    rollout_id = created["rollout"]["rollout_id"]
    try:
        sign_in(page, stack, tokens["viewer"])
        page.get_by_role("link", name="Rollouts").click()
        card = page.locator(f'article[data-rollout="{rollout_id}"]')
        sync_api.expect(card).to_contain_text("Your role (viewer) can watch rollouts")
        for name in ("Pause", "Resume", "Cancel"):
            sync_api.expect(card.get_by_role("button", name=name)).to_be_disabled()
        shot(page, "viewer")
        # Nor can the viewer's token do it behind the page's back.
        answer = page.evaluate("""async (id) => {
            const response = await fetch(`/rollouts/${id}/pause`, {method: "POST",
                headers: {Authorization: `Bearer ${sessionStorage.getItem("edgeplane.token")}`}});
            return [response.status, (await response.json()).error.message];
        }""", rollout_id)
        assert answer[0] == 403 and "needs role operator" in answer[1]
        assert rollout_state(admin, rollout_id)["rollout"]["state"] == "running"
    finally:
        admin.post(f"/rollouts/{rollout_id}/cancel", {})


def test_a_wrong_token_is_refused_and_an_unreachable_api_is_said(stack, tokens, page):
    page.goto(stack.console_url)
    page.get_by_label("Token").fill("ep1.nobody.not-a-secret")
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.locator("#signin-error")).to_contain_text("Sign-in refused")

    sign_in(page, stack, tokens["viewer"])
    sync_api.expect(page.locator(".card[data-count=sites] .n")).to_have_text("3")
    sync_api.expect(page.locator(".card[data-count=online] .n")).to_have_text("3")
    shot(page, "fleet")
    page.route("**/fleet/summary*", lambda route: route.abort("connectionrefused"))
    sync_api.expect(page.locator("#status")).to_contain_text("API down")
    page.unroute("**/fleet/summary*")
    sync_api.expect(page.locator("#status")).to_contain_text("Live")


def test_the_sites_table_a_site_page_and_the_hardware_matrix(stack, admin, tokens, page):
    created = admin.post("/rollouts", {"name": "console: power on", "sites": ["site-001"],
                                       "steps": [{"task": "power.ensure",
                                                  "params": {"state": "on"}}]})
    rollout_id = created["rollout"]["rollout_id"]
    wait_until(lambda: rollout_state(admin, rollout_id)["rollout"]["state"] == "succeeded",
               timeout=WAIT_MS / 1000, what="the power-on rollout to succeed")

    sign_in(page, stack, tokens["viewer"])
    page.get_by_role("link", name="Sites").click()
    rows = page.locator("tr[data-site]")
    sync_api.expect(rows).to_have_count(3)
    sync_api.expect(rows.first).to_have_attribute("data-site", "site-001")
    page.get_by_role("button", name="sort by Site").click()  # again: descending
    sync_api.expect(rows.first).to_have_attribute("data-site", "site-003")
    sync_api.expect(page.locator(".actions .note")).to_have_text("1–3 of 3")

    page.get_by_role("link", name="site-001", exact=True).click()
    sync_api.expect(page.locator("#view h1")).to_contain_text("Dev site site-001")
    sync_api.expect(page.locator("#view table").first).to_contain_text("srv-1")
    recent = page.get_by_role("link", name="console: power on")
    sync_api.expect(recent).to_be_visible()
    shot(page, "site")

    page.get_by_role("link", name="Hardware").click()
    sync_api.expect(page.locator("#view h1")).to_have_text(
        "Failure rate by vendor and BMC firmware")
    sync_api.expect(page.locator("tr[data-vendor] td").first).to_contain_text("%")
    shot(page, "hardware")


def test_an_admin_reads_the_audit_by_principal_with_the_keyboard(stack, admin, tokens, page):
    created = admin.post("/rollouts", {"name": "console: audited", "sites": ["site-002"],
                                       "steps": [{"task": "power.ensure",
                                                  "params": {"state": "on"}}]})
    admin.post(f"/rollouts/{created['rollout']['rollout_id']}/cancel", {})

    sign_in(page, stack, stack.token)  # the stack's admin
    audit = page.get_by_role("link", name="Audit")
    sync_api.expect(audit).to_be_visible()
    audit.focus()
    page.keyboard.press("Enter")
    principal = page.get_by_label("Principal")
    principal.fill("admin")
    page.keyboard.press("Enter")  # a filter applies when it is committed
    rows = page.locator("#view tbody tr")
    sync_api.expect(rows.first).to_contain_text("canceled")
    # The unfiltered table may show first what the filtered one does: wait for the filter.
    texts = wait_until(lambda: (found := rows.all_inner_texts()) and all(
        "\tadmin\t" in f"\t{text}\t" for text in found) and found,
        timeout=10, what="only the admin's records")
    assert len(texts) >= 2
    shot(page, "audit")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, stack, tokens["viewer"])
    sync_api.expect(page.get_by_role("link", name="Audit")).to_be_hidden()
