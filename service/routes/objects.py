"""``POST /obj/create`` and ``POST /files/create``: what Weave's client publishes before a call.

A ``WeaveClient`` sends no call until its op is saved as an object (JSON) and the op's
source as a file (multipart form), so the service accepts and stores both and answers with
the same content digests as Weave (``weave/shared/digest.py``): SHA-256, URL-safe base64
with ``-``/``_`` spelled ``X``/``Y`` and no padding, over the file bytes or over the
object's JSON with sorted keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile, status

from engine.errors import InvalidRequestError
from service.deps import PrincipalDep, StoreDep, json_body
from service.wire import FileCreateRes, ObjCreateReq, ObjCreateRes

router = APIRouter(tags=["objects"])

MAX_OBJECT_ID = 128
_BAD_NAME_CHARS = re.compile(r"[^\w._-]")


def bytes_digest(content: bytes) -> str:
    """Weave's content digest.

    Examples
    --------
    >>> bytes_digest(b"hello")
    'LPJNulXwow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ'
    """
    encoded = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).decode()
    return encoded.replace("-", "X").replace("_", "Y").rstrip("=")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and Python's default separators, as Weave digests objects."""
    return json.dumps(value, sort_keys=True)


def object_classes(val: Any) -> tuple[str | None, str | None]:
    """``(base_object_class, leaf_object_class)`` from a ``weave.Object`` payload's
    ``_bases``/``_class_name``, else ``(None, None)``."""
    bases = val.get("_bases") if isinstance(val, dict) else None
    if not isinstance(bases, list) or len(bases) < 2:
        return None, None
    if bases[-1] != "BaseModel" or bases[-2] not in ("BaseObject", "Object"):
        return None, None
    leaf = val.get("_class_name")
    return (bases[-3] if len(bases) > 2 else leaf), leaf


def object_kind(val: Any) -> str:
    """``"op"`` for a serialized op, ``"object"`` otherwise (the reference's rule)."""
    if isinstance(val, dict) and "_type" in val:
        weave_type = val.get("weave_type")
        kind = weave_type.get("type") if isinstance(weave_type, dict) else val["_type"]
        return "op" if kind == "Op" else "object"
    return "object"


def _check_digest(expected: str | None, actual: str, label: str) -> None:
    if expected is not None and expected != actual:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"Client {label} digest {expected} != server digest {actual}"
        )


@router.post("/obj/create")
def obj_create(
    req: Annotated[ObjCreateReq, json_body(ObjCreateReq)], store: StoreDep, principal: PrincipalDep
) -> ObjCreateRes:
    """Store an object version under its content digest (idempotent)."""
    obj = req.obj
    principal.check(obj.project_id)
    if obj.builtin_object_class is not None and not isinstance(obj.val, dict):
        raise InvalidRequestError(
            "object_class cannot be provided for non-dict objects", path="obj.val"
        )
    bad = sorted(set(_BAD_NAME_CHARS.findall(obj.object_id)))
    if bad or not obj.object_id or len(obj.object_id) > MAX_OBJECT_ID:
        raise InvalidRequestError(
            f"Invalid object name: {obj.object_id!r} (letters, digits, '.', '_', '-'; "
            f"1 to {MAX_OBJECT_ID} characters)",
            path="obj.object_id",
        )
    text = canonical_json(obj.val)
    digest = bytes_digest(text.encode())
    _check_digest(obj.expected_digest, digest, f"obj {obj.object_id!r}")
    base, leaf = object_classes(obj.val)
    store.add_object(
        {
            "project_id": obj.project_id,
            "object_id": obj.object_id,
            "digest": digest,
            "val": text,
            "kind": object_kind(obj.val),
            "base_object_class": base,
            "leaf_object_class": leaf,
            "wb_user_id": obj.wb_user_id or principal.user,
        }
    )
    return ObjCreateRes(digest=digest, object_id=obj.object_id)


@router.post("/files/create")
def file_create(
    project_id: Annotated[str, Form()],
    file: Annotated[UploadFile, File()],
    store: StoreDep,
    principal: PrincipalDep,
    expected_digest: Annotated[str | None, Form()] = None,
) -> FileCreateRes:
    """Store file content (multipart form: ``project_id``, ``file``, ``expected_digest``)."""
    principal.check(project_id)
    content = file.file.read()
    digest = bytes_digest(content)
    _check_digest(expected_digest, digest, "file")
    store.add_file(project_id, digest, file.filename or "file", content)
    return FileCreateRes(digest=digest)
