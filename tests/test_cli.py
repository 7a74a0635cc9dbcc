"""The operator CLI: its config file, step syntax and errors (the API path runs in test_e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from edgeplane_cli.config import Context, config_path, load_context, save_context
from edgeplane_cli.rollouts import parse_step

BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPLANE_HOME", str(tmp_path))
    monkeypatch.delenv("EDGEPLANE_API_URL", raising=False)
    monkeypatch.delenv("EDGEPLANE_TOKEN", raising=False)
    return tmp_path


def test_steps_are_written_as_task_and_key_values():
    assert parse_step("boot.override target=pxe mode=once") == {
        "task": "boot.override", "params": {"target": "pxe", "mode": "once"}}
    assert parse_step("power.ensure") == {"task": "power.ensure", "params": {}}
    with pytest.raises(typer.BadParameter, match="'pxe' in step .* is not key=value"):
        parse_step("boot.override pxe")


def test_contexts_are_saved_like_a_kubeconfig_and_flags_override(home):
    save_context("local", Context("http://127.0.0.1:9", "t0ken"))
    save_context("prod", Context("https://api.example.net", "secret"))
    data = json.loads(config_path().read_text())
    assert data["current-context"] == "prod" and set(data["contexts"]) == {"local", "prod"}
    assert config_path().stat().st_mode & 0o077 == 0, "the token file is private"
    assert load_context() == Context("https://api.example.net", "secret")
    assert load_context(api_url="http://other") == Context("http://other", "secret")


def test_without_config_the_cli_says_what_to_do(home):
    env = {"EDGEPLANE_HOME": str(home), "PATH": str(BIN)}
    result = subprocess.run([str(BIN / "edgeplane"), "sites", "list"], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 2
    assert "edgeplane dev up" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_api_is_one_clear_line(home):
    env = {"EDGEPLANE_HOME": str(home), "PATH": str(BIN)}
    result = subprocess.run([str(BIN / "edgeplane"), "rollout", "status", "r-1",
                             "--api-url", "http://127.0.0.1:1", "--token", "x"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == ("edgeplane: cannot reach the API at http://127.0.0.1:1: "
                                     "ConnectionError")


def test_rollout_start_needs_sites_or_a_tag(home):
    env = {"EDGEPLANE_HOME": str(home), "PATH": str(BIN)}
    result = subprocess.run([str(BIN / "edgeplane"), "rollout", "start", "--step",
                             "power.ensure state=on", "--api-url", "http://x", "--token", "t"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "give --site (one or more) or --tag" in result.stderr
