"""Vehicle Detections Ingest API: vehicle images uploaded by a registered device.

`POST /devices/{deviceId}/images` takes a multipart/form-data body with
one `image` file part, any number of `contextImages` file parts and the
optional text fields `capturedAt`, `latitude` and `longitude`. All images
together may hold at most 9 MiB (9437184 bytes), as Flock documents.

The body is never buffered whole. A declared Content-Length above the
limit for the whole body is rejected with 413 before any of it is read.
A body without one (chunked) is counted while it streams, and rejected
with 413 as soon as it passes that limit. File parts go to temporary
files, as starlette spools them; text fields may hold at most 1 KiB each.

What is modeled, where Flock publishes nothing:

- Flock reads the plate by OCR, which a mock cannot do. The text fields
  `plate` and `state` (mockflock only) take the place of that result.
  With `plate`, the upload creates a read with confidence 1.0 on the
  device's network. The Plate Lookup and LPR Search APIs then find it,
  and hotlist alert webhooks fire for it. Without `plate`, the upload is
  only recorded.
- The whole multipart body may exceed the 9 MiB of images by 256 KiB, for
  text fields, part headers and boundaries.
- A text field or part that the contract does not list is rejected with
  400. So are a body cut off before its closing boundary, an empty image,
  and an image whose Content-Type is neither image/jpeg nor
  application/octet-stream. Image bytes are not decoded.
- latitude and longitude must be given together. capturedAt may be any
  instant from year 1 to year 9999 in UTC, in the past or the future.
- An upload to a decommissioned device is rejected with 409.
- Each accepted upload is recorded, without its bytes, in the
  organization's `image_uploads` collection.
"""

from __future__ import annotations

import inspect
import logging
import math
import uuid
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message

from mockflock.apis import validation
from mockflock.apis.base import Call, handles
from mockflock.apis.devices import find_device, now
from mockflock.apis.plate_lookup import normalize_plate, parse_date_time, plate_key
from mockflock.errors import ApiError
from mockflock.seed import format_timestamp

logger = logging.getLogger(__name__)

OPERATION = "uploadVehicleImages"
MIB = 1024 * 1024
MAX_IMAGE_BYTES = 9 * MIB
# Room beyond the images for text fields, part headers and boundaries.
FORM_OVERHEAD_BYTES = 256 * 1024
MAX_BODY_BYTES = MAX_IMAGE_BYTES + FORM_OVERHEAD_BYTES
MAX_FIELD_BYTES = 1024
MAX_FIELDS = 16
MAX_FILES = 64
FILE_FIELDS = ("image", "contextImages")
TEXT_FIELDS = ("capturedAt", "latitude", "longitude", "plate", "state")
IMAGE_TYPES = ("image/jpeg", "application/octet-stream")


def _mib(size: int) -> str:
    return f"{size / MIB:.2f} MiB ({size} bytes)"


def _bad_request(description: str, field: str | None = None) -> ApiError:
    return ApiError(
        description, status=400, error="invalid_request", extra={"field": field} if field else None
    )


def _too_large(description: str) -> ApiError:
    return ApiError(
        description,
        status=413,
        error="max_image_size_exceeded",
        extra={"limit": MAX_IMAGE_BYTES},
    )


def _boundary(request: Request) -> bytes:
    """Return the multipart boundary of the request's Content-Type, or raise 400."""
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "(none)"
        raise _bad_request(
            f"Content-Type {shown!r} is not accepted; send the images as multipart/form-data "
            "with an 'image' file part."
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise _bad_request("The multipart/form-data Content-Type has no boundary parameter.")
    return boundary


def _check_declared_length(request: Request) -> None:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return
    size = int(declared)
    if size > MAX_BODY_BYTES:
        raise _too_large(
            f"The request body declares {_mib(size)} in Content-Length, so its images exceed the "
            f"9 MiB ({MAX_IMAGE_BYTES} bytes) that one upload may hold; the whole multipart body may have at "
            f"most {_mib(MAX_BODY_BYTES)}. Send fewer or smaller context images."
        )


def _guarded(request: Request, boundary: bytes) -> Request:
    """Return the request with a body stream that checks its size and its end as it streams.

    The stream raises 413 once the body passes MAX_BODY_BYTES, and 400 when
    the body ends without the closing delimiter `--boundary--`. starlette
    accepts such a cut-off body as a form without the unfinished part, and
    leaves that part's temporary file open, so it must fail while parsing.
    """
    closing = b"--" + boundary + b"--"
    received = 0
    tail = b""
    closed = False

    async def receive() -> Message:
        nonlocal received, tail, closed
        message = await request.receive()
        if message["type"] != "http.request":
            return message
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > MAX_BODY_BYTES:
            raise _too_large(
                f"The request body passed {_mib(MAX_BODY_BYTES)} while streaming, so its images exceed "
                f"the 9 MiB ({MAX_IMAGE_BYTES} bytes) that one upload may hold. "
                "Send fewer or smaller context images."
            )
        window = tail + chunk
        closed = closed or closing in window
        tail = window[-len(closing) :]
        if not message.get("more_body", False) and not closed:
            raise _bad_request(
                f"The multipart body ends after {received} bytes without its closing delimiter "
                f"{closing.decode('latin-1')!r}; the upload was cut off or is malformed."
            )
        return message

    return Request(request.scope, receive)


async def _read_form(request: Request, boundary: bytes) -> FormData:
    try:
        return await _guarded(request, boundary).form(
            max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES
        )
    except HTTPException as exc:
        raise _bad_request(
            f"The multipart body is malformed: {exc.detail} Text fields may have at most {MAX_FIELD_BYTES} "
            "bytes, and file parts need a filename in their Content-Disposition."
        ) from None
    except ClientDisconnect:
        raise _bad_request("The client disconnected before sending the whole body.") from None


def _files(form: FormData, name: str) -> list[UploadFile]:
    parts = form.getlist(name)
    for part in parts:
        if not isinstance(part, UploadFile):
            raise _bad_request(
                f"{name} must be a file part, with a filename in its Content-Disposition; received a text field.",
                name,
            )
        content_type = (
            (part.content_type or "application/octet-stream").split(";")[0].strip().lower()
        )
        if content_type not in IMAGE_TYPES:
            raise _bad_request(
                f"{name} must be a JPEG image (image/jpeg); received Content-Type {content_type!r}.",
                name,
            )
    return parts  # type: ignore[return-value]


def _text_fields(form: FormData) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in TEXT_FIELDS:
        values = form.getlist(name)
        if len(values) > 1:
            raise _bad_request(f"{name} is given {len(values)} times; send it at most once.", name)
        if values:
            if not isinstance(values[0], str):
                raise _bad_request(f"{name} must be a text field, not a file part.", name)
            fields[name] = values[0]
    return fields


def _coordinate(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad_request(f"{name} must be a number; received {text[:80]!r}.", name) from None
    if not math.isfinite(value):
        raise _bad_request(f"{name} must be a finite number; received {text[:80]!r}.", name)
    return value


def _parse_form(form: FormData) -> tuple[list[UploadFile], dict[str, Any]]:
    """Return the images (main image first) and the typed text fields, checked against the contract."""
    unknown = sorted({name for name in form.keys() if name not in FILE_FIELDS + TEXT_FIELDS})
    if unknown:
        raise _bad_request(
            f"The form has fields the contract does not define: {', '.join(repr(name[:80]) for name in unknown)}. "
            f"Accepted fields: {', '.join(FILE_FIELDS + TEXT_FIELDS)}.",
            unknown[0],
        )

    images = _files(form, "image")
    if len(images) != 1:
        raise _bad_request(
            f"The form must have exactly one 'image' file part; received {len(images)}.", "image"
        )
    context_images = _files(form, "contextImages")

    fields = _typed_fields(form)
    # The contract types binary parts as strings, so a placeholder string
    # takes the place of each file part in the schema check.
    described = {"image": "<binary>", **fields}
    if context_images:
        described["contextImages"] = ["<binary>"] * len(context_images)
    validation.validate_body(OPERATION, described, media_type="multipart/form-data")

    if "capturedAt" in fields:
        fields["capturedAt"] = parse_date_time("capturedAt", fields["capturedAt"], status=400)
    if "plate" in fields:
        fields["plate"] = normalize_plate(fields["plate"])
        if not fields["plate"]:
            raise _bad_request(
                "plate must contain letters or digits; received only spaces or hyphens.", "plate"
            )
    return images + context_images, fields


def _typed_fields(form: FormData) -> dict[str, Any]:
    """Return the text fields, with latitude and longitude as numbers given together."""
    fields: dict[str, Any] = _text_fields(form)
    for name in ("latitude", "longitude"):
        if name in fields:
            fields[name] = _coordinate(name, fields[name])
    if ("latitude" in fields) != ("longitude" in fields):
        given, missing = (
            ("latitude", "longitude") if "latitude" in fields else ("longitude", "latitude")
        )
        raise _bad_request(f"{given} was given without {missing}; send both or neither.", missing)
    return fields


def _check_sizes(images: list[UploadFile]) -> int:
    if not images[0].size:
        raise _bad_request("image is empty; send the JPEG bytes of the vehicle image.", "image")
    total = sum(image.size or 0 for image in images)
    if total > MAX_IMAGE_BYTES:
        raise _too_large(
            f"The images total {_mib(total)}, more than the 9 MiB ({MAX_IMAGE_BYTES} bytes) that one upload "
            "may hold. Send fewer or smaller context images."
        )
    return total


def _create_read(
    call: Call, device: dict[str, Any], fields: dict[str, Any], captured: float
) -> dict[str, Any]:
    location = device["location"]
    latitude = fields.get("latitude", location.get("latitude"))
    longitude = fields.get("longitude", location.get("longitude"))
    read = {
        "id": str(uuid.uuid4()),
        "plate": fields["plate"],
        "state": fields.get("state"),
        "timestamp": format_timestamp(captured),
        "deviceId": device["id"],
        "networkId": device["networkId"],
        "latitude": latitude,
        "longitude": longitude,
        "plateConfidence": 1.0,
        "stateConfidence": 1.0 if "state" in fields else None,
        "source": "upload",
    }
    call.data.collection("reads")[read["id"]] = read
    return read


async def _notify_webhooks(call: Call, read: dict[str, Any]) -> None:
    try:
        from mockflock import webhooks
    except ModuleNotFoundError as exc:
        if exc.name != "mockflock.webhooks":
            raise
        logger.warning(
            "Read %s created, but mockflock.webhooks is missing, so no alert was checked",
            read["id"],
        )
        return
    try:
        # Pass the normalized plate; on_read compares it with hotlist
        # entries on its own key, which ignores spaces and hyphens too.
        alerting = {**read, "plate": plate_key(read["plate"])}
        result = webhooks.on_read(call.request.app.state.mock, call.env.name, call.data, alerting)
        if inspect.isawaitable(result):
            await result
    except Exception:
        # The read is stored either way; a failing alert must not fail the upload.
        logger.exception("Checking alerts for read %s failed", read["id"])


def _active_device(call: Call, device_id: str) -> dict[str, Any]:
    """Return the device, or raise 404 when unknown and 409 when decommissioned."""
    with call.data.lock:
        device = find_device(call, device_id)
        if device["status"] == "decommissioned":
            raise ApiError(
                f"Device {device_id!r} was decommissioned at {device['decommissionedAt']} and takes no more "
                "images. Register a new device with POST /devices.",
                status=409,
                error="conflict",
            )
    return device


def _check_captured_at(form: FormData, captured: float) -> None:
    try:
        format_timestamp(captured)
    except (ValueError, OverflowError, OSError):
        raise _bad_request(
            f"capturedAt {form['capturedAt'][:80]!r} falls outside the years 0001 to 9999 once converted "
            "to UTC; send a time within them.",
            "capturedAt",
        ) from None


def _record_upload(
    call: Call,
    device_id: str,
    received: float,
    captured: float,
    images: list[UploadFile],
    read_id: str | None,
) -> str:
    upload_id = str(uuid.uuid4())
    call.data.collection("image_uploads")[upload_id] = {
        "id": upload_id,
        "deviceId": device_id,
        "receivedAt": format_timestamp(received),
        "capturedAt": format_timestamp(captured),
        "imageBytes": sum(image.size or 0 for image in images),
        "contextImages": len(images) - 1,
        "readId": read_id,
    }
    return upload_id


@handles(OPERATION)
async def upload_vehicle_images(call: Call) -> Response:
    request = call.request
    boundary = _boundary(request)
    device_id = call.path_param("deviceId")
    device = _active_device(call, device_id)
    _check_declared_length(request)

    form = await _read_form(request, boundary)
    try:
        images, fields = _parse_form(form)
        total = _check_sizes(images)
    finally:
        await form.close()
    received = now(call)
    captured = fields.get("capturedAt", received)
    _check_captured_at(form, captured)

    read = None
    with call.data.lock:
        if "plate" in fields:
            read = _create_read(call, device, fields, captured)
        upload_id = _record_upload(
            call, device_id, received, captured, images, read["id"] if read else None
        )
    logger.info(
        "Upload %s of %d images (%d bytes) from device %s", upload_id, len(images), total, device_id
    )
    if read is not None:
        await _notify_webhooks(call, read)
    return Response(status_code=204)
