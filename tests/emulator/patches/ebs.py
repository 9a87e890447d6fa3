"""EBS direct APIs as AWS documents them, on top of moto 5.2.5.

moto's EBS accepts nearly anything: a test against it proves
little. Each rule below restores one documented AWS behaviour, cited from the
EBS direct APIs reference (docs.aws.amazon.com/ebs/latest/APIReference/) and
the user guide (docs.aws.amazon.com/ebs/latest/userguide/ebsapis-using-apis.html).

Fault injection, for tests that must survive throttling and server errors:
per account, a rate of failed requests and of corrupted block checksums,
and of empty list pages. Set through the environment at start
(SKIFF_EBS_FAULT_RATE, SKIFF_EBS_FAULT_KINDS, SKIFF_EBS_CORRUPT_RATE,
SKIFF_EBS_EMPTY_PAGE_RATE; for every account) or at run time through
`POST /skiff/faults` with a JSON body
`{"account": "123456789012", "rate": 0.2, "kinds": ["throttle", "500"],
  "corrupt_rate": 0, "empty_page_rate": 0}` (account "*" for all);
`"ops": ["GetSnapshotBlock"]` limits the failed requests to those operations.
S3 requests of the account fail at `"s3_rate"` (kinds in `"s3_kinds"`:
"slowdown", S3's 503 SlowDown, and "500", its InternalError — both
documented as retryable, docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
`GET /skiff/faults?account=…` answers the settings and the request counters
(per operation and per snapshot), which tests use to prove, e.g., that an
incremental read only the changed blocks; `DELETE /skiff/faults?account=…`
clears both.
"""

import base64
import hashlib
import json
import os
import random
import re
import threading
import uuid

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.ebs import models as ebs_models
from moto.ebs import responses as ebs_responses
from moto.ec2.models.elastic_block_store import Snapshot as Ec2Snapshot

# AWS: "The size of each block is 512 KiB" (BlockSize in every response).
BLOCK_SIZE = 524288
GIB = 1 << 30
# AWS: MaxResults "Valid Range: Minimum value of 100. Maximum value of 10000."
MIN_RESULTS, MAX_RESULTS = 100, 10000
# AWS: VolumeSize of StartSnapshot is in GiB, at most 64 TiB.
MAX_VOLUME_GIB = 65536


class EbsError(JsonRESTError):
    """An EBS error as the service sends it: the type in X-Amzn-ErrorType,
    `message` and the documented `Reason` in the JSON body."""

    def __init__(self, status, error_type, message, reason=None):
        super().__init__(error_type, message)
        self.code = status
        body = {"message": message}
        if reason:
            body["Reason"] = reason
        self.description = json.dumps(body)


def validation(message, reason="INVALID_PARAMETER_VALUE"):
    return EbsError(400, "ValidationException", message, reason)


def not_found(message, reason="SNAPSHOT_NOT_FOUND"):
    return EbsError(404, "ResourceNotFoundException", message, reason)


# ---------------------------------------------------------------- faults

_lock = threading.Lock()


def _env_float(name):
    try:
        return float(os.environ.get(name, "0") or 0)
    except ValueError:
        return 0.0


_DEFAULT = {
    "rate": _env_float("SKIFF_EBS_FAULT_RATE"),
    "kinds": [k for k in os.environ.get("SKIFF_EBS_FAULT_KINDS", "throttle,500").split(",") if k],
    "corrupt_rate": _env_float("SKIFF_EBS_CORRUPT_RATE"),
    "empty_page_rate": _env_float("SKIFF_EBS_EMPTY_PAGE_RATE"),
    "s3_rate": 0.0,
    "s3_kinds": ["slowdown", "500"],
    "ops": None,
}
_faults = {}  # account -> settings
_counters = {}  # account -> {"ops": {op: n}, "get_block": {snap: n}, "faults": n}

FAULT_KINDS = {
    # AWS: "RequestThrottledException: The number of API requests has exceeded
    # the maximum allowed API request throttling limit for the snapshot." (400)
    "throttle": lambda: EbsError(400, "RequestThrottledException", "Rate exceeded for the snapshot", "RESOURCE_LEVEL_THROTTLE"),
    # The generic AWS throttling error every service may answer.
    "throttling": lambda: EbsError(400, "ThrottlingException", "Rate exceeded"),
    # AWS: "InternalServerException: An internal error has occurred." (500)
    "500": lambda: EbsError(500, "InternalServerException", "An internal error has occurred"),
    "503": lambda: EbsError(503, "ServiceUnavailableException", "Service unavailable"),
}


def settings_for(account):
    with _lock:
        return dict(_faults.get(account) or _faults.get("*") or _DEFAULT)


def _count(account, op, snapshot=None):
    with _lock:
        c = _counters.setdefault(account, {"ops": {}, "get_block": {}, "faults": 0})
        c["ops"][op] = c["ops"].get(op, 0) + 1
        if op == "GetSnapshotBlock" and snapshot:
            c["get_block"][snapshot] = c["get_block"].get(snapshot, 0) + 1


def _maybe_fail(account, op):
    s = settings_for(account)
    if s.get("ops") is not None and op not in s["ops"]:
        return
    if s["rate"] > 0 and s["kinds"] and random.random() < s["rate"]:
        with _lock:
            _counters.setdefault(account, {"ops": {}, "get_block": {}, "faults": 0})["faults"] += 1
        raise FAULT_KINDS[random.choice(s["kinds"])]()


def control(environ, start_response):
    """The /skiff/faults endpoint."""
    from urllib.parse import parse_qs

    method = environ.get("REQUEST_METHOD", "GET")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    account = (query.get("account") or ["*"])[0]
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        account = body.get("account", account)
        s = dict(_DEFAULT)
        for k in ("rate", "corrupt_rate", "empty_page_rate", "s3_rate"):
            if k in body:
                s[k] = float(body[k])
        if "kinds" in body:
            bad = [k for k in body["kinds"] if k not in FAULT_KINDS]
            if bad:
                return _json(start_response, "400 Bad Request", {"error": f"unknown fault kinds {bad}; known: {sorted(FAULT_KINDS)}"})
            s["kinds"] = list(body["kinds"])
        if "s3_kinds" in body:
            bad = [k for k in body["s3_kinds"] if k not in S3_FAULTS]
            if bad:
                return _json(start_response, "400 Bad Request", {"error": f"unknown S3 fault kinds {bad}; known: {sorted(S3_FAULTS)}"})
            s["s3_kinds"] = list(body["s3_kinds"])
        if "ops" in body:
            s["ops"] = list(body["ops"])
        with _lock:
            _faults[account] = s
    elif method == "DELETE":
        with _lock:
            _faults.pop(account, None)
            _counters.pop(account, None)
    with _lock:
        out = {
            "account": account,
            "settings": dict(_faults.get(account) or _faults.get("*") or _DEFAULT),
            "counters": json.loads(json.dumps(_counters.get(account, {"ops": {}, "get_block": {}, "faults": 0}))),
        }
    return _json(start_response, "200 OK", out)


# S3's own error documents (XML), as S3 answers them.
S3_FAULTS = {
    "slowdown": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": ("500 Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}
_S3_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/s3/aws4_request")


def _s3_fault(environ, start_response):
    """An injected S3 error for this request, or None."""
    m = _S3_CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if not m:
        return None
    from moto.iam.models import get_account_id_from

    account = get_account_id_from(m.group(1))
    s = settings_for(account)
    if not (s.get("s3_rate", 0) > 0 and s.get("s3_kinds") and random.random() < s["s3_rate"]):
        return None
    length = environ.get("CONTENT_LENGTH")
    if not length and environ.get("HTTP_TRANSFER_ENCODING"):
        return None  # a body of unknown length: not failed, so the connection stays in step
    environ["wsgi.input"].read(int(length or 0))
    with _lock:
        c = _counters.setdefault(account, {"ops": {}, "get_block": {}, "faults": 0})
        c["s3_faults"] = c.get("s3_faults", 0) + 1
    status, code, message = S3_FAULTS[random.choice(s["s3_kinds"])]
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>{uuid.uuid4().hex}</RequestId></Error>").encode()
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _json(start_response, status, value):
    body = json.dumps(value).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _install_control_endpoint():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        if environ.get("PATH_INFO") == "/skiff/faults":
            return control(environ, start_response)
        fault = _s3_fault(environ, start_response)
        if fault is not None:
            return fault
        return original(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call


# ---------------------------------------------------------------- model


class DirectApiSnapshot(Ec2Snapshot):
    # AWS: snapshots created with StartSnapshot have no source volume; EC2
    # reports their VolumeId as "vol-ffffffff".
    @property
    def volume_id(self):
        return "vol-ffffffff"


def _b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class Snap:
    """One EBS snapshot as the direct APIs see it."""

    def __init__(self, account_id, ec2_snapshot, volume_size, parent=None, description="", tags=None):
        self.account_id = account_id
        self.ec2 = ec2_snapshot
        self.snapshot_id = ec2_snapshot.id
        self.volume_size = volume_size
        self.block_size = BLOCK_SIZE
        self.status = "pending"
        self.start_time = ec2_models_utcnow()
        self.description = description
        self.tags = tags or []
        # index -> (data, base64 sha256); shared with the parent where inherited.
        self.blocks = {}
        # index -> the token a reader must present (per snapshot, as in AWS).
        self.tokens = {}
        # blocks written into this snapshot (not inherited): index -> raw digest
        self.written = {}
        # AWS: ListChangedBlocks works only between snapshots of one lineage.
        self.lineage = parent.lineage if parent else self.snapshot_id
        if parent:
            # AWS: "When you specify a parent snapshot, the new snapshot inherits
            # the blocks of the parent; you write only the changed blocks."
            for idx, block in parent.blocks.items():
                self.blocks[idx] = block
                self.tokens[idx] = str(uuid.uuid4())

    @property
    def blocks_limit(self):
        return self.volume_size * GIB // BLOCK_SIZE


def ec2_models_utcnow():
    from moto.core.utils import utcnow

    return utcnow()


class Backend(ebs_models.EBSBackend):
    # moto finds a service's URL map next to its backend's module.
    __module__ = "moto.ebs.models"

    def __init__(self, region_name, account_id):
        super().__init__(region_name, account_id)
        self.snaps = {}
        self.client_tokens = {}

    def get(self, snapshot_id, completed=True):
        snap = self.snaps.get(snapshot_id)
        if snap is None:
            raise not_found(f"The snapshot '{snapshot_id}' does not exist.")
        # AWS: reading blocks or listing them needs a completed snapshot.
        if completed and snap.status != "completed":
            raise validation(f"The snapshot '{snapshot_id}' is not in the completed state.", "INVALID_SNAPSHOT_ID")
        return snap

    def start(self, volume_size, tags, description, parent_id, client_token):
        # AWS: ClientToken makes StartSnapshot idempotent.
        if client_token and client_token in self.client_tokens:
            return self.snaps[self.client_tokens[client_token]]
        if not isinstance(volume_size, int) or not 1 <= volume_size <= MAX_VOLUME_GIB:
            raise validation(f"VolumeSize must be between 1 and {MAX_VOLUME_GIB} GiB, got {volume_size}", "INVALID_VOLUME_SIZE")
        parent = None
        if parent_id:
            parent = self.get(parent_id)
            # AWS: "The volume size of the new snapshot must be greater than or
            # equal to the volume size of the parent."
            if volume_size < parent.volume_size:
                raise validation("VolumeSize must be at least the parent snapshot's volume size", "INVALID_VOLUME_SIZE")
        vol = self.ec2_backend.create_volume(size=volume_size, zone_name=f"{self.region_name}a")
        snapshot = self.ec2_backend.create_snapshot(volume_id=vol.id, description=description or "")
        # No volume exists behind a direct-API snapshot.
        self.ec2_backend.volumes.pop(vol.id, None)
        snapshot.__class__ = DirectApiSnapshot
        snapshot.status = "pending"
        if tags:
            snapshot.add_tags({t["Key"]: t["Value"] for t in tags})
        snap = Snap(self.account_id, snapshot, volume_size, parent, description, tags)
        self.snaps[snap.snapshot_id] = snap
        if client_token:
            self.client_tokens[client_token] = snap.snapshot_id
        return snap

    def put(self, snapshot_id, index, data, length, checksum, algorithm):
        snap = self.get(snapshot_id, completed=False)
        if snap.status != "pending":
            raise validation(f"The snapshot '{snapshot_id}' is not pending; blocks can be written only before CompleteSnapshot.", "INVALID_SNAPSHOT_ID")
        # AWS: BlockIndex "must be a logical index within the volume size".
        if index is None or index < 0 or index >= snap.blocks_limit:
            raise validation(f"BlockIndex {index} is outside the volume ({snap.blocks_limit} blocks)", "INVALID_BLOCK")
        # AWS: "The data must be exactly 524288 bytes" (DataLength and the payload).
        if length != BLOCK_SIZE or data is None or len(data) != BLOCK_SIZE:
            got = None if data is None else len(data)
            raise validation(f"DataLength must be {BLOCK_SIZE} and match the data ({length}, {got} bytes)", "INVALID_BLOCK")
        # AWS: ChecksumAlgorithm SHA256 and a Checksum the service verifies.
        if algorithm != "SHA256":
            raise validation(f"ChecksumAlgorithm must be SHA256, got {algorithm}")
        actual = _b64sha(data)
        if checksum != actual:
            raise validation("The checksum of the data does not match the Checksum parameter", "INVALID_BLOCK")
        snap.blocks[index] = (bytes(data), actual)
        snap.tokens[index] = str(uuid.uuid4())
        snap.written[index] = hashlib.sha256(data).digest()
        return actual

    def complete(self, snapshot_id, count, checksum, algorithm, method):
        snap = self.get(snapshot_id, completed=False)
        if snap.status != "pending":
            return snap.status
        ok = True
        # AWS: ChangedBlocksCount is "the number of blocks that were written to the snapshot".
        if count is not None and count != len(snap.written):
            ok = False
        # AWS: with ChecksumAggregationMethod LINEAR the checksum is the SHA-256 of
        # the per-block SHA-256 checksums, in block-index order; a mismatch fails the snapshot.
        if checksum is not None:
            if algorithm != "SHA256" or method != "LINEAR":
                raise validation("Checksum needs ChecksumAlgorithm SHA256 and ChecksumAggregationMethod LINEAR")
            h = hashlib.sha256()
            for idx in sorted(snap.written):
                h.update(snap.written[idx])
            if base64.b64encode(h.digest()).decode() != checksum:
                ok = False
        snap.status = "completed" if ok else "error"
        snap.ec2.status = snap.status
        return snap.status

    def block(self, snapshot_id, index, token):
        snap = self.get(snapshot_id)
        # AWS: the BlockToken must be the one ListSnapshotBlocks/ListChangedBlocks gave.
        if index not in snap.blocks or snap.tokens.get(index) != token:
            raise validation(f"The block token for block {index} is not valid", "INVALID_BLOCK_TOKEN")
        return snap.blocks[index]

    def page_start(self, ids, start, max_results, next_token):
        """Where a page of a sorted block listing starts, and how many blocks it may hold."""
        if max_results is None:
            max_results = MAX_RESULTS
        if not MIN_RESULTS <= max_results <= MAX_RESULTS:
            raise validation(f"MaxResults must be between {MIN_RESULTS} and {MAX_RESULTS}")
        begin = start or 0
        if next_token:
            try:
                tok = json.loads(base64.b64decode(next_token))
                if tok["s"] != list(ids):
                    raise ValueError("a token of another listing")
                begin = max(begin, int(tok["i"]))
            except Exception:
                raise validation("The pagination token is not valid", "INVALID_PAGE_TOKEN")
        return begin, max_results


def page_token(ids, index):
    """An opaque NextToken: the listing it belongs to and where the next page starts."""
    return base64.b64encode(json.dumps({"s": list(ids), "i": index}).encode()).decode()


def snapshot_page(snap, begin, limit):
    ids = (snap.snapshot_id,)
    indexes = sorted(i for i in snap.blocks if i >= begin)
    chosen = indexes[:limit]
    nxt = page_token(ids, chosen[-1] + 1) if len(indexes) > limit else None
    return [{"BlockIndex": i, "BlockToken": snap.tokens[i]} for i in chosen], nxt


def changed_page(first, second, begin, limit):
    ids = (first.snapshot_id if first else "", second.snapshot_id)
    # AWS: "Returns information about the blocks that are different between two
    # snapshots of the same volume/snapshot lineage": blocks in either snapshot
    # whose data differ, including blocks present in only one of them.
    first_blocks = first.blocks if first else {}
    changed = []
    for i in sorted(set(first_blocks) | set(second.blocks)):
        if i < begin:
            continue
        a, b = first_blocks.get(i), second.blocks.get(i)
        if a is not None and b is not None and (a is b or a[0] == b[0]):
            continue
        changed.append(i)
    chosen = changed[:limit]
    nxt = page_token(ids, chosen[-1] + 1) if len(changed) > limit else None
    out = []
    for i in chosen:
        entry = {"BlockIndex": i}
        if i in first_blocks:
            entry["FirstBlockToken"] = first.tokens[i]
        if i in second.blocks:
            entry["SecondBlockToken"] = second.tokens[i]
        out.append(entry)
    return out, nxt


class Responses(ebs_responses.EBSResponse):
    @property
    def backend(self):
        return ebs_backends[self.current_account][self.region]

    def _fault(self, op, snapshot=None):
        _count(self.current_account, op, snapshot)
        _maybe_fail(self.current_account, op)

    def _int(self, name):
        v = self._get_param(name)
        return None if v is None else int(v)

    def start_snapshot(self):
        self._fault("StartSnapshot")
        snap = self.backend.start(
            self._int("VolumeSize"),
            self._get_param("Tags"),
            self._get_param("Description"),
            self._get_param("ParentSnapshotId"),
            self._get_param("ClientToken"),
        )
        return ActionResult(
            {
                "SnapshotId": snap.snapshot_id,
                "OwnerId": snap.account_id,
                "Status": snap.status,
                "StartTime": snap.start_time,
                "VolumeSize": snap.volume_size,
                "BlockSize": snap.block_size,
                "Tags": snap.tags,
                "Description": snap.description,
                "ParentSnapshotId": self._get_param("ParentSnapshotId"),
            }
        )

    def complete_snapshot(self):
        self._fault("CompleteSnapshot")
        status = self.backend.complete(
            self._get_param("SnapshotId"),
            self._int("ChangedBlocksCount"),
            self._get_param("Checksum"),
            self._get_param("ChecksumAlgorithm"),
            self._get_param("ChecksumAggregationMethod"),
        )
        return ActionResult({"Status": status})

    def put_snapshot_block(self):
        snapshot_id = self._get_param("SnapshotId")
        self._fault("PutSnapshotBlock")
        checksum = self.backend.put(
            snapshot_id,
            self._int("BlockIndex"),
            self._get_param("BlockData"),
            self._int("DataLength"),
            self._get_param("Checksum"),
            self._get_param("ChecksumAlgorithm"),
        )
        return ActionResult({"Checksum": checksum, "ChecksumAlgorithm": "SHA256"})

    def get_snapshot_block(self):
        snapshot_id = self._get_param("SnapshotId")
        self._fault("GetSnapshotBlock", snapshot_id)
        data, checksum = self.backend.block(snapshot_id, self._int("BlockIndex"), self._get_param("BlockToken"))
        if random.random() < settings_for(self.current_account)["corrupt_rate"]:
            # Fault: a checksum that does not match the data, as a damaged transfer would show.
            checksum = _b64sha(data + b"corrupt")
        return ActionResult({"DataLength": len(data), "BlockData": data, "Checksum": checksum, "ChecksumAlgorithm": "SHA256"})

    def list_snapshot_blocks(self):
        snapshot_id = self._get_param("SnapshotId")
        self._fault("ListSnapshotBlocks")
        snap = self.backend.get(snapshot_id)
        ids = (snapshot_id,)
        begin, limit = self.backend.page_start(ids, self._int("StartingBlockIndex"), self._int("MaxResults"), self._get_param("NextToken"))
        if random.random() < settings_for(self.current_account)["empty_page_rate"]:
            blocks, nxt = [], page_token(ids, begin)  # AWS may answer an empty page with a NextToken
        else:
            blocks, nxt = snapshot_page(snap, begin, limit)
        return ActionResult(
            {"Blocks": blocks, "NextToken": nxt, "VolumeSize": snap.volume_size, "BlockSize": snap.block_size, "ExpiryTime": snap.start_time}
        )

    def list_changed_blocks(self):
        self._fault("ListChangedBlocks")
        first_id = self._get_param("FirstSnapshotId")
        second = self.backend.get(self._get_param("SecondSnapshotId"))
        first = self.backend.get(first_id) if first_id else None
        # AWS: ValidationException UNRELATED_SNAPSHOTS when they are not of one lineage.
        if first is not None and first.lineage != second.lineage:
            raise validation("The snapshots are not related", "UNRELATED_SNAPSHOTS")
        ids = (first.snapshot_id if first else "", second.snapshot_id)
        begin, limit = self.backend.page_start(ids, self._int("StartingBlockIndex"), self._int("MaxResults"), self._get_param("NextToken"))
        if random.random() < settings_for(self.current_account)["empty_page_rate"]:
            blocks, nxt = [], page_token(ids, begin)  # AWS may answer an empty page with a NextToken
        else:
            blocks, nxt = changed_page(first, second, begin, limit)
        return ActionResult(
            {"ChangedBlocks": blocks, "NextToken": nxt, "VolumeSize": second.volume_size, "BlockSize": second.block_size, "ExpiryTime": second.start_time}
        )


ebs_backends = ebs_models.BackendDict(Backend, "ebs")


def apply():
    import moto.ebs

    ebs_models.ebs_backends = ebs_backends
    ebs_responses.ebs_backends = ebs_backends
    moto.ebs.ebs_backends = ebs_backends
    # The URL map dispatches to EBSResponse.dispatch: point its methods at ours.
    for name in (
        "start_snapshot",
        "complete_snapshot",
        "put_snapshot_block",
        "get_snapshot_block",
        "list_snapshot_blocks",
        "list_changed_blocks",
    ):
        setattr(ebs_responses.EBSResponse, name, getattr(Responses, name))
    ebs_responses.EBSResponse.backend = Responses.backend
    ebs_responses.EBSResponse._fault = Responses._fault
    ebs_responses.EBSResponse._int = Responses._int
    _install_control_endpoint()
