"""``edgeplane principals`` and ``edgeplane audit`` as an admin types them, against the real
API (chalice local on the store) of a local stack without sites, whose admin token is the
only credential it made."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgeplane_cli.client import ApiClient, ApiError
from edgeplane_cli.config import Context
from edgeplane_dev.stack import LocalStack, state_file

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-access")
    stack = LocalStack(home / "dev", [])
    state = stack.up()
    env = {**os.environ, "EDGEPLANE_API_URL": state.api_url, "EDGEPLANE_TOKEN": state.token,
           "EDGEPLANE_HOME": str(home), "COLUMNS": "200"}
    try:
        yield env, state
    finally:
        stack.down()


def edgeplane(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "edgeplane"), *args], capture_output=True, text=True,
                            env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"edgeplane {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def test_the_stack_makes_an_admin_principal_and_no_shared_token(cloud):
    env, state = cloud
    assert state.token.startswith("ep1.admin.")
    stored = json.loads(state_file(Path(state.directory)).read_text())
    assert stored["token"] == state.token
    assert stat.S_IMODE(state_file(Path(state.directory)).stat().st_mode) == 0o600
    listed = json.loads(edgeplane(env, "principals", "list", "--json").stdout)["principals"]
    assert [(p["name"], p["role"], p["created_by"]) for p in listed
            if p["name"] == "admin"] == [("admin", "admin", "edgeplane dev")]
    with pytest.raises(ApiError) as refused:
        ApiClient(Context(state.api_url, "the-old-shared-token")).get("/sites")
    assert refused.value.status == 401


def test_a_principal_is_made_used_audited_and_revoked(cloud):
    env, state = cloud
    made = edgeplane(env, "principals", "create", "olga", "--role", "operator")
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("ep1.olga.") and "shown once" in made.stdout
    olga = {**env, "EDGEPLANE_TOKEN": token}
    assert edgeplane(olga, "sites", "list").returncode == 0
    refused = edgeplane(olga, "sites", "register", "shop-x", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("edgeplane: API error 403: PUT /sites/{site_id} needs "
                                      "role admin; principal 'olga' has role operator")

    table = edgeplane(env, "principals", "list").stdout
    assert "olga" in table and "operator" in table and token not in table
    edgeplane(env, "principals", "revoke", "olga")
    gone = edgeplane(olga, "sites", "list", check=False)
    assert gone.returncode == 2 and "the token of principal 'olga' was revoked at" in gone.stderr

    found = json.loads(edgeplane(env, "audit", "--principal", "admin", "--since", "1h",
                                 "--json").stdout)
    assert [(r["action"], r["target"]["id"]) for r in found["records"]] == [
        ("revoked", "olga"), ("created", "olga")]
    assert token not in json.dumps(found)
    table = edgeplane(env, "audit", "--limit", "1").stdout
    assert "revoked" in table and "admin (admin)" in table and "more: add --next" in table
    rest = edgeplane(env, "audit", "--next", table.split("--next ")[1].split()[0]).stdout
    assert "principal olga" in rest and "revoked" not in rest


def test_audit_filters_are_checked_before_asking(cloud):
    env, _ = cloud
    result = edgeplane(env, "principals", "create", "x", "--role", "root", check=False)
    assert result.returncode == 2 and "unknown role 'root'" in result.stderr
    result = edgeplane(env, "audit", "--since", "last tuesday", check=False)
    assert result.returncode == 2
    assert "--since 'last tuesday': give ISO 8601" in " ".join(result.stderr.split())
