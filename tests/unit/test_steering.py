from types import SimpleNamespace

from retro_vllm.config import DecodingSection, DomainSection, RetroConfig
from retro_vllm.decoding.args import parse_args
from retro_vllm.rag.controls import RetroControls
from retro_vllm.rag.state import RetroState
from retro_vllm.rag.steer import attach, decoding_args
from retro_vllm.retrieval.types import Chunk, Passage


class WordTokenizer:
    all_special_ids = [0]

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[0] + [len(w) for w in t.split()] for t in texts]}


def state(**decoding) -> RetroState:
    config = RetroConfig(decoding=DecodingSection(**decoding),
                         domains=[DomainSection(name="cooking", bias=2.0), DomainSection(name="astronomy")])
    return RetroState(config=config, retriever=SimpleNamespace(), tokenizer=WordTokenizer())


def passages(*texts):
    return [Passage(rank=n, chunk=Chunk(id=f"d{n}#0", doc_id=f"d{n}", text=t, domain="cooking"), score=1.0,
                    stage="dense", scores={})
            for n, t in enumerate(texts, 1)]


def test_constraint_gets_the_passage_count_and_bias_the_domain_strength():
    args = decoding_args(state(), {}, RetroControls(), "cooking", [passages("a bb", "ccc dddd")])
    assert args == {"retro_passages": 2, "retro_bias": 2.0, "retro_bias_tokens": [1, 2, 3, 4],
                    "retro_attribution": ["bb", "ccc dddd"]}  # "a" is an article: not a word that attributes
    assert parse_args(args).passages == 2  # what the processor will accept


def test_attribution_carries_each_passages_words_in_marker_order():
    ps = passages("The Sun is a star. The Sun shines.", "Salt [2] lowers the freezing point")
    args = decoding_args(state(), {}, RetroControls(), "cooking", [list(reversed(ps))])
    assert args["retro_attribution"] == ["sun is star shines", "salt lowers freezing point"]
    assert parse_args(args).attribution == (frozenset({"sun", "is", "star", "shines"}),
                                            frozenset({"salt", "lowers", "freezing", "point"}))
    # off by config, with several prompts (each numbers its own passages) and beyond [9]
    assert "retro_attribution" not in decoding_args(state(attribute_citations=False), {}, RetroControls(), None, [ps])
    assert "retro_attribution" not in decoding_args(state(), {}, RetroControls(), None, [ps, ps])
    assert "retro_attribution" not in decoding_args(state(), {}, RetroControls(), None,
                                                    [passages(*["word"] * 10)])


def test_request_bias_overrides_and_zero_turns_it_off():
    assert "retro_bias" not in decoding_args(state(), {}, RetroControls(bias=0), "cooking", [passages("a")])
    assert decoding_args(state(bias=1.5), {}, RetroControls(), "astronomy", [passages("a")])["retro_bias"] == 1.5


def test_structured_output_and_disabled_retrieval_are_left_alone():
    s = state()
    assert "retro_passages" not in decoding_args(s, {"tools": [{"type": "function"}]}, RetroControls(), None, [passages("a")])
    assert "retro_passages" not in decoding_args(s, {"response_format": {"type": "json_object"}}, RetroControls(), None, [])
    assert decoding_args(s, {}, RetroControls(retrieval=False), "cooking", [passages("a")]) == {}
    assert "retro_passages" not in decoding_args(state(constrain_citations=False), {}, RetroControls(), None, [passages("a")])


def test_several_prompts_allow_the_largest_passage_count():
    args = decoding_args(state(), {}, RetroControls(), None, [passages("a"), passages("a", "b", "c")])
    assert args["retro_passages"] == 3


def test_attach_keeps_the_clients_other_xargs():
    body = {"vllm_xargs": {"other": 1}}
    attach(body, {"retro_passages": 4})
    assert body["vllm_xargs"] == {"other": 1, "retro_passages": 4}


def test_no_passages_no_constraint():
    args = decoding_args(state(), {}, RetroControls(bias=0), "cooking", [[]])
    assert "retro_passages" not in args


def test_attribution_words_stay_within_what_the_processor_accepts():
    from retro_vllm.decoding.attribution import MAX_VOCABULARY_CHARS, vocabulary

    huge = " ".join(f"{i:x}" * 40 for i in range(5000))  # long distinct "words" (hex runs)
    words = vocabulary(huge)
    assert 0 < len(words) <= MAX_VOCABULARY_CHARS
    args = decoding_args(state(), {}, RetroControls(), "cooking", [passages(huge, "short text")])
    assert parse_args(args).attribution[1] == frozenset({"short", "text"})
