"""`roar keys create|list|revoke`: local admin commands on the orchestrator's store in
ROAR_DATA_DIR (or the PostgreSQL database of ROAR_DATABASE_URL). They open the store directly, so
they work while the orchestrator runs, and a revoked key is refused from its next call on."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator.auth import create_key
from orchestrator.store import Store, store_location
from roar.config import Settings


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def run(args: argparse.Namespace, data_dir: Path) -> int:
    store = Store(store_location(Settings.from_env().database_url, data_dir))
    try:
        if args.keys_command == "create":
            try:
                row, key = create_key(store, args.name, args.admin)
            except ValueError as exc:
                print(f"roar: {exc}", file=sys.stderr)
                return 2
            kind = "admin key" if row.admin else "key"
            print(f"created {kind} {row.key_id} ({row.name}); it is shown only this once:", file=sys.stderr)
            print(key)
            return 0
        if args.keys_command == "list":
            print(f"{'ID':<12}  {'ADMIN':<5}  {'CREATED':<19}  {'REVOKED':<19}  NAME")
            for row in store.list_keys():
                revoked = _when(row.revoked) if row.revoked is not None else "-"
                admin = "yes" if row.admin else "no"
                print(f"{row.key_id:<12}  {admin:<5}  {_when(row.created):<19}  {revoked:<19}  {row.name}")
            return 0
        if store.revoke_key(args.key_id):
            print(f"revoked key {args.key_id}")
            return 0
        print(f"roar: no active key {args.key_id!r} (see `roar keys list`)", file=sys.stderr)
        return 1
    finally:
        store.close()
