"""The fleet from a client (docs/fleet.md): the header that sends a call to
one host, the one that makes a broadcast reach every host, and unpacking
the fleet stand-in's answer into one `BroadcastReply` per instance. No I/O.
"""

from __future__ import annotations

from typing import Any, List

import msgpack

from .calls import BroadcastReply
from .errors import CallError, ErrorCode, InstanceGone, from_wire

#: `sb-host: NAME` — the call goes to host NAME of the fleet.
HOST_HEADER = "sb-host"
#: `sb-fleet: 1` on a broadcast — every host's instances, not this host's only.
FLEET_HEADER = "sb-fleet"
#: The key of the stand-in's answer to a fleet broadcast.
_ENVELOPE = "$fleet"


def _error(kind: str, message: str) -> CallError:
    try:
        code = ErrorCode[kind.upper()]
    except KeyError:
        code = ErrorCode.REJECTED
    return from_wire(int(code), message)


def _entries(answer: Any) -> List[BroadcastReply]:
    replies: List[BroadcastReply] = []
    for entry in answer.get("replies", []):
        host, instance = entry.get("host"), int(entry.get("instance", 0))
        if "error" in entry:
            failed = entry["error"]
            error = _error(str(failed.get("kind", "")), str(failed.get("message", "")))
            replies.append(BroadcastReply(instance, error=error, host=host))
        else:
            payload = entry.get("reply") or b""
            value = msgpack.unpackb(payload, raw=False, strict_map_key=False) if payload else None
            replies.append(BroadcastReply(instance, value, host=host))
    for gone in answer.get("missing", []):
        count = int(gone.get("instances", 0))
        why = f"no answer from host {gone.get('host')} ({count} instances): {gone.get('why')}"
        replies.append(BroadcastReply(0, error=InstanceGone(why), host=gone.get("host"), missing_instances=count))
    return replies


def unpack(replies: List[BroadcastReply]) -> List[BroadcastReply]:
    """A fleet broadcast's answers: the stand-in's one entry becomes an
    entry per instance on the other hosts (and per host that did not answer)."""
    out: List[BroadcastReply] = []
    for reply in replies:
        value = reply.value
        if reply.ok and isinstance(value, dict) and isinstance(value.get(_ENVELOPE), dict):
            out.extend(_entries(value[_ENVELOPE]))
        else:
            out.append(reply)
    return out
