from retro_vllm.rag.cite import extract_citations
from retro_vllm.retrieval.types import Chunk, Passage


def passages(n: int) -> list[Passage]:
    return [
        Passage(
            rank=i,
            chunk=Chunk(id=f"doc{i}#0", doc_id=f"doc{i}", text=f"text {i}", domain="d", title=f"T{i}",
                        url=f"https://example.org/{i}" if i % 2 else None),
            score=1.0, stage="dense", scores={},
        )
        for i in range(1, n + 1)
    ]


def spans(text, annotations):
    return [text[a["url_citation"]["start_index"]:a["url_citation"]["end_index"]] for a in annotations]


def test_marker_at_string_end_and_start():
    text = "[2] Mars is red [1]"
    ann = extract_citations(text, passages(2))
    assert spans(text, ann) == ["[2]", "[1]"]
    assert ann[0]["type"] == "url_citation"
    assert ann[1]["url_citation"]["url"] == "https://example.org/1"
    assert ann[1]["url_citation"]["title"] == "T1"


def test_adjacent_markers_each_annotated():
    text = "Both say so.[1][2]"
    ann = extract_citations(text, passages(2))
    assert spans(text, ann) == ["[1]", "[2]"]
    assert ann[0]["url_citation"]["end_index"] == ann[1]["url_citation"]["start_index"]


def test_out_of_range_numbers_ignored():
    text = "See [0], [3] and [12] but [2]."
    ann = extract_citations(text, passages(2))
    assert spans(text, ann) == ["[2]"]


def test_non_ascii_offsets_are_python_indices():
    text = "Crème brûlée — 日本語 [1]"
    ann = extract_citations(text, passages(1))
    start = ann[0]["url_citation"]["start_index"]
    assert text[start:start + 3] == "[1]"
    assert start == len("Crème brûlée — 日本語 ")


def test_passage_without_url_gets_retro_address():
    text = "x [2]"
    ann = extract_citations(text, passages(2))
    assert ann[0]["url_citation"]["url"] == "retro://d/doc2#0"


def test_no_passages_no_annotations():
    assert extract_citations("[1] [2]", []) == []
    assert extract_citations("", passages(3)) == []
