"""Write a snapshot as a dump that `check --snapshot` reads back into the same snapshot.

Layout: one file per kind of the profile that was read, `<resource>.yaml` (for example
`deployments.apps.yaml`, `triggers.eventing.knative.dev.yaml`), each a `v1 List` as
`kubectl get -o yaml` prints it, plus `snapshot.yaml`, our `SnapshotInfo`: when the
objects were read, which resources were read completely (`collected`) and which could not
be read, with the reason (`unavailable`).

Only kinds of the profile are written (it has no Secret kind; any other kind is dropped
here too), and of each object only the fields the analysis reads (`sources.slim`, by the
allow-list beside each kind in its profile): no env values, no last-applied-configuration,
no ServiceInstance parameters, no managedFields.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from eventmesh_health.snapshot import SNAPSHOT_INFO_API_VERSION, SNAPSHOT_INFO_KIND, Snapshot
from eventmesh_health.sources.slim import slim
from eventmesh_health.topology import Kind, Profile, kind_key

INFO_FILE = "snapshot.yaml"
# Never written, whatever a profile says: a dump is meant to be shared.
NEVER_DUMPED = frozenset({"Secret"})

_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# Plain scalars that YAML 1.2 (our reader) resolves to something other than a string,
# though PyYAML (YAML 1.1) writes them unquoted: `0o755`, `1e3`, `-.5`. Over-quoting is
# harmless, so anything starting like a number, or a 1.2 null/bool word, is quoted.
_LOOKS_TYPED = re.compile(r"[-+.0-9]|(~|null|Null|NULL|true|True|TRUE|false|False|FALSE)$")


class _Dumper(_BaseDumper):  # type: ignore[misc]
    def represent_str(self, data: str) -> yaml.ScalarNode:
        if _LOOKS_TYPED.match(data):
            node: yaml.ScalarNode = self.represent_scalar("tag:yaml.org,2002:str", data,
                                                          style='"')
            return node
        plain: yaml.ScalarNode = super().represent_str(data)
        return plain


_Dumper.add_representer(str, _Dumper.represent_str)


class DumpError(Exception):
    """The dump cannot be written: one line, naming the path."""


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as Kubernetes writes timestamps."""
    return moment.isoformat().replace("+00:00", "Z")


def dump_file_name(kind: Kind) -> str:
    return f"{kind.resource}.yaml"


def snapshot_info(snapshot: Snapshot, profile: Profile, source: str) -> dict[str, Any]:
    """The SnapshotInfo object of a dump (see `sources.files.load_snapshot`)."""
    collected = snapshot.collected
    return {
        "apiVersion": SNAPSHOT_INFO_API_VERSION,
        "kind": SNAPSHOT_INFO_KIND,
        "metadata": {"name": "snapshot"},
        "takenAt": format_time(snapshot.taken_at),
        "source": source,
        # The profile the dump was read with: what `check --snapshot --profile auto` uses.
        "profile": profile.name,
        "collected": [
            kind.resource for kind in profile.kinds
            if collected is not None and kind.key in collected
        ],
        "unavailable": {
            kind.resource: snapshot.unavailable[kind.key]
            for kind in profile.kinds if kind.key in snapshot.unavailable
        },
    }


def dump_documents(snapshot: Snapshot, profile: Profile, source: str) -> dict[str, Any]:
    """{file name: document}: a `v1 List` per collected kind, and the SnapshotInfo."""
    if snapshot.collected is None:
        raise ValueError("only a snapshot that says which kinds it collected can be dumped")
    kinds = [
        kind for kind in profile.kinds
        if kind.key in snapshot.collected and kind.kind not in NEVER_DUMPED
    ]
    items: dict[str, list[dict[str, Any]]] = {kind.key: [] for kind in kinds}
    fields = {kind.key: kind.fields for kind in kinds}
    annotations = {kind.key: kind.annotations for kind in kinds}
    for obj in snapshot.objects:
        key = kind_key(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if key in items:
            items[key].append(slim(obj, fields[key], annotations[key]))
    documents: dict[str, Any] = {
        dump_file_name(kind): {
            "apiVersion": "v1",
            "items": items[kind.key],
            "kind": "List",
            "metadata": {"resourceVersion": ""},
        }
        for kind in kinds
    }
    documents[INFO_FILE] = snapshot_info(snapshot, profile, source)
    return documents


def check_target(directory: Path) -> None:
    """A dump goes into a new or empty folder: it is read recursively, so stale files of
    another dump would mix in."""
    try:
        if directory.exists():
            if not directory.is_dir():
                raise DumpError(f"{directory}: exists and is not a folder")
            if any(directory.iterdir()):
                raise DumpError(f"{directory}: folder is not empty (give a new or empty folder)")
    except OSError as err:
        raise DumpError(f"{directory}: {err.strerror or err}") from None


def write_dump(snapshot: Snapshot, profile: Profile, directory: Path, source: str) -> list[Path]:
    """Write the dump into `directory`, which must be new or empty. Returns the files."""
    documents = dump_documents(snapshot, profile, source)
    check_target(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, document in documents.items():
            path = directory / name
            text = yaml.dump(
                document, Dumper=_Dumper, sort_keys=name != INFO_FILE,
                default_flow_style=False, allow_unicode=True, width=1_000_000,
            )
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as err:
        where = err.filename or directory
        raise DumpError(f"{where}: cannot write: {err.strerror or err}") from None
    return written
