"""A ListObjectsV2 page written plainly, read without an XML parser.

S3 (and the fakes a sweep is tested against) write a listing page in one shape: no comment,
no whitespace between elements, the root's simple fields, then one ``<Contents>`` after
another (``Key``, ``LastModified``, ``ETag``, checksums, ``Size``, then more simple fields or
an ``Owner``). :func:`read_plain_page` reads exactly that shape, a ``<Contents>`` at a
time with one native pattern (~0.7 ms a page of 1,000 keys, where ElementTree took ~3 ms
of the listing thread's GIL, under the scan's imports), and answers None for anything
else: a page written otherwise is parsed as XML by the caller (:func:`pyaudit.remote.
_parse_listing`), so that both give the same answer for every page this one reads (held
against ElementTree in tests/test_s3listing.py).
"""

from __future__ import annotations

import re

#: (key, size, ETag as written) of each object, and the root's simple fields by name (the
#: first of a name), as the XML parse gives them.
PlainPage = tuple[list[tuple[str, int, str]], dict[str, str]]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
# Text as it stands in XML: no markup, no character the parse changes (CR) or refuses
# (control characters; ">" only in "]]>", but S3 writes it as an entity anyway); "&" only
# in a text whose entities xml_text reads. U+FFFE and U+FFFF, which it refuses too, are looked
# for in the text too.
_TEXT = r"[^<>\x00-\x08\x0b\x0c\r\x0e-\x1f\ufffe\uffff]*"
_PLAIN_TEXT = r"[^<>&\x00-\x08\x0b\x0c\r\x0e-\x1f\ufffe\uffff]*"
_ROOT = re.compile(r'[ \t\n]*<ListBucketResult(?: xmlns="[^"<>&]*")?>')
_SIMPLE = re.compile(r"<([A-Za-z]+)>(" + _TEXT + r")</\1>")  # a field of the root
_CONTENTS = re.compile(
    r"<Contents><Key>(" + _TEXT + r")</Key>"
    r"(?:<LastModified>" + _PLAIN_TEXT + r"</LastModified>)?"
    r"<ETag>(" + _TEXT + r")</ETag>"
    r"(?:<(Checksum[A-Za-z]*)>" + _PLAIN_TEXT + r"</\3>)*"
    r"<Size>([0-9]{1,19})</Size>"
    r"(?:<([A-Za-z]+)>" + _PLAIN_TEXT + r"</\5>"
    r"|<Owner>(?:<(ID|DisplayName)>" + _PLAIN_TEXT + r"</\6>)*</Owner>)*"
    r"</Contents>"
)
_END = re.compile(r"</ListBucketResult>[ \t\n]*")
_ENTITIES = {"lt": "<", "gt": ">", "quot": '"', "apos": "'", "amp": "&"}


def xml_text(raw: str) -> str | None:
    """An element's text as the XML parse gives it: the five predefined entities replaced;
    None for a character reference (or an "&" that is none)."""
    if "&" not in raw:
        return raw
    parts = raw.split("&")
    out = [parts[0]]
    for part in parts[1:]:
        name, semi, rest = part.partition(";")
        entity = _ENTITIES.get(name) if semi else None
        if entity is None:
            return None
        out.append(entity + rest)
    return "".join(out)


def _fields(page: str, at: int, fields: dict[str, str]) -> int | None:
    """The root's simple fields from ``at`` on, into ``fields`` (the first of a name kept);
    where they end, or None for one whose text is not plain."""
    while (found := _SIMPLE.match(page, at)) is not None:
        text = xml_text(found.group(2))
        if text is None:
            return None
        fields.setdefault(found.group(1), text)
        at = found.end()
    return at


def read_plain_page(body: bytes) -> PlainPage | None:
    """The objects and fields of a ListObjectsV2 page written plainly (see the module), or
    None: a page to be parsed as XML."""
    try:
        page = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    root = _ROOT.match(page, len(_DECLARATION) if page.startswith(_DECLARATION) else 0)
    if root is None:
        return None
    fields: dict[str, str] = {}
    at = _fields(page, root.end(), fields)
    if at is None:
        return None
    items: list[tuple[str, int, str]] = []
    while (found := _CONTENTS.match(page, at)) is not None:
        key, etag = found.group(1, 2)
        if "&" in key or "&" in etag:
            key, etag = xml_text(key), xml_text(etag)
            if key is None or etag is None:
                return None
        items.append((key, int(found.group(4)), etag))
        at = found.end()
    at = _fields(page, at, fields)
    if at is None or _END.fullmatch(page, at) is None:
        return None
    return items, fields
