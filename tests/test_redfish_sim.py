"""The Redfish BMC simulator, spoken to over HTTP with plain requests (no Edgeplane code on
the client side): auth, state that changes like a BMC's, faults, and a mockup of another
shape than the shipped one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import requests

from edgeplane_dev.ports import free_port
from edgeplane_dev.redfish_sim import SHIPPED, BmcOptions, Mockup, MockupError
from tests.support import SimulatedRedfish, wait_until

AUTH = ("admin", "password")


@pytest.fixture
def sim(redfish_bmcs) -> SimulatedRedfish:
    """A simulated BMC of this test's own."""
    return redfish_bmcs.fresh(BmcOptions(power_delay=0.3, update_seconds=0.6))


def get(sim: SimulatedRedfish, path: str, **kwargs) -> requests.Response:
    return requests.get(sim.url + path, auth=kwargs.pop("auth", AUTH),
                        timeout=kwargs.pop("timeout", 10), **kwargs)


def first_system(sim: SimulatedRedfish) -> str:
    return get(sim, "/redfish/v1/Systems").json()["Members"][0]["@odata.id"]


def reset_target(sim: SimulatedRedfish, system: str) -> str:
    return get(sim, system).json()["Actions"]["#ComputerSystem.Reset"]["target"]


# --- auth -------------------------------------------------------------------------------


def test_service_root_is_open_and_the_rest_needs_credentials(sim):
    assert requests.get(sim.url + "/redfish/v1", timeout=5).status_code == 200
    assert requests.get(sim.url + "/redfish", timeout=5).json() == {"v1": "/redfish/v1/"}
    anonymous = requests.get(sim.url + "/redfish/v1/Systems", timeout=5)
    assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
    wrong = get(sim, "/redfish/v1/Systems", auth=("admin", "nope"))
    assert wrong.status_code == 401
    assert "wrong user name or password" in wrong.json()["error"]["message"]
    assert get(sim, "/redfish/v1/Systems").status_code == 200


def test_a_session_token_works_until_logout(sim):
    login = requests.post(sim.url + "/redfish/v1/SessionService/Sessions", timeout=5,
                          json={"UserName": "admin", "Password": "password"})
    assert login.status_code == 201
    token, session = login.headers["X-Auth-Token"], login.headers["Location"]
    headers = {"X-Auth-Token": token}
    assert requests.get(sim.url + "/redfish/v1/Systems", headers=headers,
                        timeout=5).status_code == 200
    listed = get(sim, "/redfish/v1/SessionService/Sessions").json()["Members"]
    assert {"@odata.id": session} in listed
    assert requests.delete(sim.url + session, headers=headers, timeout=5).status_code == 204
    assert requests.get(sim.url + "/redfish/v1/Systems", headers=headers,
                        timeout=5).status_code == 401
    refused = requests.post(sim.url + "/redfish/v1/SessionService/Sessions", timeout=5,
                            json={"UserName": "admin", "Password": "bad"})
    assert refused.status_code == 401


# --- state ------------------------------------------------------------------------------


def test_power_change_takes_time_and_is_logged(sim):
    system = first_system(sim)
    assert get(sim, system).json()["PowerState"] == "On"
    answer = requests.post(sim.url + reset_target(sim, system), auth=AUTH, timeout=5,
                           json={"ResetType": "ForceOff"})
    assert answer.status_code == 204
    assert get(sim, system).json()["PowerState"] == "PoweringOff"
    wait_until(lambda: get(sim, system).json()["PowerState"] == "Off")
    log = get(sim, system).json()["LogServices"]["@odata.id"]
    service = get(sim, log).json()["Members"][0]["@odata.id"]
    entries = get(sim, get(sim, service).json()["Entries"]["@odata.id"]).json()["Members"]
    newest = get(sim, entries[-1]["@odata.id"]).json()
    assert newest["Message"] == "System power off"


def test_reset_type_outside_the_allowable_values_is_refused(sim):
    system = first_system(sim)
    answer = requests.post(sim.url + reset_target(sim, system), auth=AUTH, timeout=5,
                           json={"ResetType": "PowerCycle"})  # not in this mockup's list
    assert answer.status_code == 400
    assert "PowerCycle" in answer.json()["error"]["message"]
    missing = requests.post(sim.url + reset_target(sim, system), auth=AUTH, timeout=5, json={})
    assert missing.status_code == 400 and "ResetType" in missing.json()["error"]["message"]


def test_once_override_and_pending_bios_take_effect_at_the_next_boot(sim):
    system = first_system(sim)
    document = get(sim, system).json()
    bios_path = document["Bios"]["@odata.id"]
    settings = get(sim, bios_path).json()["@Redfish.Settings"]["SettingsObject"]["@odata.id"]
    patched = requests.patch(sim.url + settings, auth=AUTH, timeout=5,
                             json={"Attributes": {"PowerProfile": "PowerSaver"}})
    assert patched.status_code == 204
    patched = requests.patch(sim.url + system, auth=AUTH, timeout=5,
                             json={"Boot": {"BootSourceOverrideTarget": "Cd",
                                            "BootSourceOverrideEnabled": "Once"}})
    assert patched.status_code == 204
    assert get(sim, bios_path).json()["Attributes"]["PowerProfile"] == "MaxPerf"

    requests.post(sim.url + reset_target(sim, system), auth=AUTH, timeout=5,
                  json={"ResetType": "ForceRestart"})
    wait_until(lambda: get(sim, bios_path).json()["Attributes"]["PowerProfile"]
               == "PowerSaver")
    boot = get(sim, system).json()["Boot"]
    assert boot["BootSourceOverrideEnabled"] == "Disabled"
    assert get(sim, settings).json()["Attributes"]["PowerProfile"] == "PowerSaver"


@pytest.mark.parametrize("attributes, status, said", [
    ({"PowerProfile": "Turbo"}, 400, "not in the list of acceptable values"),
    ({"NoSuchKnob": "On"}, 400, "not in the attribute registry"),
    ({"ProcCoreDisable": 99}, 400, "not in the supported range 0-7"),
])
def test_bios_settings_are_checked_against_the_registry(sim, attributes, status, said):
    system = first_system(sim)
    bios = get(sim, get(sim, system).json()["Bios"]["@odata.id"]).json()
    settings = bios["@Redfish.Settings"]["SettingsObject"]["@odata.id"]
    before = get(sim, settings).json()["Attributes"]
    answer = requests.patch(sim.url + settings, auth=AUTH, timeout=5,
                            json={"Attributes": attributes})
    assert answer.status_code == status and said in answer.json()["error"]["message"]
    assert get(sim, settings).json()["Attributes"] == before, "nothing was written"


def test_the_registry_is_published_where_the_bios_names_it(sim):
    system = first_system(sim)
    name = get(sim, get(sim, system).json()["Bios"]["@odata.id"]).json()["AttributeRegistry"]
    files = get(sim, "/redfish/v1/Registries").json()["Members"]
    file = next(get(sim, m["@odata.id"]).json() for m in files
                if m["@odata.id"].endswith(name))
    registry = get(sim, file["Location"][0]["Uri"]).json()
    names = {a["AttributeName"] for a in registry["RegistryEntries"]["Attributes"]}
    assert "ProcTurboMode" in names and registry["Id"] == name


def test_patch_with_a_stale_etag_is_refused(sim):
    system = first_system(sim)
    stale = get(sim, system).headers["ETag"]
    requests.patch(sim.url + system, auth=AUTH, timeout=5, json={"AssetTag": "rack-7"})
    answer = requests.patch(sim.url + system, auth=AUTH, timeout=5, json={"AssetTag": "x"},
                            headers={"If-Match": stale})
    assert answer.status_code == 412
    fresh = get(sim, system)
    assert fresh.json()["AssetTag"] == "rack-7"
    assert requests.patch(sim.url + system, auth=AUTH, timeout=5, json={"AssetTag": "y"},
                          headers={"If-Match": fresh.headers["ETag"]}).status_code == 204
    unwritable = requests.patch(sim.url + system, auth=AUTH, timeout=5,
                                json={"SerialNumber": "x"})
    assert unwritable.status_code == 400


def test_a_change_on_one_bmc_is_served_by_it_alone(redfish_bmcs):
    """BMCs of one mockup answer alike until one of them changes: then that one, and only
    that one, serves the changed document, under a new ETag, at every read."""
    pair = redfish_bmcs.fresh(count=2)
    changed, other = (SimulatedRedfish([url], [bmc])
                      for url, bmc in zip(pair.urls, pair.bmcs, strict=True))
    system = first_system(changed)
    before = [get(sim, system) for sim in (changed, other)]
    assert before[0].content == before[1].content
    assert before[0].headers["ETag"] == before[1].headers["ETag"]
    assert before[0].headers["Content-Type"].startswith("application/json")
    assert requests.patch(changed.url + system, auth=AUTH, timeout=5,
                          json={"AssetTag": "rack-7"}).status_code == 204
    for _ in range(2):
        after = [get(sim, system) for sim in (changed, other)]
        assert after[0].json()["AssetTag"] == "rack-7"
        assert after[0].headers["ETag"] != before[0].headers["ETag"]
        assert after[1].content == before[1].content
        assert after[1].headers["ETag"] == before[1].headers["ETag"]


def test_simple_update_runs_a_task_then_changes_the_version(sim, images):
    root = get(sim, "/redfish/v1").json()
    service = get(sim, root["UpdateService"]["@odata.id"]).json()
    target = service["Actions"]["#UpdateService.SimpleUpdate"]["target"]
    inventory = get(sim, service["FirmwareInventory"]["@odata.id"]).json()["Members"]
    bmc = next(m["@odata.id"] for m in inventory if m["@odata.id"].endswith("BMC"))
    started = requests.post(sim.url + target, auth=AUTH, timeout=10,
                            json={"ImageURI": images("bmc-1.46.0.bin"),
                                  "Targets": [bmc]})
    assert started.status_code == 202
    monitor = started.headers["Location"]
    running = get(sim, monitor)
    assert running.status_code == 202 and running.json()["TaskState"] == "Running"
    wait_until(lambda: get(sim, monitor).status_code == 200)
    done = get(sim, monitor).json()
    assert done["TaskState"] == "Completed" and done["PercentComplete"] == 100
    assert get(sim, bmc).json()["Version"] == "1.46.0"
    manager = get(sim, "/redfish/v1/Managers").json()["Members"][0]["@odata.id"]
    assert get(sim, manager).json()["FirmwareVersion"] == "1.46.0"


def test_an_update_whose_image_cannot_be_fetched_ends_in_exception(sim):
    service = get(sim, get(sim, "/redfish/v1").json()["UpdateService"]["@odata.id"]).json()
    target = service["Actions"]["#UpdateService.SimpleUpdate"]["target"]
    nowhere = f"http://127.0.0.1:{free_port()}/bmc-9.9.bin"
    monitor = requests.post(sim.url + target, auth=AUTH, timeout=10,
                            json={"ImageURI": nowhere}).headers["Location"]
    wait_until(lambda: get(sim, monitor).status_code == 200)
    task = get(sim, monitor).json()
    assert task["TaskState"] == "Exception" and "could not be fetched" in \
        task["Messages"][0]["Message"]


def test_virtual_media_fetches_the_image(sim, images):
    system = first_system(sim)
    slots = get(sim, get(sim, system).json()["VirtualMedia"]["@odata.id"]).json()["Members"]
    cd = slots[0]["@odata.id"]
    held = requests.patch(sim.url + cd, auth=AUTH, timeout=10,
                          json={"Image": images("live.iso"), "Inserted": True})
    assert held.status_code == 409, "the mockup's CD already holds an image"
    assert requests.patch(sim.url + cd, auth=AUTH, timeout=10,
                          json={"Image": None, "Inserted": False}).status_code == 204
    missing = requests.patch(sim.url + cd, auth=AUTH, timeout=10,
                             json={"Image": images("absent.iso"), "Inserted": True})
    assert missing.status_code == 400 and "could not be fetched" in missing.text
    assert requests.patch(sim.url + cd, auth=AUTH, timeout=10,
                          json={"Image": images("live.iso"),
                                "Inserted": True}).status_code == 204
    slot = get(sim, cd).json()
    assert slot["Inserted"] and slot["ImageName"] == "live.iso"


# --- faults -----------------------------------------------------------------------------


def inject(sim: SimulatedRedfish, **fault) -> None:
    answer = requests.post(sim.url + "/_sim/faults", json=fault, timeout=5)
    assert answer.status_code == 201, answer.text


def test_faults_answer_as_injected_then_stop(sim):
    inject(sim, kind="error", status=503, path="/Systems$", count=1)
    assert get(sim, "/redfish/v1/Systems").status_code == 503
    assert get(sim, "/redfish/v1/Systems").status_code == 200, "count=1: once only"

    inject(sim, kind="malformed", path="/Chassis$", count=1)
    with pytest.raises(json.JSONDecodeError):
        get(sim, "/redfish/v1/Chassis").json()

    inject(sim, kind="drop", method="GET", path="/Managers$", count=1)
    with pytest.raises(requests.ConnectionError):
        get(sim, "/redfish/v1/Managers")

    inject(sim, kind="hang", path="/UpdateService$", seconds=30, count=1)
    with pytest.raises(requests.Timeout):
        get(sim, "/redfish/v1/UpdateService", timeout=0.5)

    inject(sim, kind="latency", seconds=0.3, path="/TaskService$", count=2)
    assert get(sim, "/redfish/v1/TaskService").status_code == 200  # slower, still answered
    (latency,) = requests.get(sim.url + "/_sim/faults", timeout=5).json()
    assert (latency["kind"], latency["count"]) == ("latency", 1), "that request met it"

    requests.delete(sim.url + "/_sim/faults", timeout=5)
    assert requests.get(sim.url + "/_sim/faults", timeout=5).json() == []


def test_a_bad_fault_is_refused_with_the_reason(sim):
    answer = requests.post(sim.url + "/_sim/faults", json={"kind": "gremlins"}, timeout=5)
    assert answer.status_code == 400 and "use one of latency" in answer.text
    answer = requests.post(sim.url + "/_sim/faults", json={"kind": "error", "colour": 1},
                           timeout=5)
    assert answer.status_code == 400 and "colour" in answer.text


def test_manager_reset_makes_the_bmc_go_away_for_a_while(redfish_bmcs):
    sim = redfish_bmcs.fresh(BmcOptions(reset_seconds=0.5))
    manager = get(sim, "/redfish/v1/Managers").json()["Members"][0]["@odata.id"]
    target = get(sim, manager).json()["Actions"]["#Manager.Reset"]["target"]
    assert requests.post(sim.url + target, auth=AUTH, json={"ResetType": "GracefulRestart"},
                         timeout=5).status_code == 204
    with pytest.raises(requests.ConnectionError):
        get(sim, "/redfish/v1/Systems")
    wait_until(lambda: _answers(sim), timeout=5, what="the BMC back after its reset")


def _answers(sim: SimulatedRedfish) -> bool:
    try:
        return get(sim, "/redfish/v1/Systems").status_code == 200
    except requests.ConnectionError:
        return False


def test_the_request_log_records_what_the_bmc_received(sim):
    requests.delete(sim.url + "/_sim/requests", timeout=5)
    system = first_system(sim)
    requests.patch(sim.url + system, auth=AUTH, json={"AssetTag": "A1"}, timeout=5)
    received = requests.get(sim.url + "/_sim/requests", timeout=5).json()
    assert ["PATCH", system, {"AssetTag": "A1"}] in received


def test_the_connections_that_carried_requests_are_counted(sim):
    """Three requests over one kept-alive connection, one over a connection of its own; the
    control API's own connections are not counted, and forgetting the requests forgets them."""
    requests.delete(sim.url + "/_sim/requests", timeout=5)
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(sim.url + "/redfish/v1/", timeout=5).status_code == 200
    get(sim, "/redfish/v1/Systems", headers={"Connection": "close"})
    assert requests.get(sim.url + "/_sim/connections", timeout=5).json() == {"count": 2}
    requests.delete(sim.url + "/_sim/requests", timeout=5)
    assert requests.get(sim.url + "/_sim/connections", timeout=5).json() == {"count": 0}


# --- other mockups ------------------------------------------------------------------------


def test_another_mockup_is_served_by_following_its_links(redfish_bmcs, other_mockup, images):
    sim = redfish_bmcs.fresh(BmcOptions(power_delay=0), mockup=other_mockup)
    a, b = (m["@odata.id"] for m in get(sim, "/redfish/v1/Systems").json()["Members"])
    requests.post(sim.url + get(sim, a).json()["Actions"]["#ComputerSystem.Reset"]["target"],
                  auth=AUTH, json={"ResetType": "On"}, timeout=5)
    assert get(sim, a).json()["PowerState"] == "On"
    assert get(sim, b).json()["PowerState"] == "Off", "each system has its own state"
    slot = "/redfish/v1/Managers/mgr/VM/usb0"
    inserted = requests.post(sim.url + slot + "/Actions/Insert", auth=AUTH, timeout=10,
                             json={"Image": images("live.iso")})
    assert inserted.status_code == 204 and get(sim, slot).json()["Inserted"] is True
    requests.post(sim.url + slot + "/Actions/Eject", auth=AUTH, json={}, timeout=5)
    assert get(sim, slot).json()["Inserted"] is False


def test_a_directory_that_is_no_mockup_is_refused(tmp_path):
    with pytest.raises(MockupError, match="no index.json"):
        Mockup.load(tmp_path)


def test_the_shipped_mockup_carries_its_licence():
    assert "BSD 3-Clause" in (SHIPPED / "LICENSE.md").read_text()


def test_run_as_a_command_it_says_ready_and_stops_on_sigterm(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "edgeplane_dev.redfish_sim", "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline().decode().split() == ["ready", str(port)]
        assert requests.get(f"http://127.0.0.1:{port}/redfish/v1", timeout=5).ok
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()
    shutil.rmtree(tmp_path, ignore_errors=True)
    bad = subprocess.run([sys.executable, "-m", "edgeplane_dev.redfish_sim", "--port",
                          str(free_port()), "--mockup", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "is not a Redfish mockup" in bad.stderr
