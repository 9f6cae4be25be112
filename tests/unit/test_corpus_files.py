"""Reading user files: every supported type, and unreadable files skipped by name."""

import json

import pytest

from retro_vllm.retrieval.corpus import CorpusError, SkippedFiles, document_from_record, read_documents


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, offsets computed so readers accept it."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_every_type_and_skips(tmp_path):
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "intro.md").write_text("# Getting started\nInstall it with pip.")
    (root / "intro.txt").write_text("Another intro, same stem, other folder.")
    (root / "page.html").write_text(
        "<html><head><title>Ports</title><style>p{}</style></head><body><nav>Home | Next</nav>"
        "<h1>Ports</h1><p>HTTPS uses port 443.</p><script>var x = 1;</script></body></html>"
    )
    (root / "paper.pdf").write_bytes(minimal_pdf("Qdrant Edge runs in process"))
    (root / "records.jsonl").write_text(json.dumps({"id": "r1", "text": "A record.", "metadata": {"lang": "en"}}) + "\n")
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (root / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (root / "empty.md").write_text("   \n")
    (root / "image.png").write_bytes(b"\x89PNG")  # not a supported type: never even listed
    skipped = SkippedFiles()
    docs = {d.id: d for d in read_documents([root], domain="net", tenant="acme", skipped=skipped)}
    assert set(docs) == {"guides/intro", "intro", "page", "paper", "r1"}
    assert docs["guides/intro"].title == "Getting started"
    assert docs["page"].title == "Ports" and "443" in docs["page"].text
    assert "Home | Next" not in docs["page"].text and "var x" not in docs["page"].text
    assert "Qdrant Edge runs in process" in docs["paper"].text
    assert docs["r1"].metadata == {"lang": "en"} and all(d.tenant == "acme" for d in docs.values())
    reasons = {p.name: r for p, r in skipped.items}
    assert set(reasons) == {"blob.txt", "latin1.md", "broken.pdf", "empty.md"}
    assert "binary" in reasons["blob.txt"] and "UnicodeDecodeError" in reasons["latin1.md"]


def test_missing_path_and_bad_records(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        list(read_documents([tmp_path / "nope"], domain="d"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a#1", "text": "x"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: 'id'"):
        list(read_documents([bad], domain="d"))
    for record, problem in [({"id": "x"}, "'text'"), ([], "JSON object"), ({"id": "x", "text": "", "metadata": 3}, "metadata")]:
        with pytest.raises(CorpusError, match=problem):
            document_from_record(record, domain="d", tenant=None)
