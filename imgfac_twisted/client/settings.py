"""The CLI's settings: where the daemon is, how to verify it and how to sign writes; its exit codes and errors."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from requests_oauthlib import OAuth1

from ..jsonfile import read_json_object

PROG = "imagefactory-cli"
DEFAULT_URL = "https://localhost:8075"
PREFIX = "/imagefactory"
FINAL_STATUSES = ("COMPLETED", "FAILED")
#: Seconds between two polls of a running builder (``--wait``, ``log -f``).
POLL_INTERVAL = 0.5
#: (connect, read) timeouts of one HTTP request, in seconds.
HTTP_TIMEOUT = (10.0, 60.0)
#: Width of tables when stdout is not a terminal (and COLUMNS is not set):
#: wide enough that ids are never folded.
PIPE_WIDTH = 200

ENV_URL = "IMAGEFACTORY_URL"
ENV_CA_FILE = "IMAGEFACTORY_CA_FILE"
ENV_KEY = "IMAGEFACTORY_KEY"
ENV_SECRET = "IMAGEFACTORY_SECRET"
ENV_DEBUG = "IMAGEFACTORY_CLI_DEBUG"
CONFIG_KEYS = ("url", "key", "secret", "ca_file")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CLIENT = 2
EXIT_SERVER = 3
EXIT_INTERRUPTED = 130

TLS_HINT = (
    "the daemon's certificate is self-signed by default: pass --ca-file <state_dir>/tls/imagefactory.pem "
    f'(or set {ENV_CA_FILE}, or "ca_file" in the config file), or --insecure to skip verification'
)


class CLIError(Exception):
    """An error reported as ``error: message`` (plus an optional hint) with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_CLIENT, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


@dataclass
class Settings:
    """Where the daemon is, how to verify it and how to sign writes."""

    url: str = DEFAULT_URL
    verify: bool | str = True
    key: str | None = None
    secret: str | None = field(default=None, repr=False)
    json: bool = False
    config_path: str = ""
    credentials_source: str = ""

    def oauth(self) -> OAuth1 | None:
        """The signer for writes, or None when no key/secret is configured (unsigned writes)."""
        if not self.key and not self.secret:
            return None
        if not self.key or not self.secret:
            missing = "secret" if self.key else "key"
            raise CLIError(
                f"an OAuth key and secret are both needed, the {missing} is missing ({self.credentials_source})",
                hint=self.credentials_hint(),
            )
        return OAuth1(self.key, self.secret, signature_method="HMAC-SHA1")

    def credentials_hint(self) -> str:
        return (
            f"set {ENV_KEY} and {ENV_SECRET} in the environment, or put "
            f'{{"key": ..., "secret": ...}} in {self.config_path} (chmod 600); '
            "the key and secret are never taken from the command line"
        )


def default_config_path(env: Mapping[str, str]) -> str:
    """``$XDG_CONFIG_HOME/imagefactory/cli.json``, by default ``~/.config/imagefactory/cli.json``."""
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "imagefactory", "cli.json")


def load_config(path: str, explicit: bool, warn: Callable[[str], None] = lambda message: None) -> dict[str, str]:
    """The config file's settings; a missing default file is empty, a missing named one an error."""
    document = read_json_object(path, must_exist=explicit, error=CLIError)
    if not document:
        return {}
    settings = {name: value for name, value in document.items() if not name.startswith("_")}
    unknown = sorted(name for name in settings if name not in CONFIG_KEYS)
    wrong = sorted(name for name, value in settings.items() if name in CONFIG_KEYS and not isinstance(value, str))
    problems = []
    if unknown:
        problems.append(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (known: {', '.join(CONFIG_KEYS)})"
        )
    if wrong:
        problems.append(f"{', '.join(wrong)} must be {'strings' if len(wrong) > 1 else 'a string'}")
    if problems:
        raise CLIError(f"config file {path}: {'; '.join(problems)}")
    if settings.get("secret") and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} holds an OAuth secret and other users can read it: chmod 600 {path}")
    return settings


def normalize_url(url: str) -> str:
    """``scheme://host[:port]`` (a trailing ``/`` or ``/imagefactory`` is dropped)."""
    url = url.strip().rstrip("/")
    if url.endswith(PREFIX):
        url = url[: -len(PREFIX)]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CLIError(f"bad daemon URL {url!r}: expected http(s)://host[:port]")
    return url.rstrip("/")


def resolve_settings(
    args: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None] = lambda message: None
) -> Settings:
    """Merge the command line, the environment and the config file (in that order of precedence)."""
    explicit = args.config is not None
    config_path = os.path.expanduser(args.config) if explicit else default_config_path(env)
    config = load_config(config_path, explicit, warn)

    url = normalize_url(args.url or env.get(ENV_URL) or config.get("url") or DEFAULT_URL)

    verify: bool | str = True
    if args.insecure:
        verify = False
    else:
        ca_file = args.ca_file or env.get(ENV_CA_FILE) or config.get("ca_file")
        if ca_file:
            if not args.ca_file and not env.get(ENV_CA_FILE):
                # Relative to the config file that names it.
                ca_file = os.path.join(os.path.dirname(config_path), os.path.expanduser(ca_file))
            ca_file = os.path.expanduser(ca_file)
            if not os.path.isfile(ca_file):
                raise CLIError(f"CA file {ca_file} not found", hint=TLS_HINT)
            verify = ca_file

    # The key and secret come as a pair, from the environment or from the file.
    if env.get(ENV_KEY) or env.get(ENV_SECRET):
        key, secret, source = env.get(ENV_KEY) or None, env.get(ENV_SECRET) or None, "from the environment"
    else:
        key, secret, source = config.get("key") or None, config.get("secret") or None, f"from {config_path}"

    return Settings(
        url=url,
        verify=verify,
        key=key,
        secret=secret,
        json=bool(args.json),
        config_path=config_path,
        credentials_source=source,
    )
