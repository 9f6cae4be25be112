from retro_vllm.rag.layout import (
    assemble_messages,
    last_user_text,
    order_passages,
    system_text,
)
from retro_vllm.retrieval.types import Chunk, ScoredChunk


def hit(doc: str, score: float) -> ScoredChunk:
    return ScoredChunk(Chunk(id=f"{doc}#0", doc_id=doc, text=f"about {doc}", domain="d", title=doc.title()), score)


def test_passages_in_canonical_order_regardless_of_score():
    a = order_passages([hit("zeta", 0.9), hit("alpha", 0.1), hit("mu", 0.5)])
    b = order_passages([hit("mu", 0.2), hit("zeta", 0.3), hit("alpha", 0.8)])
    assert [p.chunk.id for p in a] == ["alpha#0", "mu#0", "zeta#0"]
    assert [p.rank for p in a] == [1, 2, 3]
    # Same set, same prompt text: the prefix cache can reuse it.
    assert system_text("P", a) == system_text("P", b)


def test_sources_numbered_after_preamble():
    text = system_text("Preamble.", order_passages([hit("b", 1), hit("a", 1)]))
    assert text.startswith("Preamble.")
    assert text.index("[1] A\nabout a") < text.index("[2] B\nabout b")


def test_assemble_keeps_conversation_and_merges_client_system():
    passages = order_passages([hit("a", 1)])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    out = assemble_messages(messages, "Preamble.", passages)
    assert out[0]["role"] == "system"
    assert out[0]["content"].startswith("Preamble.")
    assert out[0]["content"].endswith("Be brief.")
    assert "[1] A" in out[0]["content"]
    assert out[1:] == messages[1:]
    assert last_user_text(messages) == "second"


def test_no_passages_means_preamble_only():
    out = assemble_messages([{"role": "user", "content": "q"}], "Preamble.", [])
    assert out[0] == {"role": "system", "content": "Preamble."}
