"""``trace-usage keys add|list|revoke``: manage the API keys of a data directory.

A new key is printed once; only its SHA-256 is stored. Works while a server runs: servers
reload the keys file when it changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.auth import ApiKey, KeyStore
from service.commands import CommandError, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``keys`` subcommand and its actions."""
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a key and print it once")
    add.add_argument("--user", required=True, help="the username that goes with the key")
    add.add_argument(
        "--projects",
        nargs="+",
        required=True,
        metavar="PROJECT",
        help="project ids or fnmatch patterns the key may use, e.g. entity/project 'entity/*'",
    )
    add.set_defaults(func=_add)
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.set_defaults(func=_list)
    revoke = actions.add_parser("revoke", help="delete a key by its id")
    revoke.add_argument("key_id", help="the id shown by `keys add` and `keys list`")
    revoke.set_defaults(func=_revoke)
    for action in (add, listing, revoke):
        action.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="data directory holding keys.json (env TRACE_USAGE_DATA_DIR, default data)",
        )


def _keys(args: argparse.Namespace) -> KeyStore:
    settings = load_settings(**({} if args.data_dir is None else {"data_dir": args.data_dir}))
    return KeyStore(settings.keys_path)


# what a pattern's wildcards become in the sample command of a key with no literal project
_SAMPLE_FILL = {"*": "project", "?": "x"}


def sample_project(record: ApiKey) -> tuple[str, str | None]:
    """A project the key grants, for its sample command, and a note when it is made up:
    the first literal project, else the first pattern with its wildcards filled in.

    Examples
    --------
    >>> key = ApiKey("id", "ada", ("demo/*", "acme/agents"), "", "")
    >>> sample_project(key)
    ('acme/agents', None)
    >>> sample_project(ApiKey("id", "ada", ("demo/*",), "", ""))[0]
    'demo/project'
    """
    literal = next((p for p in record.projects if not any(c in p for c in "*?[")), None)
    if literal is not None:
        return literal, None
    pattern = record.projects[0]
    filled = "".join(_SAMPLE_FILL.get(c, c) for c in pattern)
    candidates = [c for c in (filled, "entity/project", f"{filled}/project") if "/" in c]
    project = next((c for c in candidates if record.grants(c)), None)
    if project is None:
        return candidates[0], f"replace {candidates[0]!r} by a project that {pattern!r} matches"
    return project, f"{project!r} stands for any project that {pattern!r} matches"


def print_new_key(record: ApiKey, secret: str, url: str = "http://127.0.0.1:8000") -> None:
    """The one time a key is shown, with how to use it."""
    print(f"key id:   {record.id}")
    print(f"user:     {record.user}")
    print(f"projects: {' '.join(record.projects)}")
    print(f"api key:  {secret}")
    print("Store the key now: it is not shown again. Authenticate with HTTP Basic auth, e.g.")
    project, note = sample_project(record)
    print(
        f"  curl -u '{record.user}:{secret}' {url}/trace/usage -H 'Content-Type: application/json' "
        f'-d \'{{"project_id": "{project}"}}\''
    )
    if note:
        print(f"  ({note})")


def _add(args: argparse.Namespace) -> int:
    try:
        record, secret = _keys(args).add(args.user, args.projects)
    except ValueError as err:
        raise CommandError(str(err)) from err
    print_new_key(record, secret)
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = _keys(args).keys()
    if not keys:
        print("no keys")
    for k in keys:
        print(f"{k.id}  {k.user}  {k.created_at}  {' '.join(k.projects)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if _keys(args).revoke(args.key_id):
        print(f"revoked key {args.key_id}")
        return 0
    print(f"no key with id {args.key_id!r}", file=sys.stderr)
    return 1
