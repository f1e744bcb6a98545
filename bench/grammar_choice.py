"""Compare grammar libraries for constrained JSON decoding on CPU.

Libraries: llguidance, xgrammar, outlines-core (each optional; a missing one is reported and skipped).
For each: tokenizer-info build time, schema compile time, per-token mask fill / apply / advance cost
over a forced walk of a valid instance, acceptance checks, and behaviour on hard schema constructs.

Run: python bench/grammar_choice.py [tokenizer_dir]
"""
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

TOK_DIR = Path(__file__).resolve().parents[1] / ".viz/test-models/smollm2-135m-instruct"
MODEL_VOCAB = 49152  # config.json vocab_size == lm_head rows
REPS = 5  # forced walks per schema (after one warm-up walk)

OBJ = lambda props, **kw: {"type": "object", "properties": props, "required": list(props),
                           "additionalProperties": False, **kw}
SCHEMAS = {
    "flat": (OBJ({"name": {"type": "string"}, "age": {"type": "integer"}, "active": {"type": "boolean"}}),
             {"name": "Alice Smith", "age": 42, "active": True}),
    "nested": (OBJ({"order_id": {"type": "string"},
                    "customer": OBJ({"name": {"type": "string"}, "email": {"type": "string"}}),
                    "items": {"type": "array", "items": OBJ({"sku": {"type": "string"}, "qty": {"type": "integer"},
                                                             "price": {"type": "number"}})}}),
               {"order_id": "A-1001", "customer": {"name": "Bob", "email": "bob@example.com"},
                "items": [{"sku": "X1", "qty": 2, "price": 9.5}, {"sku": "Y22", "qty": 1, "price": 120.0}]}),
    "enum+array": (OBJ({"status": {"type": "string", "enum": ["open", "closed", "pending"]},
                        "tags": {"type": "array", "items": {"type": "string"}}}),
                   {"status": "pending", "tags": ["urgent", "billing", "customer-facing"]}),
    "json_object": ({"type": "object"},
                    {"weather": {"city": "Paris", "temp_c": 21.5, "conditions": ["sunny", "windy"]},
                     "ok": True, "n": None}),
}
# (schema, text that must be accepted, text that must be rejected if the construct is enforced)
HARD = {
    "pattern ^(a|b)+$": ({"type": "string", "pattern": "^(a|b)+$"}, '"abba"', '"abc"'),
    "recursive $ref": ({"$ref": "#/$defs/x", "$defs": {"x": {"type": "object", "properties": {
        "next": {"$ref": "#/$defs/x"}}}}}, '{"next": {"next": {}}}', '{"next": 5}'),
    "patternProperties": ({"type": "object", "patternProperties": {"^x": {"type": "string"}}},
                          '{"x1": "v"}', '{"x1": 5}'),
    "not": ({"not": {"type": "string"}}, "5", '"s"'),
    "format email": ({"type": "string", "format": "email"}, '"a@b.com"', '"not an email"'),
    "int 5..10": ({"type": "integer", "minimum": 5, "maximum": 10}, "7", "12"),
}


class LLGuidance:
    name, module = "llguidance", "llguidance"

    def __init__(self, tok):
        import llguidance, llguidance.hf, llguidance.torch
        self.llg, self.lt = llguidance, llguidance.torch
        self.tok = llguidance.hf.from_tokenizer(tok, n_vocab=MODEL_VOCAB)  # EOS = tok.eos_token_id

    def compile(self, schema):
        grm = self.llg.LLMatcher.grammar_from_json_schema(schema)
        is_err, msgs = self.llg.LLMatcher.validate_grammar_with_warnings(grm, self.tok)
        if is_err:
            raise ValueError(msgs[0])
        return grm

    def matcher(self, grm):
        m = self.llg.LLMatcher(self.tok, grm, log_level=0)  # 1 would print parse errors to stderr
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def fill(self, m, bitmask): self.lt.fill_next_token_bitmask(m, bitmask)
    def apply(self, logits, bitmask): self.lt.apply_token_bitmask_inplace(logits, bitmask)  # torch.compile
    def advance(self, m, t): return m.consume_token(t)
    def accepting(self, m): return m.is_accepting()
    def finish(self, m, eos): return m.consume_token(eos) and m.is_stopped() and not m.is_error()


class XGrammar:
    name, module = "xgrammar", "xgrammar"

    def __init__(self, tok):
        import xgrammar
        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(tok, vocab_size=MODEL_VOCAB)  # stop ids = eos
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile(self, schema):
        # default strict_mode=True: objects *with* "properties" get additionalProperties=false;
        # a bare {"type":"object"} still allows any keys (compile_builtin_json_grammar allows any value).
        return self.compiler.compile_json_schema(schema)

    def matcher(self, grm): return self.xgr.GrammarMatcher(grm)
    def fill(self, m, bitmask): m.fill_next_token_bitmask(bitmask)
    def apply(self, logits, bitmask): self.xgr.apply_token_bitmask_inplace(logits, bitmask)  # C++ CPU kernel
    def advance(self, m, t): return m.accept_token(t)
    def accepting(self, m): return m.is_completed()
    def finish(self, m, eos): return m.accept_token(eos) and m.is_terminated()


class OutlinesCore:
    name, module = "outlines-core", "outlines_core"

    def __init__(self, tok):
        import outlines_core, outlines_core.kernels.torch as okt
        self.oc, self.okt = outlines_core, okt
        # Vocabulary.from_pretrained only takes a Hub model id (needs network), so build the byte
        # vocabulary ourselves: undo GPT-2 byte-level BPE ("Ġ" -> b" "), skip special tokens.
        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2 bytes_to_unicode
        u2b = {chr(b): b for b in printable}
        u2b.update({chr(256 + n): b for n, b in enumerate(b for b in range(256) if b not in printable)})
        special = set(tok.all_special_ids)
        vocab = {}
        for s, i in tok.get_vocab().items():
            if i not in special:
                vocab.setdefault(bytes(u2b[c] for c in s), []).append(i)
        self.vocab = outlines_core.Vocabulary(tok.eos_token_id, vocab)

    def compile(self, schema):
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(regex, self.vocab)

    def matcher(self, index): return self.oc.Guide(index)
    def fill(self, m, bitmask): self.okt.fill_next_token_bitmask(m, bitmask)
    def apply(self, logits, bitmask): self.okt.apply_token_bitmask_inplace(logits.unsqueeze(0), bitmask)  # compile
    def accepting(self, m): return m.is_finished()

    def advance(self, m, t):
        try:
            m.advance(t, return_tokens=False)
            return True
        except Exception:
            return False

    def finish(self, m, eos):
        # Guide.advance(eos) raises "No next state found"; EOS is only *allowed* in final states.
        return m.is_finished() and eos in m.get_tokens()


SHIFTS = torch.arange(32, dtype=torch.int32)


def apply_plain(logits, bitmask):
    """Library-independent bitmask apply in eager torch (no torch.compile, no native kernel)."""
    bits = ((bitmask[0].unsqueeze(1) >> SHIFTS) & 1).view(-1)[: logits.numel()]
    logits.masked_fill_(bits == 0, float("-inf"))


def allowed(bitmask, t):
    return bool((int(bitmask[0, t // 32]) >> (t % 32)) & 1)


def accepts(lib, grm, ids, eos):
    m = lib.matcher(grm)
    return all(lib.advance(m, t) for t in ids) and lib.accepting(m) and lib.finish(m, eos)


def forced_walk(lib, grm, ids, eos, base_logits, bitmask, logits):
    """One walk; returns per-step (fill_us, apply_us, advance_us) and number of mask/token mismatches."""
    m, steps, bad = lib.matcher(grm), [], 0
    for t in ids + [eos]:
        logits.copy_(base_logits)
        t0 = time.perf_counter()
        lib.fill(m, bitmask)
        t1 = time.perf_counter()
        lib.apply(logits, bitmask)
        t2 = time.perf_counter()
        bad += (not allowed(bitmask, t)) or logits[t].item() == float("-inf")
        ok = lib.advance(m, t) if t != eos else lib.finish(m, eos)
        t3 = time.perf_counter()
        steps.append(((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6))
        bad += not ok
    return steps, bad


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def short(e):
    s = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
    return s if len(s) <= 160 else s[:157] + "..."


def bench(lib_cls, tok):
    print(f"\n## {lib_cls.name}")
    if importlib.util.find_spec(lib_cls.module) is None:
        print(f"{lib_cls.name} is not installed; skipped.")
        return
    t0 = time.perf_counter()
    importlib.import_module(lib_cls.module)
    t1 = time.perf_counter()
    lib = lib_cls(tok)
    print(f"import: {(t1 - t0) * 1e3:.0f} ms; tokenizer-info build (incl. submodule imports): "
          f"{(time.perf_counter() - t1) * 1e3:.0f} ms")
    base = torch.randn(MODEL_VOCAB)
    logits = torch.empty_like(base)
    bitmask = torch.full((1, (MODEL_VOCAB + 31) // 32), -1, dtype=torch.int32)
    bench_apply(lib, base, logits, bitmask)
    bench_schemas(lib, tok, base, logits, bitmask)
    bench_hard(lib, tok)


def bench_apply(lib, base, logits, bitmask):
    t0 = time.perf_counter()  # first apply may trigger torch.compile
    lib.apply(logits.copy_(base), bitmask)
    print(f"first apply (kernel warm-up/compile): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    for fn_name, fn in (("library apply", lib.apply), ("plain-torch apply", apply_plain)):
        bitmask.copy_(torch.randint(-2**31, 2**31 - 1, bitmask.shape, dtype=torch.int32))
        ts = []
        for _ in range(300):
            logits.copy_(base)
            t0 = time.perf_counter()
            fn(logits, bitmask)
            ts.append((time.perf_counter() - t0) * 1e6)
        print(f"{fn_name} on a random mask, 300 runs: p50 {pct(ts, 50):.0f} us, p95 {pct(ts, 95):.0f} us")
    ref = base.clone()
    apply_plain(ref, bitmask)
    assert torch.equal(torch.isinf(ref), torch.isinf(logits)), "plain apply disagrees with library apply"


def bench_schemas(lib, tok, base, logits, bitmask):
    eos, letter = tok.eos_token_id, tok.convert_tokens_to_ids("a")

    print("\n| schema | tokens | compile ms | first mask ms | fill p50/p95 us | apply p50/p95 us "
          "| advance p50 us | step p50/p95 us | walk total ms | valid ok | rejects 'a' |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sname, (schema, inst) in SCHEMAS.items():
        ids = tok.encode(json.dumps(inst), add_special_tokens=False)
        try:
            t0 = time.perf_counter()
            grm = lib.compile(schema)
            t_comp = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            lib.fill(lib.matcher(grm), bitmask)
            t_first = (time.perf_counter() - t0) * 1e3
            forced_walk(lib, grm, ids, eos, base, bitmask, logits)  # warm-up
            steps, bad = [], 0
            for _ in range(REPS):
                s, b = forced_walk(lib, grm, ids, eos, base, bitmask, logits)
                steps += s
                bad += b
            m = lib.matcher(grm)
            lib.fill(m, bitmask)
            rejects = not allowed(bitmask, letter) and not lib.advance(m, letter)
        except Exception as e:
            print(f"| {sname} | {len(ids)} | ERROR {short(e)} |")
            continue
        fill, app, adv = ([s[k] for s in steps] for k in range(3))
        tot = [sum(s) for s in steps]
        print(f"| {sname} | {len(ids)} | {t_comp:.1f} | {t_first:.2f} | {pct(fill, 50):.0f}/{pct(fill, 95):.0f} "
              f"| {pct(app, 50):.0f}/{pct(app, 95):.0f} | {pct(adv, 50):.0f} | {pct(tot, 50):.0f}/{pct(tot, 95):.0f} "
              f"| {sum(tot) / REPS / 1e3:.2f} | {'yes' if bad == 0 else f'NO ({bad} bad steps)'} "
              f"| {'yes' if rejects else 'NO'} |")


def bench_hard(lib, tok):
    enc = lambda s: tok.encode(s, add_special_tokens=False)

    print("\n| construct | compiles | valid accepted | invalid rejected | error |")
    print("|---|---|---|---|---|")
    for cname, (schema, good, badtxt) in HARD.items():
        try:
            grm = lib.compile(schema)
        except Exception as e:
            print(f"| {cname} | no | - | - | {short(e)} |")
            continue
        try:
            g_ok = accepts(lib, grm, enc(good), tok.eos_token_id)
            b_rej = not accepts(lib, grm, enc(badtxt), tok.eos_token_id)
            print(f"| {cname} | yes | {'yes' if g_ok else 'NO'} | {'yes' if b_rej else 'NO (not enforced)'} | |")
        except Exception as e:
            print(f"| {cname} | yes | ? | ? | runtime: {short(e)} |")


def main():
    torch.set_num_threads(1)  # the 2 cores are shared; 2 intra-op threads gave multi-ms spikes
    tok = AutoTokenizer.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else str(TOK_DIR))
    print(f"# grammar_choice: torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"len(tokenizer)={len(tok)}, model vocab={MODEL_VOCAB}, eos={tok.eos_token!r} ({tok.eos_token_id})")
    for lib_cls in (LLGuidance, XGrammar, OutlinesCore):
        bench(lib_cls, tok)


if __name__ == "__main__":
    main()
