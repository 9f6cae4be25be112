import pytest

from retro_vllm.retrieval.chunker import chunk_document
from retro_vllm.retrieval.embedder import packaged_embedder_path
from retro_vllm.retrieval.types import Document


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(packaged_embedder_path()))


def test_short_document_is_one_chunk(tokenizer):
    doc = Document(id="a", text="  Short   text\nhere. ", domain="d", title="A")
    chunks = list(chunk_document(doc, tokenizer, max_tokens=50, overlap_tokens=10))
    assert [(c.id, c.text) for c in chunks] == [("a#0", "Short text here.")]


def test_long_document_windows_with_overlap_within_token_budget(tokenizer):
    words = [f"word{i}" for i in range(300)]
    doc = Document(id="long", text=" ".join(words), domain="d")
    chunks = list(chunk_document(doc, tokenizer, max_tokens=64, overlap_tokens=16))
    assert len(chunks) > 3
    assert [c.id for c in chunks] == [f"long#{i}" for i in range(len(chunks))]
    for chunk in chunks:
        # a word cut by the window is completed, so allow a few tokens over
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 64 + 4
    # consecutive chunks overlap and together cover every word
    assert set(chunks[0].text.split()) & set(chunks[1].text.split())
    covered = set().union(*(c.text.split() for c in chunks))
    assert covered == set(words)


def test_empty_document_has_no_chunks(tokenizer):
    assert list(chunk_document(Document(id="e", text=" \n ", domain="d"), tokenizer, max_tokens=50, overlap_tokens=0)) == []
