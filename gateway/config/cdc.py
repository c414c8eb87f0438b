"""The `cdc:` section of routes.yaml: where the gateway reads the CDC bridge's status.

cdc:
  status_file: var/cdc-status.json   # the bridge's --status-file / CDC_STATUS_FILE;
                                     # relative to routes.yaml
  stale_after: 30s                   # older than this: the bridge is down or stuck

The file is read by gateway/observe/cdc.py, when asked (a scrape, a dashboard poll).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node

from common.validation import NodeReader, parse_duration

DEFAULT_STALE_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class CdcSettings:
    status_file: Path
    stale_after: float = DEFAULT_STALE_AFTER


def read_cdc(reader: NodeReader, node: Node, base: Path) -> CdcSettings | None:
    fields = reader.mapping(node, "cdc", {"status_file", "stale_after"})
    if fields is None:
        return None
    stale_after = reader.optional(fields, "stale_after", "cdc", parse_duration, DEFAULT_STALE_AFTER)
    if "status_file" not in fields:
        reader.error(node, "cdc: missing 'status_file' (the bridge's --status-file)")
        return None
    name = reader.scalar(fields["status_file"], "cdc: status_file")
    if not name:
        return None
    # Not checked for existence: the bridge may start after the gateway.
    return CdcSettings(base / name, stale_after)
