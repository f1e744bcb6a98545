"""RAG, part 2: collections (BM25 + dense + RRF, incremental, crash-safe), catalogue ingest with
permissions, rerankers, grounded answers with citations, and `viz eval rag`."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from viz.config import Settings
from viz.errors import Conflict, InvalidInput, LimitExceeded, NotFound
from viz.rag.answer import (
    CANNOT_FIND,
    RagSettings,
    Retrieval,
    Source,
    answer_question,
    cite,
    grounded_messages,
    retrieve,
)
from viz.rag.collection import (
    CollectionSettings,
    SourceDocument,
    collection_folder,
    create_collection,
    open_collection,
)
from viz.rag.search import Hit, IndexedChunk, reciprocal_rank_fusion
from worlds.catalogue import QASPER_PAPERS, add_papers, qasper_subset

PAPERS = ["1503.00841", "1601.02403"]


def paper(paper_id: str) -> SourceDocument:
    text = (QASPER_PAPERS / f"{paper_id}.txt").read_text()
    return SourceDocument(f"paper:{paper_id}", paper_id, text, licence="CC-BY-4.0")


@pytest.fixture(scope="module")
def papers_collection(tmp_path_factory, embedder):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("rag") / "papers"
    collection = create_collection(folder, CollectionSettings("chars", 1200, 100))
    collection.add([paper(p) for p in PAPERS], embedder)
    yield collection
    collection.close()


# --- collections ----------------------------------------------------------------------------


def test_lexical_search_ranks_by_bm25_and_finds_a_rare_phrase(papers_collection) -> None:
    hits = papers_collection.search("regularization terms neutral features", k=3, mode="lexical")
    assert hits[0].chunk.key == "paper:1503.00841"
    assert "neutral feature" in hits[0].chunk.text
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_dense_search_finds_a_paraphrase_without_shared_words(papers_collection, embedder) -> None:
    hits = papers_collection.search(
        "incorporating human-provided hints into a classifier robustly",
        k=5,
        mode="dense",
        embedder=embedder,
    )
    assert hits[0].chunk.key == "paper:1503.00841"
    assert -1.0 <= hits[-1].score <= hits[0].score <= 1.0


def test_hybrid_fuses_both_rankings_and_can_be_limited_to_documents(
    papers_collection, embedder
) -> None:
    hits = papers_collection.search(
        "regularization terms", k=10, mode="hybrid", embedder=embedder, keys=["paper:1601.02403"]
    )
    assert hits and {h.chunk.key for h in hits} == {"paper:1601.02403"}


def test_reciprocal_rank_fusion_adds_one_over_sixty_plus_rank() -> None:
    def chunk(id_: int) -> IndexedChunk:
        return IndexedChunk(id_, "d", id_, 0, 1, "x")

    lexical = [Hit(chunk(1), 9.0, 1), Hit(chunk(2), 5.0, 2)]
    dense = [Hit(chunk(2), 0.9, 1), Hit(chunk(3), 0.8, 2)]
    fused = reciprocal_rank_fusion([lexical, dense], 3)
    assert [h.chunk.id for h in fused] == [2, 1, 3]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)


def test_adding_again_is_incremental_and_a_changed_document_is_replaced(tmp_path, embedder) -> None:
    collection = create_collection(tmp_path / "c", CollectionSettings("chars", 800, 0))
    first = collection.add([paper(PAPERS[0])], embedder)
    assert first.added == ["paper:1503.00841"] and first.chunks > 10
    again = collection.add([paper(PAPERS[0])], embedder)
    assert again.unchanged == ["paper:1503.00841"] and again.chunks == 0
    changed = SourceDocument("paper:1503.00841", "t", "A short new text. About zebras.")
    report = collection.add([changed], embedder)
    assert report.replaced == ["paper:1503.00841"]
    assert collection.chunk_count() == 1
    assert collection.search("zebras", k=1, mode="lexical")[0].chunk.text.endswith("zebras.")
    assert collection.search("regularization", k=1, mode="lexical") == []
    assert collection.search("zebras", k=1, mode="dense", embedder=embedder)[0].chunk.ordinal == 0


def test_vectors_written_before_a_crash_are_cut_off_on_open(tmp_path, embedder) -> None:
    collection = create_collection(tmp_path / "c", CollectionSettings("chars", 800, 0))
    collection.add([paper(PAPERS[0])], embedder)
    count = collection.chunk_count()
    collection.close()
    vectors = tmp_path / "c" / "vectors.f32"
    with vectors.open("ab") as handle:  # a crash after appending, before the commit
        handle.write(b"\x00" * 384 * 4 * 3)
    reopened = open_collection(tmp_path / "c")
    assert vectors.stat().st_size == count * 384 * 4
    assert reopened.search("prior knowledge", k=2, mode="dense", embedder=embedder)


def test_bad_searches_and_collections_get_clear_errors(tmp_path, papers_collection) -> None:
    with pytest.raises(InvalidInput, match="more than the .* chunks"):
        papers_collection.search("x", k=999, mode="lexical")
    with pytest.raises(InvalidInput, match="empty"):
        papers_collection.search("  ", k=3, mode="lexical")
    with pytest.raises(InvalidInput, match="mode"):
        papers_collection.search("x", k=3, mode="semantic")
    with pytest.raises(LimitExceeded):
        papers_collection.search("x" * 5000, k=3, mode="lexical")
    empty = create_collection(tmp_path / "empty", CollectionSettings())
    with pytest.raises(InvalidInput, match="is empty"):
        empty.search("anything", k=3, mode="lexical")
    with pytest.raises(NotFound, match="viz rag index"):
        open_collection(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="collection name"):
        collection_folder(tmp_path, "../escape")
    with pytest.raises(Conflict, match="built with"):
        create_collection(tmp_path / "empty", CollectionSettings("chars", 800, 0))


# --- ingest from the catalogue ----------------------------------------------------------------


def catalogue(engine, settings: Settings) -> list[int]:  # type: ignore[no-untyped-def]
    """Ada's two papers that allow inference, then one that does not."""
    from viz.accounts import create_account
    from viz.store import session_scope

    with session_scope(engine) as session:
        ada = create_account(session, "ada")
        allowed = add_papers(session, settings.blobs_dir, ada, PAPERS)
        private = add_papers(
            session, settings.blobs_dir, ada, ["1603.01514"], ai_inference="notAllowed"
        )
        return allowed + private


def test_only_documents_allowing_inference_are_indexed_and_answered_from(
    tmp_path, sqlite_engine, embedder
) -> None:
    from viz.rag.ingest import Selection, allowed_for_inference, index_catalogue
    from viz.store import session_scope
    from viz.store.schema import Document

    settings = Settings(home=tmp_path)
    folders = {"home": settings.home, "blobs_dir": settings.blobs_dir}
    ids = catalogue(sqlite_engine, settings)
    with session_scope(sqlite_engine) as session:
        report = index_catalogue(
            session, "papers", Selection(all=True), **folders, embedder=embedder
        )
    assert report.added.added == [f"doc:{ids[0]}", f"doc:{ids[1]}"]
    assert report.skipped == [(ids[2], "its ai_inference permission is notAllowed")]

    collection = open_collection(collection_folder(tmp_path, "papers"))
    question = "Which regularization terms address the robustness to prior knowledge?"
    options = RagSettings(top_k=5, candidates=0, mode="lexical")
    with session_scope(sqlite_engine) as session:
        found = retrieve(
            collection, question, options, allowed=lambda d: allowed_for_inference(session, d)
        )
    assert found.sources and found.sources[0].document_id == ids[0]
    assert found.sources[0].licence == "CC-BY-4.0"
    assert found.sources[0].attribution == "Dasigi et al. 2021"

    with session_scope(sqlite_engine) as session:  # the owner withdraws the permission
        session.execute(update(Document).where(Document.id == ids[0]).values(ai_inference="no"))
    with session_scope(sqlite_engine) as session:
        found = retrieve(
            collection, question, options, allowed=lambda d: allowed_for_inference(session, d)
        )
    assert all(s.document_id != ids[0] for s in found.sources)

    with session_scope(sqlite_engine) as session, pytest.raises(NotFound, match="999"):
        index_catalogue(session, "papers", Selection(ids=(999,)), **folders, embedder=embedder)
    with session_scope(sqlite_engine) as session, pytest.raises(InvalidInput, match="name the"):
        index_catalogue(session, "papers", Selection(), **folders, embedder=embedder)


# --- rerankers --------------------------------------------------------------------------------


def test_a_trained_reranker_is_a_standard_cross_encoder_folder(tiny_reranker) -> None:
    from viz.rag.rerank import load_cross_encoder, rerank

    manifest = json.loads((tiny_reranker / "viz-reranker.json").read_text())
    assert manifest["settings"]["layers"] == 1 and manifest["examples"] > 0
    assert (tiny_reranker / "model.safetensors").is_file()
    reranker = load_cross_encoder(tiny_reranker)
    texts = ["We evaluate on SQuAD.", "The weather was nice.", "Results on SQuAD improve."]
    scores = reranker.score("Which dataset?", texts)
    assert len(scores) == 3 and all(abs(s) < 100 for s in scores)
    hits = [Hit(IndexedChunk(i, "d", i, 0, 1, t), 0.0, i + 1) for i, t in enumerate(texts)]
    best = rerank(reranker, "Which dataset?", hits, 2, fuse=False)
    order = sorted(range(3), key=lambda i: (-scores[i], i))[:2]  # ties: first-stage order
    assert [h.chunk.id for h in best] == order and [h.rank for h in best] == [1, 2]


def test_without_native_bf16_the_reranker_runs_int8_and_scores_as_fp32_does(
    tiny_reranker, monkeypatch
) -> None:
    import torch

    from viz.rag.rerank import load_cross_encoder

    texts = ["We evaluate on SQuAD.", "The weather was nice.", "Results on SQuAD improve."]
    exact = load_cross_encoder(tiny_reranker, precision="fp32")
    monkeypatch.setenv("VIZ_CPU_NATIVE_BF16", "0")  # the AVX2-only CPU class
    fast = load_cross_encoder(tiny_reranker)
    assert fast.precision == "int8" and exact.precision == "fp32"
    linears = [m for m in fast.model.modules() if isinstance(m, torch.nn.Linear)]
    quantised = [m for m in fast.model.modules() if "quantized" in type(m).__module__]
    assert quantised and not linears, "every linear layer runs in int8"
    assert (tiny_reranker / "model.safetensors").is_file(), "the folder stays fp32 safetensors"
    pairs = zip(
        fast.score("Which dataset?", texts), exact.score("Which dataset?", texts), strict=True
    )
    assert all(abs(a - b) < 0.05 for a, b in pairs)
    monkeypatch.setenv("VIZ_CPU_NATIVE_BF16", "1")
    assert load_cross_encoder(tiny_reranker).precision == "bf16"
    with pytest.raises(InvalidInput, match="precision 'fp8' must be one of"):
        load_cross_encoder(tiny_reranker, precision="fp8")


class ByLength:
    """A reranker that prefers longer texts: simple enough to check the fusion by hand."""

    name = "by-length"

    def score(self, query: str, texts: list[str]) -> list[float]:
        return [float(len(t)) for t in texts]


def test_reranking_fuses_the_first_stage_rank_with_the_rerankers() -> None:
    from viz.rag.rerank import rerank

    texts = ["aaaa", "a", "aa", "aaaaaa"]  # first-stage order; by length: 3, 0, 2, 1
    hits = [Hit(IndexedChunk(i, "d", i, 0, 1, t), 0.0, i + 1) for i, t in enumerate(texts)]
    alone = rerank(ByLength(), "q", hits, 4, fuse=False)
    assert [h.chunk.id for h in alone] == [3, 0, 2, 1]
    fused = rerank(ByLength(), "q", hits, 4)
    # 0: 1/61 + 1/62 > 3: 1/64 + 1/61 > 1: 1/62 + 1/64 (0.031754) > 2: 1/63 + 1/63 (0.031746)
    assert [h.chunk.id for h in fused] == [0, 3, 1, 2]
    assert [h.score for h in fused] == [4.0, 6.0, 1.0, 2.0], "scores stay the reranker's"


def test_training_is_reproducible_by_seed(tmp_path, tiny_reranker) -> None:
    from safetensors.torch import load_file

    from viz.rag.rerank_train import TrainingSettings, train_cross_encoder

    data = qasper_subset(tmp_path / "data", "qasper-train", 4)
    settings = TrainingSettings(steps=3, layers=1, max_tokens=64, questions_per_step=2)
    train_cross_encoder(data, tmp_path / "again", settings)
    first = load_file(tiny_reranker / "model.safetensors")
    second = load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(bool((first[k] == second[k]).all()) for k in first)


def test_a_student_distils_from_its_teacher_starting_as_it(tmp_path, tiny_reranker) -> None:
    from safetensors.torch import load_file

    from viz.rag.rerank_train import TrainingSettings, train_cross_encoder

    data = qasper_subset(tmp_path / "data", "qasper-train", 4)
    with pytest.raises(InvalidInput, match="--layers 3 --max-tokens 256"):
        TrainingSettings(teacher=str(tmp_path)).check()  # not a reranker folder
    settings = TrainingSettings(
        steps=2, layers=1, max_tokens=64, questions_per_step=2, teacher=str(tiny_reranker)
    )
    manifest = train_cross_encoder(data, tmp_path / "student", settings)
    assert manifest["base"] == "tiny" and manifest["settings"]["teacher"] == str(tiny_reranker)
    teacher = load_file(tiny_reranker / "model.safetensors")
    student = load_file(tmp_path / "student" / "model.safetensors")
    assert student.keys() == teacher.keys()  # the teacher's shape, first layers and head
    assert any(not bool((student[k] == teacher[k]).all()) for k in student), "it trained"


def test_reranker_folders_are_checked(tmp_path) -> None:
    from viz.rag.rerank import load_cross_encoder, load_reranker

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(InvalidInput, match="model.safetensors"):
        load_cross_encoder(tmp_path)
    with pytest.raises(NotFound, match="viz rag train-reranker"):
        load_reranker("default", tmp_path / "home")


def test_the_llm_scorer_reads_yes_against_no(smollm2) -> None:
    from viz.rag.rerank import LLMScorer

    scorer = LLMScorer("llm", smollm2.model, smollm2.tokenizer)
    scores = scorer.score(
        "What is the capital of France?",
        ["Paris is the capital of France.", "Bananas are rich in potassium."],
    )
    assert scores[0] > scores[1]


# --- grounded answers -------------------------------------------------------------------------


def sources_of(*texts: str) -> list[Source]:
    return [
        Source(n, Hit(IndexedChunk(n, "d", n, 0, len(t), t), 1.0, n), f"T{n}", "MIT", "", n)
        for n, t in enumerate(texts, 1)
    ]


def test_an_answer_cites_its_markers_else_the_source_it_copies() -> None:
    sources = sources_of("QLoRA quantises the base model to 4-bit NormalFloat.", "Cats purr.")
    assert cite("It uses 4-bit NormalFloat [1].", sources) == (
        "It uses 4-bit NormalFloat [1].",
        [1],
        "model",
    )
    assert cite("See [1, 2] and [9].", sources)[1] == [1, 2]
    text, cited, mode = cite("QLoRA quantises the model to 4-bit NormalFloat.", sources)
    assert (cited, mode) == ([1], "attributed") and text.endswith("[1]")
    assert cite("Something unrelated entirely.", sources)[1:] == ([], "none")
    assert cite(CANNOT_FIND, sources)[1:] == ([], "none")


def test_the_prompt_numbers_the_sources_and_asks_for_citations() -> None:
    messages = grounded_messages("What is QLoRA?", sources_of("First text.", "Second text."))
    assert messages[0]["role"] == "system" and "[1]" in messages[0]["content"]
    assert "[1] T1\nFirst text." in messages[1]["content"]
    assert "[2] T2\nSecond text." in messages[1]["content"]
    assert messages[1]["content"].endswith("Question: What is QLoRA?")


def test_nothing_relevant_means_no_generation_and_no_citation() -> None:
    answer = answer_question(None, None, "Anything?", Retrieval(sources_of("x"), relevant=False))
    assert answer.text == CANNOT_FIND and answer.cited == [] and answer.completion_tokens == 0


def test_a_grounded_answer_from_the_real_model(papers_collection, embedder, smollm2) -> None:
    retrieval = retrieve(
        papers_collection,
        "How many regularization terms do they propose?",
        RagSettings(top_k=3, candidates=0),
        embedder=embedder,
    )
    answer = answer_question(
        smollm2.model, smollm2.tokenizer, "How many?", retrieval, max_tokens=24
    )
    assert answer.prompt_tokens > 300 and 0 < answer.completion_tokens <= 24
    assert answer.citation_mode in ("model", "attributed", "none")
    assert set(answer.cited) <= {1, 2, 3}


def test_rag_settings_are_checked() -> None:
    for bad, message in [
        (RagSettings(top_k=0), "top_k"),
        (RagSettings(top_k=5, candidates=3), "candidates"),
        (RagSettings(candidates=500), "candidates"),
        (RagSettings(mode="fuzzy"), "mode"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            bad.check()


# --- viz eval rag -----------------------------------------------------------------------------


def test_question_sets_with_missing_fields_or_papers_are_refused(tmp_path) -> None:
    from viz.datasets.qasper import load_questions

    with pytest.raises(NotFound, match="questions.json"):
        load_questions(tmp_path)
    (tmp_path / "papers").mkdir()
    (tmp_path / "questions.json").write_text("not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_questions(tmp_path)
    (tmp_path / "questions.json").write_text(
        json.dumps(
            [
                {"paper_id": "p1", "question_id": "q1", "question": "Why?"},
                {"paper_id": "p2", "question_id": "q2", "question": "How?", "answers": [{}]},
                {
                    "paper_id": "p3",
                    "question_id": "q3",
                    "question": "What?",
                    "answers": [
                        {
                            "unanswerable": True,
                            "extractive_spans": [],
                            "free_form_answer": "",
                            "evidence": [],
                        }
                    ],
                },
            ]
        )
    )
    with pytest.raises(InvalidInput) as refused:
        load_questions(tmp_path)
    message = str(refused.value)
    assert "q1) lacks answers" in message
    assert "answers[].unanswerable" in message
    assert "no papers/p3.txt" in message


def test_eval_rag_runs_a_small_grid_writes_the_report_and_resumes(
    tmp_path, embedder, smollm2, tiny_reranker
) -> None:
    from viz.eval.rag import GridSettings, run_rag_eval
    from viz.rag.rerank import load_cross_encoder

    data = qasper_subset(tmp_path / "dev", "qasper-dev", 1)
    grid = GridSettings(chunk_sizes=(800,), top_ks=(3,), candidates=(10,), max_tokens=12)
    out = tmp_path / "report"
    run = dict(
        llm=smollm2,
        embedder=embedder,
        reranker=load_cross_encoder(tiny_reranker),
        settings=grid,
        sample=2,
    )
    cells, files = run_rag_eval(data, out, **run)
    assert [c["cell"] for c in cells] == ["vanilla", "rag-c800-k3", "rar-c800-n10-k3"]
    assert all(c["questions"] == 2 for c in cells)
    assert cells[0]["recall_at_k"] is None and cells[0]["f1"] is not None
    for name in ("report.md", "report.html", "results.json", "results.csv"):
        assert files[name].is_file()
    assert (out / "f1_by_chunk_size.png").read_bytes()[:4] == b"\x89PNG"
    answers = (out / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 6

    # Resume: a record cut short by a crash runs again; finished ones are not regenerated.
    (out / "answers.jsonl").write_text("\n".join(answers[:-1]) + "\n" + answers[-1][:20])
    cells_again, _ = run_rag_eval(data, out, **run)
    lines = (out / "answers.jsonl").read_text().splitlines()
    assert len([line for line in lines if line.endswith("}")]) == 6
    assert [(c["f1"], c["recall_at_k"]) for c in cells_again] == [
        (c["f1"], c["recall_at_k"]) for c in cells
    ]


def test_a_grid_runs_only_the_methods_asked_for_and_names_an_unknown_one() -> None:
    from viz.eval.rag import GridSettings, grid

    settings = GridSettings(chunk_sizes=(800,), top_ks=(3,), candidates=(10,), methods=("rar",))
    assert [cell.name for cell in grid(settings)] == ["rar-c800-n10-k3"]
    with pytest.raises(InvalidInput, match="methods rerank"):
        GridSettings(methods=("rar", "rerank")).check()
