"""EBS volumes that hold data, on top of moto 5.2.5 and the EBS patch.

moto's volumes hold nothing, and EC2 CreateSnapshot yields snapshots with no
blocks. On AWS a snapshot captures the volume's blocks, and a
volume created from a snapshot starts with the snapshot's blocks. This patch
gives every volume a block store so the whole path — instance volume →
snapshot → backup → restore → volume — carries real data:

- CreateVolume with SnapshotId (also through RunInstances' block device
  mappings): the volume starts with the snapshot's blocks.
- EC2 CreateSnapshot: the snapshot holds the volume's blocks at that moment,
  readable through the EBS direct APIs (ListSnapshotBlocks, GetSnapshotBlock).
  Snapshots of one volume share a lineage, so ListChangedBlocks between two of
  them works as on AWS (AWS: "the snapshots must be of the same volume
  lineage").
- A guest's writes, which tests stand in for: `PUT /skiff/volumes/<vol-id>/blocks/<index>`
  with a 524288-byte body (`?account=…&region=…`, defaults 123456789012 and
  us-east-1) writes one block; `DELETE` on the same path zeroes it; `GET
  /skiff/volumes/<vol-id>/blocks/<index>` answers its bytes (zeros when never
  written) so tests can compare a restored volume with its source.
"""

import base64
import hashlib
import uuid
from urllib.parse import parse_qs

from moto.ec2.models.elastic_block_store import EBSBackend as Ec2EbsBackend

from . import ebs

BLOCK_SIZE = ebs.BLOCK_SIZE
ZERO = bytes(BLOCK_SIZE)

# (account, region, volume id) -> {block index: (data, base64 sha256)}
VOLUME_DATA = {}
# (account, region, volume id) -> lineage id its snapshots share
LINEAGE = {}


def _key(backend, volume_id):
    return (backend.account_id, backend.region_name, volume_id)


def _ebs_backend(account, region):
    from moto.ebs.models import ebs_backends

    return ebs_backends[account][region]


def apply():
    create_volume = Ec2EbsBackend.create_volume
    create_snapshot = Ec2EbsBackend.create_snapshot

    def create_volume_with_data(self, size, zone_name, snapshot_id=None, *args, **kwargs):
        volume = create_volume(self, size, zone_name, snapshot_id, *args, **kwargs)
        blocks = {}
        lineage = volume.id
        if snapshot_id:
            snap = _ebs_backend(self.account_id, self.region_name).snaps.get(snapshot_id)
            if snap is not None:
                blocks = dict(snap.blocks)
                lineage = snap.lineage
        VOLUME_DATA[_key(self, volume.id)] = blocks
        LINEAGE[_key(self, volume.id)] = lineage
        return volume

    def create_snapshot_with_data(self, volume_id, description, *args, **kwargs):
        snapshot = create_snapshot(self, volume_id, description, *args, **kwargs)
        key = _key(self, volume_id)
        if key in VOLUME_DATA:
            backend = _ebs_backend(self.account_id, self.region_name)
            snap = ebs.Snap(self.account_id, snapshot, snapshot.volume.size, None, description or "")
            snap.blocks = dict(VOLUME_DATA[key])
            snap.tokens = {i: str(uuid.uuid4()) for i in snap.blocks}
            snap.lineage = LINEAGE.get(key, volume_id)
            snap.status = "completed"
            backend.snaps[snapshot.id] = snap
            snapshot.status = "completed"
        return snapshot

    delete_snapshot = Ec2EbsBackend.delete_snapshot

    def delete_snapshot_everywhere(self, snapshot_id):
        # AWS: a deleted snapshot is gone for the EBS direct APIs too
        # (ResourceNotFoundException); moto keeps serving its blocks.
        result = delete_snapshot(self, snapshot_id)
        _ebs_backend(self.account_id, self.region_name).snaps.pop(snapshot_id, None)
        return result

    Ec2EbsBackend.create_volume = create_volume_with_data
    Ec2EbsBackend.create_snapshot = create_snapshot_with_data
    Ec2EbsBackend.delete_snapshot = delete_snapshot_everywhere
    _install_control_endpoint()


def _control(environ, start_response):
    parts = environ["PATH_INFO"].strip("/").split("/")
    # skiff / volumes / <vol-id> / blocks / <index>
    if len(parts) != 5 or parts[3] != "blocks":
        return _answer(start_response, "404 Not Found", b"no such path")
    volume_id = parts[2]
    try:
        index = int(parts[4])
    except ValueError:
        return _answer(start_response, "400 Bad Request", b"block index must be an integer")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    account = query.get("account", ["123456789012"])[0]
    region = query.get("region", ["us-east-1"])[0]
    key = (account, region, volume_id)
    from moto.ec2.models import ec2_backends

    volume = ec2_backends[account][region].volumes.get(volume_id)
    if volume is None:
        return _answer(start_response, "404 Not Found", f"no volume {volume_id} in {account}/{region}".encode())
    blocks = VOLUME_DATA.setdefault(key, {})
    LINEAGE.setdefault(key, volume_id)
    if not 0 <= index < volume.size * ebs.GIB // BLOCK_SIZE:
        return _answer(start_response, "400 Bad Request", f"block {index} is outside the volume".encode())
    method = environ["REQUEST_METHOD"]
    if method == "GET":
        data = blocks.get(index, (ZERO, None))[0]
        return _answer(start_response, "200 OK", data, "application/octet-stream")
    if method == "DELETE":
        blocks.pop(index, None)
        return _answer(start_response, "204 No Content", b"")
    if method == "PUT":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        if len(data) != BLOCK_SIZE:
            return _answer(start_response, "400 Bad Request", f"a block is {BLOCK_SIZE} bytes, got {len(data)}".encode())
        if data == ZERO:
            blocks.pop(index, None)
        else:
            blocks[index] = (data, base64.b64encode(hashlib.sha256(data).digest()).decode())
        return _answer(start_response, "204 No Content", b"")
    return _answer(start_response, "405 Method Not Allowed", b"GET, PUT or DELETE")


def _answer(start_response, status, body, content_type="text/plain"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _install_control_endpoint():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/skiff/volumes/"):
            return _control(environ, start_response)
        return original(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call
