"""The logits processor on both of vLLM's interfaces, with the real tokenizer.

The V2 side cannot run here (its model runner needs Triton); it is checked against its ABC with
the request-state and context objects it receives, built from plain tensors.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from retro_vllm.decoding.args import parse_args
from retro_vllm.decoding.markers import (
    NEVER,
    OUTSIDE,
    build_tables,
    inside,
    step,
    tables_for_tokenizer,
)

V1 = pytest.importorskip("vllm.v1.sample.logits_processor.interface")
V2 = pytest.importorskip("vllm.v1.worker.gpu.sample.logits_processor.interface")
from vllm import SamplingParams  # noqa: E402

from retro_vllm.decoding.processor import RetroLogitsProcessor  # noqa: E402

MAX_ROWS = 8


@pytest.fixture(scope="module")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="module")
def vllm_config(model_path, tokenizer):
    model_config = SimpleNamespace(tokenizer=str(model_path), trust_remote_code=False, skip_tokenizer_init=False,
                                   get_vocab_size=lambda: len(tokenizer))
    return SimpleNamespace(model_config=model_config, scheduler_config=SimpleNamespace(max_num_seqs=MAX_ROWS))


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def token(tokenizer, text: str) -> int:
    (only,) = ids(tokenizer, text)
    return only


def xargs(**kwargs) -> SamplingParams:
    return SamplingParams(extra_args={f"retro_{k}": v for k, v in kwargs.items()})


def v1_processor(vllm_config, rows: list[tuple[SamplingParams, list[int], list[int]]],
                 cls: type[RetroLogitsProcessor] = RetroLogitsProcessor) -> RetroLogitsProcessor:
    processor = cls(vllm_config, torch.device("cpu"), False)
    added = [(i, params, prompt, output) for i, (params, prompt, output) in enumerate(rows)]
    processor.update_state(V1.BatchUpdate(batch_size=len(rows), removed=[], added=added, moved=[]))
    return processor


def logits_with_argmax(vocab: int, rows: int, favourite: list[int]) -> torch.Tensor:
    logits = torch.zeros(rows, vocab)
    for row, token_id in enumerate(favourite):
        logits[row, token_id] = 10.0
    return logits


# -- the marker automaton ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "text", "expected"),
    [
        (OUTSIDE, " [", (inside(0), 0)),
        (inside(0), "3", (inside(3), 3)),
        (inside(1), "2", (inside(12), 12)),
        (inside(0), "0", (OUTSIDE, NEVER)),  # no leading zero
        (inside(7), "].", (OUTSIDE, 0)),
        (inside(2), "][", (inside(0), 0)),
        (OUTSIDE, "7", (OUTSIDE, 0)),  # digits outside a marker are prose
        (OUTSIDE, "[4]", (OUTSIDE, 4)),  # a whole marker in one token
        (inside(0), "Note", (OUTSIDE, 0)),  # `[Note` is not a marker
        (inside(6), "5", (OUTSIDE, NEVER)),  # 65 > the largest tracked number
    ],
)
def test_step(state, text, expected):
    assert step(state, text) == expected


def test_tables_cover_only_marker_tokens():
    tables = build_tables(["a", " [", "1", "].", None, "x9"])
    assert tables.columns.tolist() == [1, 2, 3, 5]


def test_tables_come_from_the_loaded_tokenizer(tokenizer):
    tables = tables_for_tokenizer(tokenizer)
    columns = set(tables.columns.tolist())
    for piece in ("[", " [", "][", "].", "1", "9"):
        assert token(tokenizer, piece) in columns
    assert token(tokenizer, " the") not in columns


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        {"retro_passages": -1},
        {"retro_passages": 65},
        {"retro_passages": "4"},
        {"retro_passages": True},
        {"retro_bias": float("nan")},
        {"retro_bias": 11},
        {"retro_bias": -0.5},
        {"retro_bias_tokens": [1, -2]},
        {"retro_bias_tokens": "1,2"},
        {"retro_typo": 1},
        {"retro_attribution": "sun star"},
        {"retro_attribution": ["w"] * 10},  # attribution covers [1]..[9]
        {"retro_attribution": [1, 2]},
        {"retro_fault": 1},  # fault injection lives in a test-only subclass, never in these arguments
    ],
)
def test_validate_params_rejects_malformed(extra):
    with pytest.raises(ValueError):
        RetroLogitsProcessor.validate_params(SamplingParams(extra_args=extra))


def test_requests_without_arguments_are_not_touched():
    assert parse_args(None) is None
    assert parse_args({"other_plugin": 1}) is None
    RetroLogitsProcessor.validate_params(SamplingParams())


# -- V1 ----------------------------------------------------------------------------------------
def test_is_both_kinds_of_processor_and_not_argmax_invariant(vllm_config):
    assert issubclass(RetroLogitsProcessor, V1.LogitsProcessor)
    assert issubclass(RetroLogitsProcessor, V2.LogitsProcessor)
    assert RetroLogitsProcessor(vllm_config, torch.device("cpu"), False).is_argmax_invariant() is False


def test_v1_masks_an_invalid_marker_number_at_the_argmax(vllm_config, tokenizer):
    vocab = len(tokenizer)
    seven, two = token(tokenizer, "7"), token(tokenizer, "2")
    prompt = ids(tokenizer, "Sources follow.")
    output = ids(tokenizer, "Mars is red [")
    processor = v1_processor(vllm_config, [(xargs(passages=4), prompt, output)])
    logits = logits_with_argmax(vocab, 1, [seven])
    logits[0, two] = 5.0
    out = processor.apply(logits)
    assert out[0, seven] == float("-inf")


def test_v1_is_batched_per_row(vllm_config, tokenizer):
    """Row 0 (4 passages) mid-marker; row 1 (16 passages) mid-marker after `[1`; row 2 carries
    no arguments; row 3 is outside a marker."""
    vocab = len(tokenizer)
    nine, five, zero = token(tokenizer, "9"), token(tokenizer, "5"), token(tokenizer, "0")
    rows = [
        (xargs(passages=4), [], ids(tokenizer, "See [")),
        (xargs(passages=16), [], ids(tokenizer, "See [1")),
        (SamplingParams(), [], ids(tokenizer, "See [")),
        (xargs(passages=2), [], ids(tokenizer, "It has")),
    ]
    processor = v1_processor(vllm_config, rows)
    logits = torch.zeros(4, vocab)
    out = processor.apply(logits.clone())
    assert out[0, nine] == float("-inf") and out[0, token(tokenizer, "4")] == 0
    assert out[1, five] == 0 and out[1, token(tokenizer, "7")] == float("-inf")  # 15 ok, 17 not
    assert out[1, zero] == 0  # [10]
    assert torch.equal(out[2], logits[2])  # not ours
    assert torch.equal(out[3], logits[3])  # prose digits stay free
    # A whole-marker token is judged as a whole: ` [` is fine, `[4]`-like merges obey the limit.
    assert out[3, token(tokenizer, " [")] == 0


def test_v1_follows_output_as_it_grows_and_batch_moves(vllm_config, tokenizer):
    vocab = len(tokenizer)
    output: list[int] = ids(tokenizer, "Yes")
    processor = v1_processor(vllm_config, [(SamplingParams(), [], []), (xargs(passages=3), [], output)])
    three, four = token(tokenizer, "3"), token(tokenizer, "4")
    assert processor.apply(torch.zeros(2, vocab))[1, four] == 0  # outside a marker
    output.extend(ids(tokenizer, " ["))  # vLLM appends to the same list
    processor.update_state(None)
    assert processor.apply(torch.zeros(2, vocab))[1, four] == float("-inf")
    # The request moves from row 1 to row 0; the other one leaves.
    processor.update_state(V1.BatchUpdate(batch_size=1, removed=[0], added=[],
                                          moved=[(1, 0, V1.MoveDirectionality.UNIDIRECTIONAL)]))
    out = processor.apply(torch.zeros(1, vocab))
    assert out[0, four] == float("-inf") and out[0, three] == 0
    processor.update_state(V1.BatchUpdate(batch_size=0, removed=[0], added=[], moved=[]))
    assert torch.equal(processor.apply(torch.zeros(1, vocab)), torch.zeros(1, vocab))


def test_v1_bias_adds_to_passage_tokens_only(vllm_config, tokenizer):
    vocab = len(tokenizer)
    boosted = ids(tokenizer, " nebula telescope")
    processor = v1_processor(vllm_config, [(xargs(bias=2.5, bias_tokens=boosted), [], [])])
    out = processor.apply(torch.zeros(1, vocab))
    assert out[0, boosted].tolist() == [2.5] * len(boosted)
    assert float(out[0].sum()) == pytest.approx(2.5 * len(set(boosted)))


PASSAGE_WORDS = ["sun star shines hydrogen", "salt lowers freezing point water", "tcp port 443 https"]


def test_v1_attribution_names_the_passage_the_claim_draws_on(vllm_config, tokenizer):
    """The model prefers [1]; the claim's words come from passage 2, so only 2 may start the
    number (the constraint still allows 1..3 and attribution narrows it)."""
    vocab = len(tokenizer)
    one, two, three = (token(tokenizer, d) for d in "123")
    rows = [
        (xargs(passages=3, attribution=PASSAGE_WORDS), [], ids(tokenizer, "Salt lowers the freezing point of water [")),
        # a second claim after a marker: only the text since the previous marker counts
        (xargs(passages=3, attribution=PASSAGE_WORDS), [], ids(tokenizer, "Salt lowers it [2]. HTTPS uses port 443 [")),
        # no word shared with any passage: the model's choice stands
        (xargs(passages=3, attribution=PASSAGE_WORDS), [], ids(tokenizer, "Maybe so [")),
        # not at a marker: nothing to attribute
        (xargs(passages=3, attribution=PASSAGE_WORDS), [], ids(tokenizer, "Salt lowers")),
    ]
    processor = v1_processor(vllm_config, rows)
    words = token(tokenizer, " salt")
    out = processor.apply(logits_with_argmax(vocab, 4, [one, one, one, one]))
    assert out[0, one] == float("-inf") and out[0, three] == float("-inf") and out[0, two] == 0
    assert int(out[0].argmax()) == two and out[0, words] == float("-inf")  # no escape from an open marker
    assert out[1, three] == 0 and out[1, two] == float("-inf") and out[1, one] == float("-inf")
    assert out[2, one] == 10.0 and out[2, two] == 0 and out[2, words] == 0
    assert out[3, one] == 10.0 and out[3, three] == 0 and out[3, words] == 0


def test_v1_attribution_keeps_ties_and_follows_moves(vllm_config, tokenizer):
    vocab = len(tokenizer)
    one, two, three = (token(tokenizer, d) for d in "123")
    tied = ["salt water", "water salt", "tcp"]
    output = ids(tokenizer, "Salt water [")
    processor = v1_processor(vllm_config, [(SamplingParams(), [], []), (xargs(attribution=tied), [], output)])
    out = processor.apply(torch.zeros(2, vocab))
    assert out[1, one] == 0 and out[1, two] == 0 and out[1, three] == float("-inf")
    processor.update_state(V1.BatchUpdate(batch_size=1, removed=[0], added=[],
                                          moved=[(1, 0, V1.MoveDirectionality.UNIDIRECTIONAL)]))
    assert processor.apply(torch.zeros(1, vocab))[0, three] == float("-inf")


def test_v1_attribution_never_leaves_a_row_without_a_token(vllm_config, tokenizer):
    """Arguments only a client of an unwrapped route could send: the attributed passage (2) is
    beyond the constraint's limit (1). The row keeps what the constraint allows."""
    vocab = len(tokenizer)
    one, two = token(tokenizer, "1"), token(tokenizer, "2")
    output = ids(tokenizer, "Salt lowers the freezing point [")
    processor = v1_processor(vllm_config, [(xargs(passages=1, attribution=PASSAGE_WORDS[:2]), [], output)])
    out = processor.apply(torch.zeros(1, vocab))
    assert torch.isfinite(out[0]).any() and out[0, one] == 0 and out[0, two] == float("-inf")


def test_a_fault_in_apply_leaves_logits_unchanged(vllm_config, tokenizer):
    from tests.support.fault_processor import FaultInjectingProcessor

    vocab = len(tokenizer)
    faulty = SamplingParams(extra_args={"retro_passages": 1, "test_fault": 1})
    processor = v1_processor(vllm_config, [(faulty, [], ids(tokenizer, " ["))], cls=FaultInjectingProcessor)
    logits = torch.randn(1, vocab)
    assert torch.equal(processor.apply(logits.clone()), logits)


# -- V2 ------------------------------------------------------------------------------------
def v2_state(vocab: int, token_rows: dict[int, list[int]]) -> V2.LogitsProcRequestState:
    all_tokens = torch.zeros(MAX_ROWS, 64, dtype=torch.int32)
    for slot, tokens in token_rows.items():
        all_tokens[slot, : len(tokens)] = torch.tensor(tokens, dtype=torch.int32)
    buffer = SimpleNamespace(gpu=all_tokens)
    return V2.LogitsProcRequestState(device=torch.device("cpu"), max_num_reqs=MAX_ROWS, vocab_size=vocab,
                                     all_token_ids=buffer, prompt_len=None, prefill_len=None, total_len=None)


def v2_context(slots: list[int], token_rows: dict[int, list[int]]) -> V2.LogitsContext:
    mapping = torch.tensor(slots, dtype=torch.int32)
    pos = torch.tensor([len(token_rows[s]) - 1 for s in slots])
    last = torch.tensor([token_rows[s][-1] for s in slots])
    return V2.LogitsContext(expanded_idx_mapping=mapping, idx_mapping=mapping, idx_mapping_np=mapping.numpy(),
                            expanded_local_pos=torch.zeros(len(slots), dtype=torch.int32), input_ids=last, pos=pos,
                            seq_lens_upper_bound_np=(pos + 1).numpy())


def test_v2_masks_by_slot_over_reordered_rows(vllm_config, tokenizer):
    vocab = len(tokenizer)
    rows = {5: ids(tokenizer, "Prompt. Answer [1"), 2: ids(tokenizer, "Prompt. Answer [")}
    processor = RetroLogitsProcessor(vllm_config, v2_state(vocab, rows))
    assert processor.add_request(5, xargs(passages=12)) is True
    assert processor.add_request(2, xargs(passages=3)) is True
    assert processor.add_request(7, SamplingParams()) is False
    processor.apply_staged_writes()
    out = processor.apply(torch.zeros(2, vocab), v2_context([2, 5], rows))
    # row 0 is slot 2 ([ with 3 passages), row 1 slot 5 ([1 with 12 passages)
    assert out[0, token(tokenizer, "4")] == float("-inf") and out[0, token(tokenizer, "3")] == 0
    assert out[1, token(tokenizer, "2")] == 0 and out[1, token(tokenizer, "3")] == float("-inf")


def test_v2_skips_batches_it_does_not_touch(vllm_config, tokenizer):
    vocab = len(tokenizer)
    rows = {0: ids(tokenizer, "See [")}
    processor = RetroLogitsProcessor(vllm_config, v2_state(vocab, rows))
    processor.add_request(0, SamplingParams())
    logits = torch.randn(1, vocab)
    assert torch.equal(processor.apply(logits.clone(), v2_context([0], rows)), logits)


def test_slot_reuse_resets_the_previous_occupant(vllm_config, tokenizer):
    vocab = len(tokenizer)
    rows = {1: ids(tokenizer, "x [")}
    processor = RetroLogitsProcessor(vllm_config, v2_state(vocab, rows))
    processor.add_request(1, xargs(passages=1, bias=3.0, bias_tokens=[10, 11]))
    processor.add_request(1, SamplingParams())
    assert torch.equal(processor.apply(torch.zeros(1, vocab), v2_context([1], rows)), torch.zeros(1, vocab))
    assert not np.any(processor._core.bias_values.numpy())


def test_v2_a_fault_in_apply_leaves_logits_unchanged(vllm_config, tokenizer, caplog):
    from tests.support.fault_processor import FaultInjectingProcessor

    vocab = len(tokenizer)
    rows = {3: ids(tokenizer, "Prompt. Answer ["), 4: ids(tokenizer, "Prompt. Answer [")}
    processor = FaultInjectingProcessor(vllm_config, v2_state(vocab, rows))
    assert processor.add_request(3, SamplingParams(extra_args={"test_fault": 1})) is True
    assert processor.add_request(4, xargs(passages=1)) is False
    logits = torch.randn(1, vocab)
    assert torch.equal(processor.apply(logits.clone(), v2_context([4], rows)), logits)  # no fault row: untouched
    assert "fault in apply" not in caplog.text
    assert torch.equal(processor.apply(logits.clone(), v2_context([3], rows)), logits)  # raised, contained
    assert "fault in apply" in caplog.text


def test_v2_reads_earlier_drafts_of_the_same_step(vllm_config, tokenizer):
    """Speculative decoding: one request owns several rows; drafts exist only in input_ids."""
    vocab = len(tokenizer)
    committed = ids(tokenizer, "Prompt. It is")
    drafts = [token(tokenizer, " ["), token(tokenizer, "1")]
    processor = RetroLogitsProcessor(vllm_config, v2_state(vocab, {0: committed}))
    processor.add_request(0, xargs(passages=3))
    k = len(committed)
    mapping = torch.zeros(3, dtype=torch.int32)
    ctx = V2.LogitsContext(expanded_idx_mapping=mapping, idx_mapping=mapping[:1], idx_mapping_np=mapping[:1].numpy(),
                           expanded_local_pos=torch.tensor([0, 1, 2], dtype=torch.int32),
                           input_ids=torch.tensor([committed[-1], *drafts]), pos=torch.tensor([k - 1, k, k + 1]),
                           seq_lens_upper_bound_np=np.array([k + 2]))
    out = processor.apply(torch.zeros(3, vocab), ctx)
    five, two = token(tokenizer, "5"), token(tokenizer, "2")
    assert out[0, five] == 0  # after "It is": prose
    assert out[1, five] == float("-inf") and out[1, two] == 0  # after " [" with 3 passages
    assert out[2, five] == float("-inf")  # after " [1": 15 > 3
    assert out[2, token(tokenizer, "]")] == 0
