"""Merging defaults, the JSON config file and the command line."""

import json
from pathlib import Path

import pytest

from imgfac_twisted.config import Config, merge_config, read_config_file
from imgfac_twisted.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "imagefactory" / "imagefactory.conf"


def test_defaults():
    """With nothing given the daemon gets the spec's defaults: port 8075, TLS and OAuth on, REST off."""
    config = merge_config({}, {})
    assert (config.port, config.no_ssl, config.no_oauth, config.rest) == (8075, False, False, False)
    assert config.state_dir == "/var/lib/imagefactory" and config.address == "0.0.0.0"


def test_command_line_wins_over_the_file():
    """An option on the command line overrides the same option in the file."""
    config = merge_config({"port": 9000, "rest": True}, {"port": "9001"})
    assert (config.port, config.rest) == (9001, True)


def test_every_mistake_is_reported_at_once():
    """Unknown keys and wrong types in the file and on the command line come in one error."""
    with pytest.raises(ConfigError) as caught:
        merge_config(
            {"prot": 1, "rest": "yes", "port": "abc", "max_concurrent_builds": 0, "clients": []},
            {"template_fetch_timeout": "soon"},
        )
    message = caught.value.message
    for word in ("'prot'", "'rest'", "'port'", "'max_concurrent_builds'", "'clients'", "'template_fetch_timeout'"):
        assert word in message


def test_port_range():
    """A port outside 0..65535 is refused."""
    with pytest.raises(ConfigError, match="port"):
        merge_config({"port": 70000}, {})


def test_secrets_never_show():
    """Client secrets are neither in the repr nor in the redacted settings; a bad secret is named by its key."""
    config = merge_config({"clients": {"client1": "TOPSECRET"}}, {})
    assert "TOPSECRET" not in repr(config) and "TOPSECRET" not in json.dumps(config.redacted())
    with pytest.raises(ConfigError) as caught:
        merge_config({"clients": {"client1": 42, "client2": "TOPSECRET"}}, {})
    assert "client1" in caught.value.message and "TOPSECRET" not in caught.value.message


def test_missing_files(tmp_path):
    """A missing default file is fine; a missing named file, bad JSON or a non-object is an error naming the path."""
    assert read_config_file(str(tmp_path / "none.conf"), named=False) == {}
    with pytest.raises(ConfigError, match="none.conf"):
        read_config_file(str(tmp_path / "none.conf"), named=True)
    broken = tmp_path / "broken.conf"
    broken.write_text("{nope")
    with pytest.raises(ConfigError, match="broken.conf.*JSON"):
        read_config_file(str(broken), named=True)
    broken.write_text("[]")
    with pytest.raises(ConfigError, match="object"):
        read_config_file(str(broken), named=True)


def test_the_sample_config_is_valid():
    """The commented sample in etc/ is accepted as it stands (underscore keys are comments)."""
    config = merge_config(read_config_file(str(SAMPLE), named=True), {})
    assert isinstance(config, Config) and config.rest and config.clients


def test_amqp_password_is_redacted():
    """The broker password in amqp_url never shows in the logged settings."""
    config = merge_config({"amqp_url": "amqp://user:pa55word@127.0.0.1:5672/%2F"}, {})
    assert config.redacted()["amqp_url"] == "amqp://user:***@127.0.0.1:5672/%2F"
    assert "pa55word" not in repr(config)


def test_a_switch_on_by_default_is_turned_off_with_no_flag(tmp_path):
    """``boot_test`` is on unless ``--no_boot_test`` is given; a switch off by default keeps its own name
    (``--rest``); the config file's value stands when the command line says nothing."""
    from imgfac_twisted.tap import Options

    config_file = tmp_path / "imagefactory.conf"
    config_file.write_text(json.dumps({"boot_test": False}))
    empty = tmp_path / "empty.conf"
    empty.write_text("{}")

    def parsed(*args):
        options = Options()
        options.parseOptions(list(args))
        return options.config

    assert parsed("--config", str(empty)).boot_test is True
    off = parsed("--config", str(empty), "--no_boot_test", "--rest")
    assert (off.boot_test, off.rest) == (False, True)
    assert parsed("--config", str(config_file)).boot_test is False
    usage_text = str(Options())
    assert "--no_boot_test " in usage_text and "--boot_test " not in usage_text


PG = "postgresql://factory:pw@db.example:5432/imagefactory"
FERNET_KEY = "x" * 43 + "="


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"store_url": "mysql://x"}, "option 'store_url' must be 'sqlite:' or postgresql://"),
        ({"store_url": PG, "job_key": FERNET_KEY}, "needs 'amqp_url'"),
        ({"store_url": PG, "amqp_url": "amqp://g:g@h/"}, "needs 'job_key'"),
        ({"job_key": "short"}, "option 'job_key' must be a Fernet key"),
    ],
)
def test_options_that_do_not_go_together_are_refused(values: dict[str, str], expected: str) -> None:
    """PostgreSQL needs a broker (the work queue) and a job key; the store URL and the key are checked."""
    with pytest.raises(ConfigError) as raised:
        merge_config(values, {})
    assert expected in str(raised.value)
    assert "pw@" not in str(raised.value)


@pytest.mark.parametrize(
    "rest,worker,works",
    [(True, False, False), (True, True, True), (False, False, True), (False, True, True)],
)
def test_roles_on_postgresql(rest: bool, worker: bool, works: bool) -> None:
    """--rest alone is an API node; --rest --worker also works; without --rest a node is a worker."""
    config = merge_config(
        {"store_url": PG, "amqp_url": "amqp://g:g@h/", "job_key": FERNET_KEY, "rest": rest, "worker": worker}, {}
    )
    assert (config.on_postgresql, config.serves_work_queue, config.does_work) == (True, True, works)


def test_on_sqlite_every_node_does_its_own_work() -> None:
    """The embedded default: no work queue, and --rest serves the API and does the work."""
    config = merge_config({"rest": True}, {})
    assert (config.on_postgresql, config.serves_work_queue, config.does_work) == (False, False, True)
