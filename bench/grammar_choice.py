"""Compare grammar libraries for constrained JSON decoding on CPU.

Libraries: llguidance, xgrammar, outlines-core (each optional: a missing one is reported, skipped).
For each: tokenizer-info build time, schema compile time, per-token mask fill / apply / advance
cost over a forced walk of a valid instance, acceptance checks, and hard schema constructs.

Run: python bench/grammar_choice.py [tokenizer_dir]     (results: bench/results/grammar/choice.md)
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

TOK_DIR = Path(__file__).resolve().parents[1] / ".viz/test-models/smollm2-135m-instruct"
MODEL_VOCAB = 49152  # config.json vocab_size == lm_head rows (== len(tokenizer) for SmolLM2)
REPS = 5  # forced walks per schema (after one warm-up walk)
STR, INT, NUM, BOOL = ({"type": t} for t in ("string", "integer", "number", "boolean"))


def obj(props):
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


# fmt: off
SCHEMAS = {  # name: (schema, valid instance)
    "flat": (obj({"name": STR, "age": INT, "active": BOOL}),
             {"name": "Alice Smith", "age": 42, "active": True}),
    "nested": (obj({"order_id": STR, "customer": obj({"name": STR, "email": STR}),
                    "items": {"type": "array",
                              "items": obj({"sku": STR, "qty": INT, "price": NUM})}}),
               {"order_id": "A-1001", "customer": {"name": "Bob", "email": "bob@example.com"},
                "items": [{"sku": "X1", "qty": 2, "price": 9.5},
                          {"sku": "Y22", "qty": 1, "price": 120.0}]}),
    "enum+array": (obj({"status": {"type": "string", "enum": ["open", "closed", "pending"]},
                        "tags": {"type": "array", "items": STR}}),
                   {"status": "pending", "tags": ["urgent", "billing", "customer-facing"]}),
    "json_object": ({"type": "object"},
                    {"weather": {"city": "Paris", "temp_c": 21.5, "conditions": ["sunny", "windy"]},
                     "ok": True, "n": None}),
}
RECURSIVE = {"$ref": "#/$defs/x",
             "$defs": {"x": {"type": "object", "properties": {"next": {"$ref": "#/$defs/x"}}}}}
HARD = {  # name: (schema, text that must be accepted, text to reject if the construct is enforced)
    "pattern ^(a|b)+$": ({"type": "string", "pattern": "^(a|b)+$"}, '"abba"', '"abc"'),
    "recursive $ref": (RECURSIVE, '{"next": {"next": {}}}', '{"next": 5}'),
    "patternProperties": ({"type": "object", "patternProperties": {"^x": STR}},
                          '{"x1": "v"}', '{"x1": 5}'),
    "not": ({"not": STR}, "5", '"s"'),
    "format email": ({"type": "string", "format": "email"}, '"a@b.com"', '"not an email"'),
    "int 5..10": ({"type": "integer", "minimum": 5, "maximum": 10}, "7", "12"),
}
# fmt: on


class LLGuidance:
    name, module = "llguidance", "llguidance"

    def __init__(self, tok):
        import llguidance
        import llguidance.hf
        import llguidance.torch as lt  # importing it pulls in torch._dynamo (~3 s)

        self.llg = llguidance
        self.tok = llguidance.hf.from_tokenizer(tok, n_vocab=MODEL_VOCAB)  # EOS: tok.eos_token_id
        self.fill, self.apply = lt.fill_next_token_bitmask, lt.apply_token_bitmask_inplace
        self.advance, self.accepting = (
            llguidance.LLMatcher.consume_token,
            llguidance.LLMatcher.is_accepting,
        )

    def compile(self, schema):
        grm = self.llg.LLMatcher.grammar_from_json_schema(schema)
        is_err, msgs = self.llg.LLMatcher.validate_grammar_with_warnings(grm, self.tok)
        if is_err:
            raise ValueError(msgs[0])
        return grm

    def matcher(self, grm):
        m = self.llg.LLMatcher(self.tok, grm, log_level=0)  # 1 prints parse errors to stderr
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def finish(self, m, eos):
        return m.consume_token(eos) and m.is_stopped() and not m.is_error()


class XGrammar:
    name, module = "xgrammar", "xgrammar"

    def __init__(self, tok):
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=MODEL_VOCAB)  # stop ids: eos
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        # strict_mode=True (default) closes objects that list "properties"; a bare
        # {"type":"object"} still allows any keys (compile_builtin_json_grammar: any JSON value).
        self.compile = self.compiler.compile_json_schema
        self.matcher, self.apply = xgr.GrammarMatcher, xgr.apply_token_bitmask_inplace  # C++ kernel
        self.fill = xgr.GrammarMatcher.fill_next_token_bitmask
        self.advance, self.accepting = (
            xgr.GrammarMatcher.accept_token,
            xgr.GrammarMatcher.is_completed,
        )

    def finish(self, m, eos):
        return m.accept_token(eos) and m.is_terminated()


class OutlinesCore:
    name, module = "outlines-core", "outlines_core"

    def __init__(self, tok):
        import outlines_core as oc
        import outlines_core.kernels.torch as okt

        # Vocabulary.from_pretrained only takes a Hub model id (needs network), so build the byte
        # vocabulary here: undo GPT-2 byte-level BPE ("Ġ" -> b" "), leave out special tokens.
        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # bytes_to_unicode
        u2b = {chr(b): b for b in printable}
        rest = (b for b in range(256) if b not in printable)
        u2b.update({chr(256 + n): b for n, b in enumerate(rest)})
        special = set(tok.all_special_ids)
        vocab = {}
        for s, i in tok.get_vocab().items():
            if i not in special:
                vocab.setdefault(bytes(u2b[c] for c in s), []).append(i)
        self.vocab, self.oc = oc.Vocabulary(tok.eos_token_id, vocab), oc
        self.matcher, self.fill, self.accepting = (
            oc.Guide,
            okt.fill_next_token_bitmask,
            oc.Guide.is_finished,
        )
        self.apply = lambda logits, mask: okt.apply_token_bitmask_inplace(logits[None], mask)

    def compile(self, schema):
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(regex, self.vocab)

    def advance(self, m, t):
        try:
            m.advance(t, return_tokens=False)
            return True
        except ValueError:
            return False

    def finish(self, m, eos):
        # Guide.advance(eos) raises "No next state found"; EOS is only *allowed* in final states.
        return m.is_finished() and eos in m.get_tokens()


SHIFTS = torch.arange(32, dtype=torch.int32)


def apply_plain(logits, mask):
    """Library-independent bitmask apply in eager torch (no torch.compile, no native kernel)."""
    bits = ((mask[0].unsqueeze(1) >> SHIFTS) & 1).view(-1)[: logits.numel()]
    logits.masked_fill_(bits == 0, float("-inf"))


def allowed(mask, t):
    return bool((int(mask[0, t // 32]) >> (t % 32)) & 1)


def accepts(lib, grm, ids, eos):
    m = lib.matcher(grm)
    return all(lib.advance(m, t) for t in ids) and lib.accepting(m) and lib.finish(m, eos)


def forced_walk(lib, grm, ids, eos, base, mask, logits):
    """One walk; per-step (fill_us, apply_us, advance_us) and the count of mismatching steps."""
    m, steps, bad = lib.matcher(grm), [], 0
    for t in ids + [eos]:
        logits.copy_(base)
        t0 = time.perf_counter()
        lib.fill(m, mask)
        t1 = time.perf_counter()
        lib.apply(logits, mask)
        t2 = time.perf_counter()
        bad += (not allowed(mask, t)) or logits[t].item() == float("-inf")
        ok = lib.advance(m, t) if t != eos else lib.finish(m, eos)
        t3 = time.perf_counter()
        steps.append(((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6))
        bad += not ok
    return steps, bad


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def p50_95(xs):
    return f"{pct(xs, 50):.0f}/{pct(xs, 95):.0f}"


def short(e):
    s = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
    return s if len(s) <= 160 else s[:157] + "..."


def bench_apply(lib, base, logits, mask):
    t0 = time.perf_counter()  # the first apply may trigger torch.compile
    lib.apply(logits.copy_(base), mask)
    print(f"first apply (kernel warm-up/compile): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    mask.copy_(torch.randint(-(2**31), 2**31 - 1, mask.shape, dtype=torch.int32))
    for fn_name, fn in (("library apply", lib.apply), ("plain-torch apply", apply_plain)):
        ts = []
        for _ in range(300):
            logits.copy_(base)
            t0 = time.perf_counter()
            fn(logits, mask)
            ts.append((time.perf_counter() - t0) * 1e6)
        print(f"{fn_name}, random mask, 300 runs: p50/p95 {p50_95(ts)} us")
    ref = base.clone()
    apply_plain(ref, mask)
    assert torch.equal(ref.isinf(), logits.isinf()), "plain apply disagrees with library apply"


def bench_schemas(lib, tok, base, logits, mask):
    eos, letter = tok.eos_token_id, tok.convert_tokens_to_ids("a")
    print(
        "\n| schema | tokens | compile ms | first mask ms | fill p50/p95 us | apply p50/p95 us "
        "| advance p50 us | step p50/p95 us | walk total ms | valid ok | rejects 'a' |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sname, (schema, inst) in SCHEMAS.items():
        ids = tok.encode(json.dumps(inst), add_special_tokens=False)
        try:
            t0 = time.perf_counter()
            grm = lib.compile(schema)
            t_comp = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            lib.fill(lib.matcher(grm), mask)
            t_first = (time.perf_counter() - t0) * 1e3
            forced_walk(lib, grm, ids, eos, base, mask, logits)  # warm-up
            steps, bad = [], 0
            for _ in range(REPS):
                s, b = forced_walk(lib, grm, ids, eos, base, mask, logits)
                steps, bad = steps + s, bad + b
            m = lib.matcher(grm)
            lib.fill(m, mask)
            rejects = not allowed(mask, letter) and not lib.advance(m, letter)
        except Exception as e:
            print(f"| {sname} | {len(ids)} | ERROR {short(e)} |")
            continue
        fill, app, adv = ([s[k] for s in steps] for k in range(3))
        tot = [sum(s) for s in steps]
        ok = "yes" if bad == 0 else f"NO ({bad} bad steps)"
        print(
            f"| {sname} | {len(ids)} | {t_comp:.1f} | {t_first:.2f} | {p50_95(fill)} "
            f"| {p50_95(app)} | {pct(adv, 50):.0f} | {p50_95(tot)} "
            f"| {sum(tot) / REPS / 1e3:.2f} | {ok} | {'yes' if rejects else 'NO'} |"
        )


def bench_hard(lib, tok):
    def enc(text):
        return tok.encode(text, add_special_tokens=False)

    print("\n| construct | compiles | valid accepted | invalid rejected | error |")
    print("|---|---|---|---|---|")
    for cname, (schema, good, bad) in HARD.items():
        try:
            grm = lib.compile(schema)
        except Exception as e:
            print(f"| {cname} | no | - | - | {short(e)} |")
            continue
        try:
            g_ok = accepts(lib, grm, enc(good), tok.eos_token_id)
            b_rej = not accepts(lib, grm, enc(bad), tok.eos_token_id)
            print(
                f"| {cname} | yes | {'yes' if g_ok else 'NO'} "
                f"| {'yes' if b_rej else 'NO (not enforced)'} | |"
            )
        except Exception as e:
            print(f"| {cname} | yes | ? | ? | runtime: {short(e)} |")


def bench(lib_cls, tok):
    print(f"\n## {lib_cls.name}")
    if importlib.util.find_spec(lib_cls.module) is None:
        print(f"{lib_cls.name} is not installed; skipped.")
        return
    t0 = time.perf_counter()
    try:
        importlib.import_module(lib_cls.module)
        t1 = time.perf_counter()
        lib = lib_cls(tok)
    except Exception as e:
        print(f"{lib_cls.name} failed to load: {short(e)}; skipped.")
        return
    print(
        f"import: {(t1 - t0) * 1e3:.0f} ms; tokenizer-info build (incl. submodule imports): "
        f"{(time.perf_counter() - t1) * 1e3:.0f} ms"
    )
    base = torch.randn(MODEL_VOCAB)
    logits = torch.empty_like(base)
    mask = torch.full((1, (MODEL_VOCAB + 31) // 32), -1, dtype=torch.int32)
    bench_apply(lib, base, logits, mask)
    bench_schemas(lib, tok, base, logits, mask)
    bench_hard(lib, tok)


def main():
    torch.set_num_threads(1)  # the 2 cores are shared; 2 intra-op threads gave multi-ms spikes
    tok = AutoTokenizer.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else str(TOK_DIR))
    print(
        f"# grammar_choice: torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"len(tokenizer)={len(tok)}, model vocab={MODEL_VOCAB}, "
        f"eos={tok.eos_token!r} ({tok.eos_token_id})"
    )
    for lib_cls in (LLGuidance, XGrammar, OutlinesCore):
        bench(lib_cls, tok)


if __name__ == "__main__":
    main()
