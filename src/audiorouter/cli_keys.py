"""audiorouter keys create | list | disable | enable | delete, and audiorouter db upgrade | current.

They work on the configured store directly (AUDIOROUTER_DATABASE_URL, else the SQLite file in the data
dir), so the first management key can be minted before any server runs."""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import typer

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Create and manage API keys.")
db_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Database schema (migrations).")


def _run(fn: Callable[[Any], Awaitable[Any]], *, migrate: bool = True) -> Any:
    from .config import Settings
    from .store.db import Database, StoreConfigError, database_url, safe_url
    from .store.keys import KeyStore

    try:
        settings = Settings()
        db = Database(database_url(settings), busy_timeout_s=settings.db_busy_timeout_s)
    except StoreConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None

    async def main() -> Any:
        try:
            if migrate:
                await db.upgrade()
            return await fn(KeyStore(db))
        except Exception as e:
            if isinstance(e, typer.Exit):
                raise
            typer.echo(f"error: database {safe_url(db.url)}: {type(e).__name__}: {str(e).splitlines()[0][:300]}",
                       err=True)
            raise typer.Exit(1) from None
        finally:
            await db.close()

    return asyncio.run(main())


def _expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise typer.BadParameter("expected an ISO 8601 timestamp like 2027-01-31T23:59:59Z",
                                 param_hint="--expires-at") from None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    if t <= datetime.now(UTC):
        raise typer.BadParameter("is in the past", param_hint="--expires-at")
    return t


@keys_app.command("create")
def create(name: str = typer.Option("cli key", "--name", "-n", help="a name to recognize the key by"),
           management: bool = typer.Option(False, "--management", help="a management key (manages other keys)"),
           limit: float = typer.Option(None, "--limit", min=0, help="spending limit in USD"),
           limit_reset: str = typer.Option(None, "--limit-reset", help="daily | weekly | monthly"),
           expires_at: str = typer.Option(None, "--expires-at", help="ISO 8601 UTC expiry"),
           rpm: int = typer.Option(None, "--rpm", min=1, help="requests per minute"),
           concurrency: int = typer.Option(None, "--concurrency", min=1, help="concurrent requests")) -> None:
    """Mint a key. The secret is printed once, on stdout; only its hash is stored."""
    from .store.keys import LIMIT_RESETS
    if limit_reset is not None and limit_reset not in LIMIT_RESETS:
        raise typer.BadParameter("must be daily, weekly or monthly", param_hint="--limit-reset")
    exp = _expiry(expires_at)

    async def go(keys):
        return await keys.create(name=name, is_management=management, limit=limit, limit_reset=limit_reset,
                                 expires_at=exp, rate_limit_rpm=rpm, max_concurrency=concurrency, source="cli")

    row, secret = _run(go)
    typer.echo(f"created {'management ' if management else ''}key {row.label} (hash {row.hash}); "
               "this is the only time the secret is shown:", err=True)
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
def list_(all_: bool = typer.Option(False, "--all", help="include disabled and expired keys"),
          as_json: bool = typer.Option(False, "--json", help="one JSON object per line")) -> None:
    """List keys (never their secrets): hash, name, label, kind, state, limit, remaining, usage, expiry."""
    import orjson

    from .store.keys import iso, key_data
    from .store.models import to_usd

    rows = _run(lambda keys: keys.list(include_disabled=all_, include_expired=all_, offset=0, limit=10_000))
    now = datetime.now(UTC)
    for r in rows:
        state = "disabled" if r.disabled else ("expired" if r.expires_at and r.expires_at <= now else "active")
        if as_json:
            sys.stdout.write(orjson.dumps({**key_data(r), "state": state}).decode() + "\n")
            continue
        d = key_data(r)
        limit = "-" if d["limit"] is None else f"${d['limit']:g}" + (f"/{r.limit_reset}" if r.limit_reset else "")
        remaining = "-" if d["limit_remaining"] is None else f"${d['limit_remaining']:g}"
        sys.stdout.write("\t".join([r.hash, r.name, r.label, "management" if r.is_management else "api", state,
                                    limit, remaining, f"${to_usd(r.usage_nano):g}", iso(r.expires_at) or "-"]) + "\n")
    if not rows and not as_json:
        typer.echo("no keys" + ("" if all_ else " (add --all to include disabled and expired ones)"), err=True)


async def _by_prefix(keys, prefix: str):
    prefix = prefix.strip().lower()
    if len(prefix) < 8:
        typer.echo("error: give at least 8 characters of the key's hash", err=True)
        raise typer.Exit(2)
    rows = [r for r in await keys.list(include_disabled=True, include_expired=True, offset=0, limit=100_000)
            if r.hash.startswith(prefix)]
    if len(rows) != 1:
        typer.echo(f"error: {'no key' if not rows else 'more than one key'} has a hash starting {prefix!r}", err=True)
        raise typer.Exit(1)
    return rows[0]


def _set_disabled(hash_prefix: str, disabled: bool) -> None:
    async def go(keys):
        row = await _by_prefix(keys, hash_prefix)
        await keys.update(row.hash, {"disabled": disabled})
        return row

    row = _run(go)
    typer.echo(f"{'disabled' if disabled else 'enabled'} {row.label} ({row.hash})")


@keys_app.command("disable")
def disable(hash_prefix: str = typer.Argument(..., help="the key's hash (or its first 8+ characters)")) -> None:
    """Disable a key: its requests get 403 until it is enabled again."""
    _set_disabled(hash_prefix, True)


@keys_app.command("enable")
def enable(hash_prefix: str = typer.Argument(..., help="the key's hash (or its first 8+ characters)")) -> None:
    """Enable a disabled key."""
    _set_disabled(hash_prefix, False)


@keys_app.command("delete")
def delete(hash_prefix: str = typer.Argument(..., help="the key's hash (or its first 8+ characters)")) -> None:
    """Delete a key (its generations stay in the ledger)."""
    async def go(keys):
        row = await _by_prefix(keys, hash_prefix)
        await keys.delete(row.hash)
        return row

    row = _run(go)
    typer.echo(f"deleted {row.label} ({row.hash})")


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply pending migrations (the server also does this at start-up unless AUDIOROUTER_MIGRATE_ON_START=false)."""
    async def go(keys):
        return await keys.db.current_revision()

    rev = _run(go, migrate=True)
    typer.echo(f"database at revision {rev}")


@db_app.command("current")
def current() -> None:
    """Show the schema revision of the database."""
    async def go(keys):
        return await keys.db.current_revision()

    typer.echo(f"database at revision {_run(go, migrate=False) or '(empty)'}")
