"""`RetroLogitsProcessor`: the `vllm.logits_processors` entry point.

Per request, and only for requests whose `SamplingParams.extra_args` carry `retro_*` keys
(which only the endpoint sets), it
- limits `[n]` markers to the passages supplied to that request (`retro_passages` = k:
  while a marker is being written, only numbers 1..k can be produced), and
- adds `retro_bias` to the logits of tokens that occur in the request's passages
  (`retro_bias_tokens`), the seed's "gated fusion" of retrieved text at decoding time, and
- with `retro_attribution` (each passage's words), lets a marker being opened name only the
  passage(s) sharing the most words with the claim it closes (decoding/attribution.py). This
  one needs the text generated so far, which the V1 interface hands out; on the V2 runner
  markers are constrained but not attributed.

vLLM 0.32 loads every entry point of this group in every vLLM of the environment and has two
processor interfaces: the V1 model runner's (CPU here) and the V2 model runner's (the CUDA
default), and V2 refuses a class that is not its subclass. So this one class subclasses both
ABCs and keeps the work in one shared core (`_Core`); the two faces only differ in how they
learn the batch layout and the last tokens of each row.

A fault here must never take the engine down: every hook catches its own errors, logs them,
and leaves the logits as they were (the request is then answered unconstrained).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from retro_vllm.compat.logits import (
    BatchUpdate,
    MoveDirectionality,
    V1LogitsProcessor,
    V2LogitsProcessor,
)
from retro_vllm.decoding.args import MAX_BIAS_TOKENS, RequestArgs, parse_args
from retro_vllm.decoding.attribution import best_passages, claim_text
from retro_vllm.decoding.markers import (
    NEVER,
    OUTSIDE,
    WINDOW,
    MarkerTables,
    build_tables,
    tables_for_tokenizer,
)

logger = logging.getLogger("retro_vllm.decoding")

# Rows the processor does not constrain: no marker token ever needs more passages than this.
NO_LIMIT = int(NEVER)
# Output tokens read back to find the claim a marker closes (claims are a sentence or two).
CLAIM_TOKENS = 256


class _Core:
    """Per-row state as tensors, and the batched work: one gather per window step to find each
    row's marker state, one masked fill over the marker tokens, one scatter-add for the bias."""

    def __init__(self, tables: MarkerTables | None, vocab_size: int, max_rows: int, device: torch.device):
        self.device = device
        self.vocab_size = vocab_size
        tables = tables if tables is not None else build_tables([])  # no tokenizer: nothing to constrain
        keep = tables.columns < vocab_size
        self.columns = torch.as_tensor(tables.columns[keep], dtype=torch.long, device=device)
        col_index = torch.full((vocab_size,), -1, dtype=torch.long)
        col_index[self.columns.cpu()] = torch.arange(len(self.columns))
        self.col_index = col_index.to(device)
        self.next_state = torch.as_tensor(tables.next_state[:, keep], dtype=torch.long, device=device)
        self.need = torch.as_tensor(tables.need[:, keep], dtype=torch.int32, device=device)
        self.opens = torch.as_tensor(tables.opens[:, keep], dtype=torch.int64, device=device)
        self.state_opens = tables.opens[:, keep].any(axis=1)  # host: states where a marker number can start
        self.limit = torch.full((max_rows,), NO_LIMIT, dtype=torch.int32, device=device)
        self.bias_tokens = torch.zeros((max_rows, MAX_BIAS_TOKENS), dtype=torch.long, device=device)
        self.bias_values = torch.zeros((max_rows, MAX_BIAS_TOKENS), dtype=torch.float32, device=device)
        # Host mirrors, so a batch nobody constrains costs nothing and needs no device sync.
        self.constrained = np.zeros(max_rows, dtype=bool)
        self.bias_len = np.zeros(max_rows, dtype=np.int64)
        self.vocabularies = np.full(max_rows, None, dtype=object)  # each row's passages' words, or None

    @property
    def can_constrain(self) -> bool:
        return len(self.columns) > 0

    def set_row(self, row: int, args: RequestArgs | None) -> bool:
        self.clear_row(row)
        if args is None:
            return False
        if args.passages is not None and self.can_constrain:
            self.limit[row] = args.passages
            self.constrained[row] = True
        if args.attribution and self.can_constrain:
            self.vocabularies[row] = args.attribution
        tokens = [t for t in args.bias_tokens if t < self.vocab_size]
        if args.bias > 0 and tokens:
            self.bias_tokens[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            self.bias_values[row, : len(tokens)] = args.bias
            self.bias_len[row] = len(tokens)
        return self.active(row)

    def active(self, row: int) -> bool:
        return bool(self.constrained[row] or self.bias_len[row]
                    or self.vocabularies[row] is not None)

    def clear_row(self, row: int) -> None:
        self.limit[row] = NO_LIMIT
        if self.bias_len[row]:
            self.bias_values[row].zero_()
        self.constrained[row] = False
        self.bias_len[row] = 0
        self.vocabularies[row] = None

    def move_row(self, src: int, dst: int) -> None:
        self.limit[dst] = self.limit[src]
        self.bias_tokens[dst] = self.bias_tokens[src]
        self.bias_values[dst] = self.bias_values[src]
        for mirror in (self.constrained, self.bias_len, self.vocabularies):
            mirror[dst] = mirror[src]
        self.clear_row(src)

    def swap_rows(self, a: int, b: int) -> None:
        index = torch.tensor([b, a], device=self.device)
        for tensor in (self.limit, self.bias_tokens, self.bias_values):
            tensor[[a, b]] = tensor[index]
        for mirror in (self.constrained, self.bias_len, self.vocabularies):
            mirror[[a, b]] = mirror[[b, a]]

    def any_active(self, rows: np.ndarray) -> bool:
        return bool(self.constrained[rows].any() or self.bias_len[rows].any()
                    or self.vocabularies[rows].any())

    def marker_states(self, recent: torch.Tensor) -> torch.Tensor:
        """recent: [B, WINDOW] last token ids, oldest first, -1 = none. Returns [B] states."""
        state = torch.full((recent.shape[0],), OUTSIDE, dtype=torch.long, device=recent.device)
        for w in range(recent.shape[1]):
            token = recent[:, w]
            known = token >= 0
            column = self.col_index[token.clamp(0, self.vocab_size - 1)]
            column = torch.where(known & (token < self.vocab_size), column, -1)
            moved = self.next_state[state, column.clamp(min=0)]
            state = torch.where(column >= 0, moved, torch.where(known, OUTSIDE, state))
        return state

    def apply(self, logits: torch.Tensor, rows: torch.Tensor, host_rows: np.ndarray,
              recent: torch.Tensor | None, claim_of=None) -> torch.Tensor:
        """rows: [B] row of each logits row; host_rows: the same on the host; claim_of(row):
        the text that row generated so far (None: no attribution)."""
        width = int(self.bias_len[host_rows].max(initial=0))
        if width:
            logits.scatter_add_(1, self.bias_tokens[rows, :width],
                                self.bias_values[rows, :width].to(logits.dtype))
        attributing = claim_of is not None and bool(self.vocabularies[host_rows].any())
        if recent is not None and (self.constrained[host_rows].any() or attributing):
            state = self.marker_states(recent)
            forbidden = self.need[state] > self.limit[rows].unsqueeze(1)
            attributed = self._attributed(state, host_rows, claim_of) if attributing else {}
            for i, allowed in list(attributed.items()):
                allowed = allowed & ~forbidden[i]
                if allowed.any():  # else (arguments the server never sends) leave the row as it was
                    forbidden[i] |= ~allowed
                else:
                    del attributed[i]
            marker_logits = logits.index_select(1, self.columns)
            marker_logits.masked_fill_(forbidden, float("-inf"))
            for i in attributed:
                # The marker is open and its number decided: only that number may follow, so the
                # model cannot leave a bare `[` behind by escaping into prose.
                logits[i] = float("-inf")
            logits.index_copy_(1, self.columns, marker_logits)
        return logits

    def _attributed(self, state: torch.Tensor, host_rows: np.ndarray, claim_of) -> dict[int, torch.Tensor]:
        """{batch index: [C] marker tokens allowed} for rows about to write a marker number
        whose claim shares words with a passage: the tokens that start the best-attributed
        passage's number. Only rows at that point read their claim (a few steps per answer),
        so the per-token cost stays one host check per row."""
        out = {}
        host_state = state.cpu().numpy()
        for i in np.flatnonzero(self.vocabularies[host_rows]):
            row, vocabularies = int(host_rows[i]), self.vocabularies[host_rows[i]]
            if not self.state_opens[host_state[i]]:
                continue
            best = best_passages(claim_text(claim_of(row)), vocabularies)
            if best:
                opens = self.opens[int(host_state[i])]
                out[int(i)] = torch.isin(opens, torch.tensor(sorted(best), device=opens.device))
        return out


def _load_tokenizer(model_config):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_config.tokenizer, trust_remote_code=model_config.trust_remote_code)
    except Exception as exc:  # a tokenizer transformers cannot load: serve on, markers unconstrained
        logger.warning("retro: citation constraint off, tokenizer not loadable (%s)", exc)
        return None


def _tables(tokenizer) -> MarkerTables | None:
    if tokenizer is None:
        return None
    try:
        return tables_for_tokenizer(tokenizer)
    except Exception as exc:  # an exotic vocabulary: serve on, markers unconstrained
        logger.warning("retro: citation constraint off, marker tables not buildable (%s)", exc)
        return None


class RetroLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """One class for both runners: V1 calls (vllm_config, device, is_pin_memory), V2 calls
    (vllm_config, req_states)."""

    def __init__(self, vllm_config, *args) -> None:  # noqa: D107 - both ABCs' constructors in one
        self._faults_logged = 0
        self._outputs: dict[int, tuple[list[int], list[int]]] = {}  # V1 row -> (prompt tail, output ref)
        self._req_states = None
        self._tokenizer = tables = None
        if vllm_config.model_config is not None and not vllm_config.model_config.skip_tokenizer_init:
            self._tokenizer = _load_tokenizer(vllm_config.model_config)
            tables = _tables(self._tokenizer)
        if len(args) == 1:  # V2: LogitsProcRequestState
            self._req_states = args[0]
            self._core = _Core(tables, args[0].vocab_size, args[0].max_num_reqs, args[0].device)
        else:  # V1: device, is_pin_memory
            device = torch.device(args[0])
            if tables is not None and device.type != "cpu" and getattr(vllm_config.scheduler_config,
                                                                       "async_scheduling", False):
                # V1 with async scheduling hands entry-point processors -1 placeholders for tokens
                # in flight, so the marker state would lag a token: stay out rather than be wrong.
                logger.warning("retro: citation constraint off (V1 model runner with async scheduling)")
                tables = None
            self._core = _Core(tables, vllm_config.model_config.get_vocab_size(),
                               vllm_config.scheduler_config.max_num_seqs, device)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse_args(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False

    # -- V1 model runner ------------------------------------------------------------------
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        try:
            if batch_update is not None:
                self._update_batch(batch_update)
        except Exception:
            self._fault("update_state")
            for row in list(self._outputs):
                self._core.clear_row(row)
            self._outputs.clear()

    def _update_batch(self, batch_update: BatchUpdate) -> None:
        core = self._core
        for row in batch_update.removed:
            core.clear_row(row)
            self._outputs.pop(row, None)
        for row, params, prompt_ids, output_ids in batch_update.added:
            self._outputs.pop(row, None)
            if core.set_row(row, parse_args(params.extra_args)):
                self._outputs[row] = (list(prompt_ids or [])[-WINDOW:], output_ids)
        for a, b, direction in batch_update.moved:
            if direction == MoveDirectionality.SWAP:
                core.swap_rows(a, b)
                first, second = self._outputs.pop(a, None), self._outputs.pop(b, None)
                if first is not None:
                    self._outputs[b] = first
                if second is not None:
                    self._outputs[a] = second
            else:
                core.move_row(a, b)
                self._outputs.pop(b, None)
                moved = self._outputs.pop(a, None)
                if moved is not None:
                    self._outputs[b] = moved

    def _v1_recent(self, batch_size: int) -> torch.Tensor:
        # The V1 interface hands out Python lists: reading each active row's last tokens is the
        # one per-request step; the rest is batched tensor work.
        recent = np.full((batch_size, WINDOW), -1, dtype=np.int64)
        for row, (prompt_tail, outputs) in self._outputs.items():
            if row < batch_size:
                tail = (prompt_tail + outputs[-WINDOW:])[-WINDOW:]
                if tail:
                    recent[row, WINDOW - len(tail):] = tail
        return torch.from_numpy(recent).to(self._core.device, non_blocking=True)

    def _v1_generated(self, row: int) -> str:
        outputs = self._outputs.get(row, ((), ()))[1]
        return self._tokenizer.decode(outputs[-CLAIM_TOKENS:], skip_special_tokens=True)

    # -- V2 model runner ------------------------------------------------------------------
    def add_request(self, req_idx: int, sampling_params) -> bool:
        try:
            return self._core.set_row(req_idx, parse_args(sampling_params.extra_args))
        except Exception:
            self._fault("add_request")
            self._core.clear_row(req_idx)
            return False

    def apply_staged_writes(self) -> None:
        """Rows are written to the device in add_request; nothing is staged."""

    def _v2_recent(self, ctx) -> torch.Tensor:
        all_tokens = self._req_states.all_token_ids.gpu
        slots = ctx.expanded_idx_mapping.long()
        pos = ctx.pos.long()
        local = ctx.expanded_local_pos.long()
        row = torch.arange(len(slots), device=slots.device)
        columns = [ctx.input_ids.long()]  # the token fed this step (drafts included)
        for back in range(1, WINDOW):
            p = pos - back
            committed = all_tokens[slots, p.clamp(min=0)].long()
            # Under speculative decoding, this step's earlier drafts of the same request exist
            # only in input_ids, in the rows just before this one.
            draft = ctx.input_ids[(row - back).clamp(min=0)].long()
            token = torch.where(back <= local, draft, committed)
            columns.insert(0, torch.where(p >= 0, token, -1))
        return torch.stack(columns, dim=1)

    # -- both -------------------------------------------------------------------------------
    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        try:
            return self._apply(logits, ctx)
        except Exception:
            self._fault("apply")
            return logits

    def _apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        if ctx is None:  # V1: row i of the logits is row i of the persistent batch
            batch = logits.shape[0]
            host_rows = np.arange(batch)
            if not self._core.any_active(host_rows):
                return logits
            rows = torch.arange(batch, device=logits.device)
            return self._core.apply(logits, rows, host_rows, self._v1_recent(batch), self._v1_generated)
        if not self._core.any_active(ctx.idx_mapping_np):
            return logits
        # Host-side checks read the per-request slots (no device sync); rows come from the
        # expanded mapping (one row per draft token under speculative decoding).
        return self._core.apply(logits, ctx.expanded_idx_mapping.long(), ctx.idx_mapping_np,
                                self._v2_recent(ctx))

    def _fault(self, where: str) -> None:
        self._faults_logged += 1
        if self._faults_logged <= 3:
            logger.exception("retro logits processor fault in %s; logits left unchanged", where)
        elif self._faults_logged % 1000 == 0:
            logger.warning("retro logits processor: %d faults so far", self._faults_logged)
