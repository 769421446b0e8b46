"""``twistd imagefactory``: command-line options and makeService.

Options are made from the table in ``imgfac_twisted.config``; the command
line wins over the JSON config file, which wins over the defaults.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from .config import DEFAULT_CONFIG_PATH, OPTIONS, Config, Option, merge_config, read_config_file
from .errors import ConfigError


def _flag_name(option: Option) -> str:
    """The command-line flag of a bool option: its name, or ``no_<name>`` when it is on by default."""
    return f"no_{option.name}" if option.default else option.name


class Options(usage.Options):
    """The options of ``twistd imagefactory``."""

    synopsis = "[options]"
    longdesc = (
        "Builds operating-system images from TDL templates and pushes them to clouds. "
        "Every option can also be set in the JSON config file, by its name without dashes."
    )
    # A switch that is on by default is turned off on the command line with --no_<name>.
    optFlags = [[_flag_name(option), None, option.help] for option in OPTIONS if option.cli and option.kind == "bool"]
    optParameters = [["config", None, None, f"JSON config file [default: {DEFAULT_CONFIG_PATH}]"]] + [
        [option.name, None, None, f"{option.help} [default: {option.default}]"]
        for option in OPTIONS
        if option.cli and option.kind != "bool"
    ]

    config: Config

    def postOptions(self) -> None:
        """Read the config file and merge it under the command line; report all mistakes at once."""
        named = self["config"] is not None
        given: dict[str, Any] = {}
        for option in OPTIONS:
            if not option.cli:
                continue
            if option.kind == "bool":
                if self[_flag_name(option)]:
                    given[option.name] = not option.default
            elif self[option.name] is not None:
                given[option.name] = self[option.name]
        path = self["config"] if named else DEFAULT_CONFIG_PATH
        try:
            self.config = merge_config(read_config_file(path, named), given, source=f"config file {path}")
        except ConfigError as error:
            raise usage.UsageError(error.message) from None


def makeService(options: Options) -> IService:
    """The daemon's root service."""
    from twisted.internet import reactor

    from .service import make_service

    try:
        return make_service(options.config, reactor)
    except ConfigError as error:
        raise SystemExit(f"imagefactory: {error.message}") from None
