"""``trace-usage serve``: run the service under uvicorn.

Every :class:`service.settings.Settings` field is a flag here (``--max-body-bytes``) and an
environment variable (``TRACE_USAGE_MAX_BODY_BYTES``); flags win. The app (and so the
store) is built here, before uvicorn starts, so that a bad setting or a store that cannot
be opened ends the command with one line and a non-zero exit code, not a traceback; the
store takes one process, so there is one uvicorn process.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any, Literal, get_args, get_origin

from service.auth import KeyStore
from service.commands import CommandError, load_settings
from service.commands.keys import print_new_key
from service.settings import Settings

SAMPLE_USER = "dev"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand, one flag per setting."""
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP service",
        description="Serve Weave's usage, ingest and price endpoints over the store in "
        "--data-dir. Flags override TRACE_USAGE_* environment variables.",
    )
    add_setting_flags(parser)
    parser.add_argument(
        "--seed-sample",
        action="store_true",
        help="import the shipped sample traces into an empty store and, when no key exists, "
        "create and print a development key for the sample project",
    )
    parser.set_defaults(func=run)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """``--<name>`` for each setting; unset flags stay None so the environment applies."""
    for name, field in Settings.model_fields.items():
        kwargs: dict[str, Any] = {
            "default": None,
            "help": f"{field.description} (env TRACE_USAGE_{name.upper()}, "
            f"default {field.get_default(call_default_factory=True)})",
        }
        if get_origin(field.annotation) is Literal:
            kwargs["choices"] = get_args(field.annotation)
        else:
            kwargs["type"] = field.annotation
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from flags, falling back to ``TRACE_USAGE_*`` and then the defaults."""
    given = {n: getattr(args, n) for n in Settings.model_fields if getattr(args, n) is not None}
    return load_settings(**given)


def seed(settings: Settings, keys: KeyStore) -> None:
    """Import the sample into an empty store; make and print a key if there is none."""
    from service.importer import SAMPLE_DIR, SAMPLE_PROJECT, seed_sample
    from service.store import CallStore

    store = CallStore(settings.db_path)
    try:
        seed_sample(store, SAMPLE_DIR)
    finally:
        store.close()
    if keys.keys():
        print(
            f"API keys exist in {settings.keys_path} (trace-usage keys list); add one with\n"
            f"  trace-usage keys add --data-dir {settings.data_dir} --user USER "
            f"--projects {SAMPLE_PROJECT}"
        )
        return
    record, secret = keys.add(SAMPLE_USER, [SAMPLE_PROJECT])
    url = f"http://{settings.host}:{settings.port}"
    print("Created a development key for the sample project:")
    print_new_key(record, secret, url)
    print(f"Trace view: open {url}/ and sign in as user {record.user!r} with this key.")


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging plus ours: JSON request lines on stdout, nothing else added."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["line"] = {"format": "%(message)s"}
    config["handlers"]["line"] = {
        "class": "logging.StreamHandler",
        "formatter": "line",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["trace_usage"] = {"handlers": ["default"], "level": level.upper()}
    config["loggers"]["trace_usage.access"] = {
        "handlers": ["line"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def refusal(settings: Settings, keys: KeyStore) -> str | None:
    """Why the server must not start: an open address with no key would serve anyone, and
    the embedded DuckDB file admits one process (whose in-process version counter also keys
    the answer cache), so the service scales with threads, not worker processes."""
    if settings.workers > 1:
        return (
            f"refusing --workers {settings.workers}: the DuckDB store in {settings.db_path} "
            "can be opened by one process only; run one worker (requests run on its threads)"
        )
    if settings.is_loopback or keys.keys():
        return None
    return (
        f"refusing to serve on non-loopback address {settings.host!r}: no API key exists "
        f"in {settings.keys_path}. Create one first:\n"
        f"  trace-usage keys add --data-dir {settings.data_dir} --user USER "
        "--projects ENTITY/PROJECT"
    )


def run(args: argparse.Namespace) -> int:
    """Seed if asked, refuse an open address without keys, then hand over to uvicorn."""
    settings = settings_from_args(args)  # before the imports: a bad setting ends it fast
    import uvicorn

    from service.app import create_app
    from service.store_errors import StoreOpenError

    keys = KeyStore(settings.keys_path)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if args.seed_sample:
            seed(settings, keys)
        problem = refusal(settings, keys)
        if problem:
            raise CommandError(problem)
        app = create_app(settings)
    except (StoreOpenError, OSError) as err:
        raise CommandError(str(err), code=1) from err
    sys.stdout.flush()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=_log_config(settings.log_level),
        log_level=settings.log_level,
        access_log=False,
    )
    return 0
