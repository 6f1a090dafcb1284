"""``trace-usage keys add|list|revoke``: manage the API keys of a data directory.

A new key is printed once; only its SHA-256 is stored. Works while a server runs: servers
reload the keys file when it changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.auth import ApiKey, KeyStore
from service.settings import Settings


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
    settings = Settings() if args.data_dir is None else Settings(data_dir=args.data_dir)
    return KeyStore(settings.keys_path)


def print_new_key(record: ApiKey, secret: str, url: str = "http://127.0.0.1:8000") -> None:
    """The one time a key is shown, with how to use it."""
    print(f"key id:   {record.id}")
    print(f"user:     {record.user}")
    print(f"projects: {' '.join(record.projects)}")
    print(f"api key:  {secret}")
    print("Store the key now: it is not shown again. Authenticate with HTTP Basic auth, e.g.")
    project = next((p for p in record.projects if "*" not in p), "entity/project")
    print(
        f"  curl -u '{record.user}:{secret}' {url}/trace/usage "
        f'-d \'{{"project_id": "{project}"}}\''
    )


def _add(args: argparse.Namespace) -> int:
    record, secret = _keys(args).add(args.user, args.projects)
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
