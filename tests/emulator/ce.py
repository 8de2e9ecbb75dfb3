"""The CloudEvents 1.0 HTTP protocol binding, both modes, without the `cloudevents` SDK.

- Binary mode: every attribute in a `ce-<name>` header (values percent-encoded where the
  spec requires), `datacontenttype` as `Content-Type`, the data as the body.
- Structured mode: `Content-Type: application/cloudevents+json`, one JSON object holding the
  attributes and `data` (a JSON value) or `data_base64`.

`CloudEvent.attributes` holds every context attribute and extension as a string, keyed by its
lower-case name; `data` is the raw payload (bytes). Batches are not supported (ValueError).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

SPEC_VERSION = "1.0"
REQUIRED = ("specversion", "id", "source", "type")
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_NAME_ANY = re.compile(r"^[a-z0-9]+$")
# Header values: printable ASCII except space, '"' and '%' stay as they are (spec 3.1.3.2).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


@dataclass
class CloudEvent:
    attributes: dict[str, str]
    data: bytes = b""

    def __getitem__(self, name: str) -> str:
        return self.attributes[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attributes.get(name, default)

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def source(self) -> str:
        return self.attributes["source"]

    @property
    def type(self) -> str:
        return self.attributes["type"]

    def json(self) -> Any:
        """The data parsed as JSON (ValueError if it is not)."""
        return json.loads(self.data)

    def copy(self, **attributes: str) -> CloudEvent:
        """A copy with some attributes set (or removed with an empty string)."""
        attrs = dict(self.attributes)
        for key, value in attributes.items():
            if value == "":
                attrs.pop(key, None)
            else:
                attrs[key] = value
        return CloudEvent(attrs, self.data)


def new_event(source: str, type_: str, data: Any = None, *, id: str | None = None,
              time: str | None = None, content_type: str = "application/json",
              **extensions: str) -> CloudEvent:
    """A CloudEvent 1.0; `data` is JSON-encoded unless it is bytes."""
    attrs = {"specversion": SPEC_VERSION, "id": id or str(uuid.uuid4()), "source": source,
             "type": type_, "time": time or now_rfc3339()}
    if data is not None:
        attrs["datacontenttype"] = content_type
    for key, value in extensions.items():
        attrs[key.lower()] = str(value)
    body = b"" if data is None else data if isinstance(data, bytes) else json.dumps(data).encode()
    return CloudEvent(attrs, body)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _check(attrs: Mapping[str, str]) -> None:
    missing = [name for name in REQUIRED if not attrs.get(name)]
    if missing:
        raise ValueError(f"not a CloudEvent: missing {', '.join(missing)}")
    if attrs["specversion"] != SPEC_VERSION:
        raise ValueError(f"unsupported specversion {attrs['specversion']!r}")
    bad = [name for name in attrs if not _NAME_ANY.match(name)]
    if bad:
        raise ValueError(f"invalid attribute names: {bad}")


def from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Decode a request or response (header names lower-case). Raises ValueError."""
    content_type = headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == BATCH:
        raise ValueError("batched CloudEvents are not supported")
    if media == STRUCTURED:
        return _from_structured(body)
    attrs = {name[3:]: unquote(value) for name, value in headers.items()
             if name.startswith("ce-")}
    if content_type:
        attrs["datacontenttype"] = content_type
    _check(attrs)
    return CloudEvent(attrs, body)


def _from_structured(body: bytes) -> CloudEvent:
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise ValueError(f"structured CloudEvent is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError("structured CloudEvent is not a JSON object")
    data = b""
    if "data_base64" in doc:
        try:
            data = base64.b64decode(doc.pop("data_base64"), validate=True)
        except (ValueError, TypeError) as err:
            raise ValueError(f"data_base64: {err}") from None
    elif "data" in doc:
        value = doc.pop("data")
        ctype = str(doc.get("datacontenttype") or "application/json")
        if isinstance(value, str) and not _is_json(ctype):
            data = value.encode()
        else:
            data = json.dumps(value).encode()
    attrs = {}
    for key, value in doc.items():
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"attribute {key!r} is not a scalar")
        attrs[key.lower()] = str(value).lower() if isinstance(value, bool) else str(value)
    _check(attrs)
    return CloudEvent(attrs, data)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of the binary mode."""
    headers = {}
    for name, value in event.attributes.items():
        if name == "datacontenttype":
            headers["content-type"] = value
        else:
            headers[f"ce-{name}"] = quote(value, safe=_SAFE)
    return headers, event.data


def to_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of the structured mode (JSON data inline, anything else base64)."""
    doc: dict[str, Any] = dict(event.attributes)
    if event.data:
        ctype = event.attributes.get("datacontenttype", "application/json")
        try:
            doc["data"] = json.loads(event.data) if _is_json(ctype) else None
        except ValueError:
            doc["data"] = None
        if doc["data"] is None:
            del doc["data"]
            doc["data_base64"] = base64.b64encode(event.data).decode()
    return {"content-type": f"{STRUCTURED}; charset=utf-8"}, json.dumps(doc).encode()
