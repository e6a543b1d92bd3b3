"""pyaudit.s3listing: a ListObjectsV2 page read without an XML parser gives what ElementTree
gives (pyaudit.remote._parse_listing_xml), for every page it reads; it reads the pages S3
and the static fake write; anything else it leaves to the XML parse (None)."""

from __future__ import annotations

from xml.sax.saxutils import escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyaudit.remote import _parse_listing, _parse_listing_xml
from pyaudit.s3listing import read_plain_page

FIELDS = ("EncodingType", "NextContinuationToken", "IsTruncated")
S3_NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _same_as_xml(body: bytes) -> bool:
    """Whether the page was read plainly; if so, it gave what the XML parse gives."""
    plain = read_plain_page(body)
    if plain is None:
        return False
    objects, fields = plain
    xml_objects, xml_fields = _parse_listing_xml(body)  # (raises if it is not XML)
    assert objects == xml_objects
    assert {k: v for k, v in fields.items() if k in FIELDS} == xml_fields
    return True


QUOTES = {'"': "&quot;"}  # (S3 writes an ETag's quotes as entities)


def _contents(key: str, size: int, etag: str, extra: str = "") -> str:
    shown = escape(etag, QUOTES)
    return (f"<Contents><Key>{escape(key)}</Key><LastModified>2025-01-01T00:00:00.000Z"
            f"</LastModified><ETag>{shown}</ETag>{extra}"
            f"<Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>")


def test_a_page_as_s3_writes_it_is_read_plainly() -> None:
    """ETags quoted as entities, checksums, an owner, keys URL-encoded and XML-escaped."""
    md5 = '"0123456789abcdef0123456789abcdef"'
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult {S3_NS}>'
        "<Name>b</Name><Prefix>store/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>"
        "<IsTruncated>true</IsTruncated><NextContinuationToken>1a/b+c=</NextContinuationToken>"
        "<EncodingType>url</EncodingType>"
        + _contents("store/a%20b&c.json", 12, md5,
                    "<ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm>"
                    "<ChecksumType>FULL_OBJECT</ChecksumType>")
        + _contents("store/m.safetensors", 0, md5[:-1] + '-3"')
        + "<Contents><Key>store/o</Key><ETag>&quot;x&quot;</ETag><Size>7</Size>"
          "<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>"
          "<StorageClass>STANDARD</StorageClass></Contents>"
        + "</ListBucketResult>"
    ).encode()
    assert _same_as_xml(body)
    items, token = _parse_listing(body)
    assert items == [
        ("store/a b&c.json", 12, "s3:0123456789abcdef0123456789abcdef"),
        ("store/m.safetensors", 0, "s3:0123456789abcdef0123456789abcdef-3"),
        ("store/o", 7, None),
    ]
    assert token == "1a/b+c="  # (a token is not URL-encoded)


def test_the_static_fakes_pages_are_read_plainly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pyaudit.testing import static_s3

    bucket = tmp_path / "b"
    for i in range(5):
        (bucket / f"run {i}" / "ckpt&1").mkdir(parents=True)
        (bucket / f"run {i}" / "ckpt&1" / "config.json").write_text("{}" * i)
    for encoding in ([], ["url"]):
        query = {"prefix": [""], "max-keys": ["3"], "encoding-type": encoding}
        body = static_s3._list("b", bucket, query, None)[2]
        assert _same_as_xml(body), body[:300]
        assert len(_parse_listing(body)[0]) == 3


@pytest.mark.parametrize("change", [
    ("<Key>", "<Key >"),  # (whitespace inside a tag)
    ("<Contents>", "<Contents>\n"),  # (whitespace between elements)
    ("<Size>12", "<Size>-12"),  # (a size that is no count)
    ("<Name>b</Name>", "<Name>b</Name><!-- c -->"),
    ("<Name>b</Name>", "<Name><![CDATA[b]]></Name>"),
    ("store/", "store/&#x41;"),  # (a character reference)
    ("<ListBucketResult ", "<s3:ListBucketResult xmlns:s3='x' "),
    ("<Name>b</Name>", "<Name>b\r</Name>"),
    ("<Name>b</Name>", "<Name>b\x01</Name>"),
    ("<Name>b</Name>", "<Name>b\uffff</Name>"),
    ("</ListBucketResult>", ""),  # (cut short)
    ("</ListBucketResult>", "</ListBucketResult><x/>"),
    ("<Contents><Key>", "<Other><Contents><Key>"),  # (a Contents below another element)
])
def test_a_page_written_otherwise_is_left_to_the_xml_parse(change: tuple[str, str]) -> None:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {S3_NS}><Name>b</Name>'
            + _contents("store/k", 12, '"e"') + "</ListBucketResult>")
    assert _same_as_xml(body.encode())
    changed = body.replace(*change, 1)
    assert changed != body
    assert read_plain_page(changed.encode()) is None


_names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
                 max_size=12)


@st.composite
def _pages(draw: st.DrawFn) -> bytes:
    """Pages as S3 writes them, some changed in ways an XML writer may: whitespace, an
    element more or in another order, entities and character references, a cut."""
    ns = draw(st.sampled_from([S3_NS, "", 'xmlns="urn:x"']))
    head = "".join(f"<{n}>{escape(v)}</{n}>" for n, v in draw(st.lists(st.tuples(
        st.sampled_from(["Name", "Prefix", "IsTruncated", "NextContinuationToken",
                         "EncodingType", "KeyCount"]),
        st.one_of(_names, st.sampled_from(["true", "false", "url", " true "]))), max_size=6)))
    entries = []
    for key, size, etag, extra in draw(st.lists(st.tuples(
            _names, st.integers(0, 2**63), st.one_of(_names, st.just('"abc"')),
            st.sampled_from(["", "<ChecksumAlgorithm>CRC32</ChecksumAlgorithm>",
                             "<Weird>1</Weird>"])), max_size=5)):
        entries.append(_contents(key, size, etag, extra))
    body = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {ns}>{head}'
            + "".join(entries) + "</ListBucketResult>")
    for old, new in draw(st.lists(st.sampled_from([
            ("><", ">\n<"), ("&amp;", "&#38;"), ("<Size>", "<Size> "), ("&quot;", '"'),
            ("</Key>", "</Key><Key>second</Key>"), ("<Contents>", "<Contents><Size>1</Size>"),
            ("<ETag>", "<Owner><ID>1</ID></Owner><ETag>")]), max_size=2)):
        body = body.replace(old, new, 1)
    data = body.encode()
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return data if cut is None else data[:cut]


@given(_pages())
def test_every_page_read_plainly_reads_as_xml_does(body: bytes) -> None:
    _same_as_xml(body)


@given(st.lists(st.tuples(_names, st.integers(0, 2**63)), max_size=8), _names)
def test_every_page_s3_writes_is_read_plainly(objects: list[tuple[str, int]], token: str) -> None:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {S3_NS}><Name>b</Name>'
            f"<IsTruncated>true</IsTruncated>"
            f"<NextContinuationToken>{escape(token)}</NextContinuationToken>"
            + "".join(_contents(key, size, '"e"') for key, size in objects)
            + "</ListBucketResult>").encode()
    assert _same_as_xml(body)
