"""What the page shows, read off the cloud database: vans (link, outbox, position, route progress, flags),
blocks with their on-time state, one van's route and track, one stop's proof, a day's export.

Every function takes the read-only connection and the viewer's station (None: the whole fleet).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from functools import partial
from typing import Any

from cloud_sync.cloud.commands import result_of, result_sql
from cloud_sync.cloud.presence import pending_age_s
from cloud_sync.cloud.web import photos
from cloud_sync.cloud.web.cache import VersionedCache, versions
from cloud_sync.cloud.web.readonly import ReadOnlyDb
from cloud_sync.cloud.web.scope import device_in_scope

log = logging.getLogger(__name__)

STALE_AFTER_S = 90.0  # an "online" status older than three status intervals (30 s) is shown as stale
TRACK_POINTS = 300  # breadcrumbs drawn per van
PROOF_TYPES = ("stop.arrived", "photo.checked", "delivery.signature", "delivery.proof", "delivery.exception",
               "stop.completed")
EXPORT_TYPES = ("stop.arrived", "photo.checked", "delivery.proof", "delivery.exception", "stop.completed")
EXPORT_COLUMNS = ("device", "seq", "type", "ts", "block", "stop", "verdict", "read", "outcome", "on_time", "reason",
                  "packages", "lat", "lon")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _age_s(iso: str | None, now: float) -> float | None:
    moment = _epoch(iso)
    return None if moment is None else now - moment


def link_state(status: dict[str, Any] | None, now: float) -> str:
    """online | offline | stopped | stale (said online, but no status for three intervals) | unknown."""
    if not status:
        return "unknown"
    state = str(status.get("state", "unknown"))
    if state == "online":
        age = _age_s(status.get("ts"), now)
        return "stale" if age is not None and age > STALE_AFTER_S else "online"
    return state


def _progress(db: ReadOnlyDb, device: str) -> dict[str, dict[str, int]]:
    """block -> completed stops, completed late, completed on time, for one device."""
    d = db.dialect
    rows = db.rows(f"""SELECT {d.json_text('body', 'block')} AS block, COUNT(DISTINCT {d.json_text('body', 'stop')}),
                              SUM(CASE WHEN {d.json_flag('body', 'data', 'on_time')} = 0 THEN 1 ELSE 0 END),
                              SUM(CASE WHEN {d.json_flag('body', 'data', 'on_time')} = 1 THEN 1 ELSE 0 END)
                       FROM events WHERE type = 'stop.completed' AND device = :device GROUP BY block""",
                   {"device": device})
    return {b: {"done": n, "late": late or 0, "on_time": ok or 0} for b, n, late, ok in rows}


def _stop_count(db: ReadOnlyDb, block: str) -> int:
    return int(db.rows(f"SELECT {db.dialect.json_array_length('route', 'stops')} FROM blocks WHERE id = ?",
                       (block,))[0][0])


def _counts(db: ReadOnlyDb, table: str, station: str | None) -> dict[str, int]:
    return dict(db.rows(f"SELECT device, COUNT(*) FROM {table} WHERE {device_in_scope('device')} GROUP BY device",
                        {"station": station}))


def block_state(block: dict[str, Any], progress: dict[str, int], now: float) -> str:
    """unclaimed | on_time | late (a stop finished after its window) | overdue (past its end, stops open) | done."""
    if block["winner"] is None:
        return "unclaimed"
    if progress["done"] >= block["stops"]:
        return "late" if progress["late"] else "done"
    if progress["late"]:
        return "late"
    ends = _age_s(block["ends_at"], now)
    return "overdue" if ends is not None and ends > 0 else "on_time"


def fleet(db: ReadOnlyDb, station: str | None, now: float, cache: VersionedCache | None = None) -> dict[str, Any]:
    """Vans and blocks in the viewer's scope (times the cloud recorded as epoch seconds). Per-device figures go
    through the cache (a van that stored nothing new of their types is not re-read); a route's stop count is
    kept per route version."""
    cache = cache or VersionedCache()
    flags, clock = _counts(db, "flags", station), _counts(db, "clock_flags", station)
    # The retained status carries the newest breadcrumb still waiting in the van's outbox; the newest stored
    # event with a fix (read when the device's data changed) may be newer (the live one goes first after an
    # outage, older ones follow): the newer of the two is shown.
    devices = db.rows(f"""SELECT device, status, last_batch_at, verified_seq FROM devices d
                          WHERE {device_in_scope('d.device')} ORDER BY device""", {"station": station})
    done_at = versions(db, station, ("stop.completed",))
    withdrawn = withdrawals(db, station, now)
    empty = {"done": 0, "late": 0, "on_time": 0}
    blocks = []
    for bid, st, winner, granted, ends, version in db.rows(
            f"""SELECT id, station, winner, granted_at, {db.dialect.json_text('body', 'ends_at')}, route_version
               FROM blocks WHERE CAST(:station AS TEXT) IS NULL OR station = :station ORDER BY id""",
            {"station": station}):
        stops = cache.get(("stops", bid), version, partial(_stop_count, db, bid))
        block = {"id": bid, "station": st, "winner": winner, "granted_at": granted, "ends_at": ends,
                 "stops": stops}
        done = empty
        if winner in done_at:
            done = cache.get(("progress", winner), done_at[winner], partial(_progress, db, winner)).get(bid, empty)
        block.update(done)
        block["state"] = block_state(block, done, now)
        block["withdrawn"] = withdrawn.get(bid)
        blocks.append(block)
    current = {}  # device -> its newest block
    for block in sorted((b for b in blocks if b["winner"]), key=lambda b: b["granted_at"] or 0.0):
        current[block["winner"]] = block
    vans = []
    for device, status_text, last_batch, verified in devices:
        status = json.loads(status_text) if status_text else {}
        position = newer_fix(status.get("position"), cache.get(("fix", device), (last_batch, verified),
                                                               partial(_last_fix, db, device)))
        mine = current.get(device)
        vans.append({
            "device": device, "link": link_state(status, now), "status_ts": status.get("ts"),
            "last_batch_at": last_batch, "verified_seq": verified,
            "outbox_depth": status.get("outbox_depth"), "last_ack_seq": status.get("last_ack_seq"),
            "oldest_pending_s": pending_age_s(status, now), "offline_at": status.get("offline_at"),
            "storage": status.get("storage"), "position": position,
            "block": mine["id"] if mine else None, "station": mine["station"] if mine else None,
            "stops": mine["stops"] if mine else 0, "stops_done": mine["done"] if mine else 0,
            "flags": flags.get(device, 0), "clock_flags": clock.get(device, 0)})
    return {"now": _iso(now), "vans": vans, "blocks": blocks}


def withdrawals(db: ReadOnlyDb, station: str | None, now: float) -> dict[str, dict[str, Any]]:
    """Unclaimed block -> its newest withdrawal: the van it was taken from, when, and what that van answered to
    the withdraw_block command (its stored command.result; "sent" until then, "expired" once it can no longer
    run). Blocks won again are left out: the row shows their new winner."""
    newest: dict[str, tuple[str, str, float, float]] = {}
    for block, device, command_id, at, expires_at in db.rows(
            """SELECT w.block, w.device, w.command_id, w.at, w.expires_at FROM block_withdrawals w
               JOIN blocks b ON b.id = w.block AND b.winner IS NULL
               WHERE CAST(:station AS TEXT) IS NULL OR w.station = :station ORDER BY w.at""", {"station": station}):
        newest[block] = (device, command_id, at, expires_at)
    out = {}
    for block, (device, command_id, at, expires_at) in newest.items():
        rows = db.rows(result_sql(db.dialect), (device, command_id))
        result = result_of(device, rows[0][0], rows[0][1]) if rows else None
        told = result.status if result else "expired" if expires_at < now else "sent"
        returns = result.data.get("return_packages") if result else None
        out[block] = {"device": device, "at": at, "command": command_id, "told": told,
                      "detail": result.detail if result else "",
                      "return_packages": returns if isinstance(returns, list) else None}
    return out


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def newer_fix(status_fix: Any, stored_fix: Any) -> dict[str, Any] | None:
    """The fix with the later `time` (the receiver's); the status's one when the times cannot be compared. Either
    may be whatever a van sent: only objects count."""
    waiting: dict[str, Any] | None = status_fix if isinstance(status_fix, dict) else None
    stored: dict[str, Any] | None = stored_fix if isinstance(stored_fix, dict) else None
    if waiting is None or stored is None:
        return waiting or stored
    newer_stored = _epoch(stored.get("time")) or 0.0
    if newer_stored > (_epoch(waiting.get("time")) or newer_stored):
        return stored
    return waiting


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _last_fix(db: ReadOnlyDb, device: str) -> dict[str, Any] | None:
    """The newest stored fix that is an object (a van may have sent anything as `fix`)."""
    d = db.dialect
    rows = db.rows(f"""SELECT {d.json_text('body', 'fix')} FROM events WHERE device = ?
                       AND {d.json_type('body', 'fix')} = 'object' ORDER BY seq DESC LIMIT 1""", (device,))
    return _object(json.loads(rows[0][0])) if rows else None


def visible(db: ReadOnlyDb, device: str, station: str | None) -> bool:
    return bool(db.rows(f"SELECT 1 FROM devices WHERE device = :device AND {device_in_scope('device')}",
                        {"device": device, "station": station}))


def van(db: ReadOnlyDb, device: str, station: str | None, now: float) -> dict[str, Any] | None:
    """One van: its block's route with each stop's state, the track, the flags."""
    if not visible(db, device, station):
        return None
    row = db.rows("SELECT id, station, route, body FROM blocks WHERE winner = :device "
                  "AND (CAST(:station AS TEXT) IS NULL OR station = :station) ORDER BY granted_at DESC LIMIT 1",
                  {"device": device, "station": station})
    d = db.dialect
    stops: list[dict[str, Any]] = []
    block = None
    if row:
        block, route = row[0][0], json.loads(row[0][2])
        done = {stop: (outcome, on_time) for stop, outcome, on_time in db.rows(
            f"""SELECT {d.json_text('body', 'stop')}, {d.json_text('body', 'data', 'outcome')},
                       {d.json_flag('body', 'data', 'on_time')}
                FROM events WHERE device = :device AND type = 'stop.completed'
                AND {d.json_text('body', 'block')} = :block""", {"device": device, "block": block})}
        for stop in route.get("stops", []):
            outcome, on_time = done.get(stop["id"], (None, None))
            overdue = outcome is None and (_age_s(stop.get("window_end"), now) or 0) > 0
            stops.append({"id": stop["id"], "address": stop["address"], "house_number": stop["house_number"],
                          "lat": stop["lat"], "lon": stop["lon"], "window_end": stop.get("window_end"),
                          "outcome": outcome, "on_time": None if on_time is None else bool(on_time),
                          "overdue": overdue, "packages": len(stop.get("packages", []))})
    track = [json.loads(fix) for (fix,) in db.rows(
        f"""SELECT fix FROM (SELECT seq, {d.json_text('body', 'fix')} AS fix, {d.json_type('body', 'fix')} AS kind
            FROM events WHERE device = :device AND type = 'gps.fix' ORDER BY seq DESC LIMIT :n) AS recent
            WHERE kind = 'object' ORDER BY seq""", {"device": device, "n": TRACK_POINTS})]
    flags = [dict(zip(("seq", "kind", "detail"), r)) for r in db.rows(
        "SELECT seq, kind, detail FROM flags WHERE device = :device ORDER BY seq", {"device": device})]
    clock = [dict(zip(("seq", "kind", "jump_s", "detail"), r)) for r in db.rows(
        "SELECT seq, kind, jump_s, detail FROM clock_flags WHERE device = :device ORDER BY seq", {"device": device})]
    return {"device": device, "block": block, "stops": stops, "track": track, "flags": flags, "clock_flags": clock}


def proof(db: ReadOnlyDb, device: str, stop: str, station: str | None) -> dict[str, Any] | None:
    """Everything recorded at one stop of the van's newest block: arrival, photo checks (verdict, read number,
    box, GPS at capture, whether the photo arrived), signatures, deliveries, exceptions."""
    if not visible(db, device, station):
        return None
    marks = ",".join("?" * len(PROOF_TYPES))
    rows = db.rows(f"""SELECT seq, type, body, chain FROM events WHERE device = ? AND type IN ({marks})
                       AND {db.dialect.json_text('body', 'stop')} = ? AND {db.dialect.json_text('body', 'block')} =
                           (SELECT id FROM blocks WHERE winner = ? ORDER BY granted_at DESC LIMIT 1)
                       ORDER BY seq""", (device, *PROOF_TYPES, stop, device))
    checks = photos.received(db, device)
    items = []
    for seq, kind, body, chain in rows:
        doc = json.loads(body)
        data = _object(doc.get("data"))
        item = {"seq": seq, "type": kind, "ts": doc.get("ts"), "fix": doc.get("fix"), "chain": chain, "data": data}
        if kind == "photo.checked":
            photo_id = data.get("photo_id")
            photo_id = photo_id if isinstance(photo_id, str) else None
            item["photo_received"] = photo_id in checks
            item["photo_check"] = checks.get(photo_id) if photo_id else None
        items.append(item)
    return {"device": device, "stop": stop, "items": items}


def photo(db: ReadOnlyDb, device: str, photo_id: str, station: str | None) -> bytes | None:
    if not visible(db, device, station):
        return None
    return photos.read(db, device, photo_id)


def export_rows(db: ReadOnlyDb, day: str, station: str | None) -> list[dict[str, Any]]:
    """One line per stop event of the day (UTC): what a station exports for its records."""
    marks = ",".join(f":t{i}" for i in range(len(EXPORT_TYPES)))
    args: dict[str, Any] = {"day": day, "station": station, **{f"t{i}": t for i, t in enumerate(EXPORT_TYPES)}}
    out = []
    for device, seq, kind, body in db.rows(
            f"""SELECT device, seq, type, body FROM events WHERE type IN ({marks})
                AND substr({db.dialect.json_text('body', 'ts')}, 1, 10) = :day AND {device_in_scope('device')}
                ORDER BY device, seq""", args):
        doc = json.loads(body)
        data, fix = _object(doc.get("data")), _object(doc.get("fix"))  # a hostile van may send anything here
        packages = data.get("packages")
        row = {"device": device, "seq": seq, "type": kind, "ts": doc.get("ts"), "block": doc.get("block"),
               "stop": doc.get("stop"), "verdict": data.get("verdict"), "read": data.get("read"),
               "outcome": data.get("outcome"), "on_time": data.get("on_time"), "reason": data.get("reason"),
               "packages": ";".join(str(p) for p in packages) if isinstance(packages, list) else packages,
               "lat": fix.get("lat"), "lon": fix.get("lon")}
        out.append({key: row[key] for key in EXPORT_COLUMNS})
    return out
