"""Media types by file extension, for attachments named without a ``mime_type``."""

from __future__ import annotations

#: The type of an attachment named without one, by its extension. A fixed table, not the
#: ``mimetypes`` module: that one reads the host's ``mime.types`` files, so the same message
#: would render differently on another machine (and the core would read files).
TYPES_BY_EXTENSION = {
    "7z": "application/x-7z-compressed", "avif": "image/avif", "bmp": "image/bmp",
    "csv": "text/csv", "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "eml": "message/rfc822", "epub": "application/epub+zip", "gif": "image/gif",
    "gz": "application/gzip", "heic": "image/heic", "htm": "text/html", "html": "text/html",
    "ics": "text/calendar", "jpeg": "image/jpeg", "jpg": "image/jpeg",
    "js": "text/javascript", "json": "application/json", "md": "text/markdown",
    "mov": "video/quicktime", "mp3": "audio/mpeg", "mp4": "video/mp4",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odt": "application/vnd.oasis.opendocument.text", "ogg": "audio/ogg",
    "p7m": "application/pkcs7-mime", "p7s": "application/pkcs7-signature",
    "pdf": "application/pdf", "png": "image/png", "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "rtf": "application/rtf", "svg": "image/svg+xml", "tar": "application/x-tar",
    "tif": "image/tiff", "tiff": "image/tiff", "txt": "text/plain", "vcf": "text/vcard",
    "wav": "audio/wav", "webm": "video/webm", "webp": "image/webp",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xml": "application/xml", "yaml": "application/yaml", "yml": "application/yaml",
    "zip": "application/zip",
}  # fmt: skip


def guess_type(filename: str) -> str:
    """The media type of a file name by its extension (case ignored), or
    ``application/octet-stream``."""
    extension = filename.rpartition(".")[2].lower() if "." in filename else ""
    return TYPES_BY_EXTENSION.get(extension, "application/octet-stream")
