"""`vllm serve MODEL --plugin retro [--retro-config FILE]`: the form vLLM users type.

Stock vLLM has no `--plugin` flag, but it runs general plugins while it builds its argument
parser, before parsing. The general plugin calls `apply()` there: it takes the two retro flags
out of `sys.argv`, adds the engine flags retro-vllm relies on (unless given) and sets the
environment that loads the endpoint plugin and the adapter resolver.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PLUGIN_FLAG = "--plugin"
CONFIG_FLAG = "--retro-config"


def asks_for_retro(argv: list[str]) -> bool:
    return len(argv) > 1 and argv[1] == "serve" and any(
        a == PLUGIN_FLAG or a.startswith(PLUGIN_FLAG + "=") for a in argv[2:])


def split_retro_flags(argv: list[str]) -> tuple[list[str], list[str], Path | None]:
    """(argv without retro's flags, plugin names asked for, --retro-config). ValueError when a
    flag has no value."""
    rest, plugins, config = [], [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        for flag in (PLUGIN_FLAG, CONFIG_FLAG):
            if arg == flag or arg.startswith(flag + "="):
                if "=" in arg:
                    value = arg.split("=", 1)[1]
                elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    i += 1
                    value = argv[i]
                else:
                    raise ValueError(f"{flag} needs a value")
                if flag == PLUGIN_FLAG:
                    plugins += [p for p in value.split(",") if p]
                else:
                    config = Path(value)
                break
        else:
            rest.append(arg)
        i += 1
    return rest, plugins, config


def rewrite(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The argv vLLM should parse and the environment to set."""
    from retro_vllm.config import load_config
    from retro_vllm.launch.flags import engine_flags, given_flags, plugin_env

    rest, plugins, config_path = split_retro_flags(argv)
    unknown = [p for p in plugins if p != "retro"]
    if unknown:
        raise ValueError(f"--plugin {','.join(unknown)}: only 'retro' is provided here")
    config = load_config(config_path)
    if "--served-model-name" not in given_flags(rest):
        # Adapters are registered for the config's model name; serve under it.
        rest += ["--served-model-name", config.model.name]
    rest += engine_flags(config, rest[2:])
    return rest, plugin_env(config, rest)


def apply() -> None:
    """Rewrite this process's command line in place (vLLM parses `sys.argv` right after)."""
    if not asks_for_retro(sys.argv):
        return
    try:
        argv, env = rewrite(sys.argv)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"retro-vllm: {exc}\n")
        raise SystemExit(2) from None
    sys.argv[:] = argv
    os.environ.update(env)
