"""The daemon's settings: defaults in code, then the JSON file, then the command line.

Every option is declared once, as a field of ``Config`` (its type, default,
help and limits); ``OPTIONS`` is made from those fields, and the command-line
parser and the config file checker from ``OPTIONS``, so they cannot drift.
All mistakes are collected and reported together in one ConfigError.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .jsonfile import read_json_object
from .redaction import redact_url

DEFAULT_CONFIG_PATH = "/etc/imagefactory/imagefactory.conf"
DEFAULT_STATE_DIR = "/var/lib/imagefactory"


@dataclass(frozen=True)
class Option:
    """One setting: its name (as in the file), kind, default and help."""

    name: str
    kind: str  # "bool", "int", "float", "str", "path", "secrets"
    default: Any
    help: str
    secret: bool = False
    #: Settable on the command line too (``clients`` lives only in the file).
    cli: bool = True
    optional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    #: The only values allowed, when the option has a fixed set.
    choices: tuple[str, ...] | None = None


def _option_of(field_: dataclasses.Field[Any]) -> Option:
    """The Option a Config field declares (see :func:`setting`)."""
    declared: dict[str, Any] = dict(field_.metadata[_SETTING])
    kind = declared.pop("kind") or _KIND_OF_TYPE.get(str(field_.type))
    if kind is None:
        raise TypeError(f"Config.{field_.name}: give setting() a kind for the type {field_.type}")
    default: Any = field_.default
    if field_.default_factory is not dataclasses.MISSING:
        default = field_.default_factory()
    return Option(name=field_.name, kind=kind, default=default, optional=default is None, **declared)


_SETTING = "imgfac_twisted.setting"
#: The kind of an option whose type says it all; others name theirs (``path``, ``secrets``, ...).
_KIND_OF_TYPE = {"bool": "bool", "int": "int", "float": "float", "str": "str", "str | None": "str"}


def setting(
    default: Any,
    help: str,
    *,
    kind: str | None = None,
    secret: bool = False,
    cli: bool = True,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A Config field declaring its option: default, help and limits, all in one place.

    ``kind`` is taken from the field's type unless given; a default of None
    makes the option optional; a secret is left out of the Config's repr.
    """
    declared = {
        "kind": kind,
        "help": help,
        "secret": secret,
        "cli": cli,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
    }
    metadata = {_SETTING: declared}
    if isinstance(default, dict):
        return field(default_factory=dict, repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Config:
    """The merged settings the daemon runs with; each field declares its option (``OPTIONS`` is made from them)."""

    rest: bool = setting(False, "Serve the REST API over HTTP(S).")
    port: int = setting(8075, "Port the REST API listens on.", minimum=0, maximum=65535)
    address: str = setting("0.0.0.0", "Address the REST API listens on.")
    no_ssl: bool = setting(False, "Serve plain HTTP instead of HTTPS.")
    ssl_pem: str | None = setting(
        None,
        "PEM file with the TLS certificate and key (default: a self-signed one generated in the state directory).",
        kind="path",
    )
    no_oauth: bool = setting(False, "Accept write requests without OAuth signatures.")
    state_dir: str = setting(DEFAULT_STATE_DIR, "Directory for the store, images and generated key.", kind="path")
    clients: Mapping[str, str] = setting(
        {}, "OAuth consumer keys and their shared secrets.", kind="secrets", secret=True, cli=False
    )
    oauth_timestamp_window: int = setting(
        300, "Seconds an OAuth timestamp may be away from the server's clock.", minimum=1
    )
    oauth_require_body_hash: bool = setting(
        False, "Refuse signed request bodies other than forms (JSON) that carry no oauth_body_hash."
    )
    max_body_bytes: int = setting(2 * 1024 * 1024, "Largest request body accepted, in bytes.", minimum=1024)
    template_fetch_timeout: float = setting(30.0, "Seconds allowed to fetch a template given as a URL.", minimum=0.1)
    max_concurrent_builds: int = setting(4, "Builds that run at once; the rest wait PENDING.", minimum=1)
    max_concurrent_pushes: int = setting(4, "Pushes that run at once; the rest wait PENDING.", minimum=1)
    max_concurrent_local_sessions: int = setting(
        2, "OS installs (virtual machines, local sessions) that run at once; the rest wait PENDING.", minimum=1
    )
    install_download_timeout: float = setting(
        600.0, "Seconds allowed to download one installer file (kernel, initrd, ISO).", minimum=1
    )
    install_download_max_bytes: int = setting(
        2 * 1024**3, "Largest installer file (kernel, initrd, ISO) downloaded, in bytes.", minimum=1
    )
    install_iso_dir: str | None = setting(
        None,
        "Folder of local ISOs a template may name as <iso>file:NAME</iso> (default: none, only http(s) ISOs).",
        kind="path",
    )
    libvirt_uri: str = setting("qemu:///system", "libvirt connection URI the OS installs run on.")
    libvirt_domain_type: str = setting(
        "kvm",
        "libvirt domain type of install VMs: kvm, or qemu (software emulation, for hosts without usable KVM).",
        choices=("kvm", "qemu"),
    )
    install_inactivity_timeout: float = setting(
        300.0, "Seconds an OS install may go without writing to its disk before it fails.", minimum=1
    )
    install_timeout: float = setting(3600.0, "Seconds a whole OS install may take.", minimum=1)
    install_memory_mib: int = setting(2048, "Memory of an install VM, in MiB.", minimum=256)
    boot_test: bool = setting(
        True,
        "Boot every real-OS base image once (in a throwaway overlay) to a login prompt "
        "on its serial console before its targets are made; off: images are not boot-tested.",
    )
    boot_test_timeout: float = setting(
        600.0, "Seconds a boot test may take to reach a login prompt before the build fails.", minimum=1
    )
    cloud_threads: int = setting(8, "Threads for blocking cloud SDK calls.", minimum=1)
    provider_dir: str = setting(
        "/etc/imagefactory/providers",
        "Folder of provider definition files (one JSON file per EC2-compatible endpoint, OpenStack cloud or vCenter).",
        kind="path",
    )
    mock_duration: float = setting(3.0, "Seconds a mock build or push takes.", minimum=0)
    access_log: str | None = setting(None, "File for an HTTP access log (default: none).", kind="path")
    amqp_url: str | None = setting(
        None,
        "Publish builder events to this AMQP broker, "
        "e.g. amqp://guest:guest@127.0.0.1:5672/%2F (default: in-process events only).",
        secret=True,
    )
    amqp_exchange: str = setting("imagefactory", "Durable topic exchange the events are published on.")
    store_url: str = setting(
        "sqlite:",
        "Where the factory's state lives: 'sqlite:' (a file in state_dir, the default) or "
        "postgresql://user:password@host:port/db (shared by several nodes; needs amqp_url).",
        secret=True,
    )
    worker: bool = setting(
        False, "On PostgreSQL: do build and push work (with --rest an API node also works; without, it does none)."
    )
    worker_id: str | None = setting(
        None, "This node's name in claims and builder details (default: host name and pid)."
    )
    amqp_work_queue: str = setting(
        "imagefactory.work", "Durable queue the build and push jobs go through (PostgreSQL)."
    )
    worker_heartbeat: float = setting(
        10.0, "Seconds between a worker's heartbeats on the builders it runs.", minimum=0.1
    )
    max_attempts: int = setting(2, "Times a builder is started before a lost worker's builder is failed.", minimum=1)
    job_key: str | None = setting(
        None,
        "On PostgreSQL: the Fernet key every node shares; a push's credentials travel to its worker encrypted "
        "with it (config file only; make one with: python3 -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())').",
        secret=True,
        cli=False,
    )
    image_store: str | None = setting(
        None,
        "Where finished target images are kept: a directory (default: <state_dir>/images; a shared mount "
        "for several nodes) or s3://bucket/prefix.",
    )
    image_store_endpoint: str | None = setting(None, "S3 endpoint URL of an s3:// image_store (default: AWS).")
    image_store_region: str | None = setting(None, "Region of an s3:// image_store.")
    image_store_access_key_id: str | None = setting(None, "Access key id of an s3:// image_store.")
    image_store_secret_access_key: str | None = setting(
        None, "Secret access key of an s3:// image_store (config file only).", secret=True, cli=False
    )
    conductor: bool = setting(False, "Also serve the Conductor image API (XML, Basic auth) at /conductor/api/.")
    conductor_users: Mapping[str, str] = setting(
        {},
        "Conductor API users and their bcrypt password hashes (as 'htpasswd -nB' writes them).",
        kind="users",
        secret=True,
        cli=False,
    )
    provider_accounts: Mapping[str, Mapping[str, str]] = setting(
        {},
        'Provider accounts of the Conductor API: name to {"provider": ..., "credentials": <credentials XML file>}.',
        kind="accounts",
        cli=False,
    )

    @property
    def on_postgresql(self) -> bool:
        """True when the state is shared in PostgreSQL (several nodes; roles apply)."""
        return self.store_url.startswith(("postgresql://", "postgres://"))

    @property
    def does_work(self) -> bool:
        """True when this node runs builders: always on SQLite; on PostgreSQL a worker, or a node without --rest."""
        return not self.on_postgresql or self.worker or not self.rest

    @property
    def serves_work_queue(self) -> bool:
        """True when builds and pushes go through the RabbitMQ work queue (PostgreSQL with a broker)."""
        return self.on_postgresql and self.amqp_url is not None

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for a log: secrets replaced by a count."""
        shown = dataclasses.asdict(self)
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.secret and isinstance(value, dict):
                shown[option.name] = f"<{len(value)} redacted>"
            elif option.secret and isinstance(value, str):
                # A URL (or sqlite:) keeps all but its password; any other secret is only said to be set.
                shown[option.name] = redact_url(value) if ":" in value else "<redacted>"
        return shown


#: Every option, in the order of Config's fields: the command-line parser and the file checker are made from it.
OPTIONS: tuple[Option, ...] = tuple(_option_of(f) for f in dataclasses.fields(Config))
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _check_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("must be an integer")
    return value


def _check_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("must be a number")
    return float(value)


def _check_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("must be a non-empty string")
    return value


def _check_secrets(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("must be an object mapping consumer keys to secrets")
    bad = [key for key, secret in value.items() if not isinstance(secret, str) or not secret]
    if bad:
        # Name the keys, never the secrets.
        raise TypeError(f"secrets must be non-empty strings (check {', '.join(map(repr, sorted(bad)))})")
    return dict(value)


BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")


def _check_users(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("must be an object mapping user names to bcrypt hashes")
    bad = sorted(
        user
        for user, hashed in value.items()
        if not user
        or ":" in user
        or not isinstance(hashed, str)
        or not hashed.startswith(BCRYPT_PREFIXES)
        or len(hashed) != 60
    )
    if bad:
        # Name the users, never the hashes.
        raise TypeError(
            "needs user names without ':' and bcrypt hashes ($2y$/$2b$, as 'htpasswd -nB' writes) "
            f"(check {', '.join(map(repr, bad))})"
        )
    return dict(value)


def _check_accounts(value: Any) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict):
        raise TypeError('must be an object mapping account names to {"provider": ..., "credentials": ...}')
    bad = sorted(
        name
        for name, account in value.items()
        if not name
        or "," in name
        or name != name.strip()
        or not isinstance(account, dict)
        or set(account) != {"provider", "credentials"}
        or not all(isinstance(part, str) and part for part in account.values())
    )
    if bad:
        checked = ", ".join(map(repr, bad))
        raise TypeError(
            'needs account names without commas, each {"provider": <provider name>, '
            f'"credentials": <path of a credentials XML file>}} (check {checked})'
        )
    return {name: dict(account) for name, account in value.items()}


_CHECKERS: dict[str, Callable[[Any], Any]] = {
    "bool": _check_bool,
    "int": _check_int,
    "float": _check_float,
    "str": _check_str,
    "path": _check_str,
    "secrets": _check_secrets,
    "users": _check_users,
    "accounts": _check_accounts,
}


def _parse_cli_text(option: Option, text: str) -> Any:
    """Turn a command-line string into the option's kind."""
    if option.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise TypeError("must be an integer") from None
    if option.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise TypeError("must be a number") from None
    return text


def _validate(option: Option, value: Any) -> Any:
    if value is None and option.optional:
        return None
    checked = _CHECKERS[option.kind](value)
    if option.minimum is not None and checked < option.minimum:
        raise TypeError(f"must be at least {option.minimum:g}")
    if option.maximum is not None and checked > option.maximum:
        raise TypeError(f"must be at most {option.maximum:g}")
    if option.choices is not None and checked not in option.choices:
        raise TypeError(f"must be one of {', '.join(option.choices)}")
    return checked


def read_config_file(path: str, named: bool) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the default file is missing.

    A file named on the command line must exist.
    """
    return read_json_object(path, must_exist=named, error=ConfigError)


def merge_config(file_values: Mapping[str, Any], cli_values: Mapping[str, Any], source: str = "config file") -> Config:
    """Check and merge: defaults, then ``file_values``, then ``cli_values``.

    ``cli_values`` holds only the options given on the command line, as the
    strings (or True for flags) the parser produced.  Every problem found is
    reported in one ConfigError.
    """
    problems: list[str] = []
    settings: dict[str, Any] = {}
    # Keys starting with "_" are comments (JSON has none of its own).
    for key in sorted(name for name in set(file_values) - set(OPTIONS_BY_NAME) if not name.startswith("_")):
        problems.append(f"{source}: unknown option {key!r}")
    for option in OPTIONS:
        for where, values, from_text in ((source, file_values, False), ("command line", cli_values, True)):
            if option.name not in values:
                continue
            value = values[option.name]
            try:
                if from_text and isinstance(value, str):
                    value = _parse_cli_text(option, value)
                settings[option.name] = _validate(option, value)
            except TypeError as error:
                problems.append(f"{where}: option {option.name!r} {error}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    config = Config(**settings)
    problems = _combination_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return dataclasses.replace(config, state_dir=os.path.abspath(config.state_dir))


def _combination_problems(config: Config) -> list[str]:
    """What is wrong with options that are each valid but do not go together."""
    problems = []
    if not config.store_url.startswith(("sqlite:", "postgresql://", "postgres://")):
        problems.append("option 'store_url' must be 'sqlite:' or postgresql://user:password@host:port/db")
    if config.on_postgresql and config.amqp_url is None:
        problems.append(
            "option 'store_url' on PostgreSQL needs 'amqp_url': build and push work goes through a RabbitMQ queue"
        )
    if config.on_postgresql and config.job_key is None:
        problems.append("option 'store_url' on PostgreSQL needs 'job_key': pushes carry credentials to workers")
    if config.job_key is not None and not _is_fernet_key(config.job_key):
        problems.append("option 'job_key' must be a Fernet key: 32 bytes in URL-safe base64 (44 characters)")
    return problems


def _is_fernet_key(text: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(text.encode("ascii"))) == 32 and len(text) == 44
    except (ValueError, UnicodeEncodeError):
        return False
