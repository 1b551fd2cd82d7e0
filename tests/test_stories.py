"""The TinyStories pipeline: reader, words, vocabulary, window average, decoding, sizes, scoring,
and the download of the corpus, each against an independent oracle."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math

import numpy as np
import pytest
import torch

from theorylab import ardt_pipeline, stories
from theorylab import data as data_module
from theorylab.tinylm import TinyTransformer


def test_the_reader_splits_a_hand_written_file(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("One day, Tom ran.\n<|endoftext|>\n\n<|endoftext|>\nLily smiled!\n<|endoftext|>\nThe end.",
                    encoding="utf-8")
    assert stories.read_stories(path) == ["One day, Tom ran.", "Lily smiled!", "The end."]
    assert stories.read_stories(path, 2) == ["One day, Tom ran.", "Lily smiled!"]
    assert stories.read_stories(path, 0) == []
    assert data_module.count_documents(path, stories.SEPARATOR) == 3


def test_the_reader_joins_a_story_cut_by_a_block_boundary(tmp_path):
    # the reader streams blocks of 2**20 characters: put a separator across the first boundary
    first = "a" * ((1 << 20) - 5)
    path = tmp_path / "s.txt"
    path.write_text(first + stories.SEPARATOR + "second story" + stories.SEPARATOR, encoding="utf-8")
    assert stories.read_stories(path) == [first, "second story"]
    assert data_module.count_documents(path, stories.SEPARATOR) == 2


def test_the_stand_in_is_read_back_through_the_same_reader(tmp_path):
    path = stories.write_stand_in(tmp_path / "x.txt", 7, seed=3)
    text = path.read_text(encoding="utf-8")
    assert text.count(stories.SEPARATOR) == 7
    read = stories.read_stories(path)
    assert len(read) == 7 and all(s.startswith(("Once", "One")) for s in read)


def test_tokenizer_round_trip():
    tokens = ["once", "upon", "a", "time", ",", "tom", "said", ",", "\"", "let's", "go", "!", "\"", "didn't", "3", "."]
    assert stories.tokenize(stories.detokenize(tokens)) == tokens
    sentence = "Tom said, \"let's go!\" Then he didn't stop."
    assert stories.tokenize(sentence) == ["tom", "said", ",", "\"", "let's", "go", "!", "\"", "then", "he", "didn't",
                                          "stop", "."]
    assert stories.detokenize(["the", "cat", "sat", "."]) == "the cat sat."
    assert stories.tokenize("\u201cI didn\u2019t,\u201d she said.") == stories.tokenize('"I didn\'t," she said.')


def test_vocabulary_ranks_by_count_then_alphabet_and_maps_the_rest_to_unk():
    vocab = stories.Vocabulary.build([["b", "a", "c", "a"], ["b", "d", "a"]], size=5)
    assert vocab.words == ["<unk>", "<|endoftext|>", "a", "b", "c"]  # a:3, b:2, then c before d
    assert vocab.encode(["d", "a", "zzz"]) == [0, 2, 0]
    assert vocab.frame(["c"]) == [1, 4, 1] and vocab.decode([2, 3]) == ["a", "b"]
    with pytest.raises(ValueError):
        stories.Vocabulary.build([["a"]], size=2)


def test_the_stream_lists_every_context_and_its_next_token():
    stream = stories.Stream.of([[1, 5, 6, 1], [1, 7, 1]])
    assert stream.tokens.tolist() == [1, 5, 6, 1, 1, 7, 1]
    assert stream.starts.tolist() == [0, 0, 0, 0, 4, 4, 4]
    assert stream.positions.tolist() == [0, 1, 2, 4, 5]  # the last token of each story has no next token
    assert stream.targets.tolist() == [5, 6, 1, 7, 1]


def test_window_features_equal_the_hand_loop():
    rng = np.random.default_rng(0)
    framed = [[1, *rng.integers(2, 9, size=n).tolist(), 1] for n in (0, 3, 12)]
    embeddings = rng.normal(size=(9, 4))
    stream = stories.Stream.of(framed)
    for length, decay in ((1, 1.0), (3, 0.5), (8, 0.7)):
        got = stories.window_features(stream, stream.positions, embeddings, length, decay)
        prefixes = [stream.tokens[stream.starts[p]:p + 1].tolist() for p in stream.positions]
        want = ardt_pipeline.window_average(prefixes, embeddings, length, decay)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_nearest_tokens_equal_brute_force_and_skip_excluded_ids():
    rng = np.random.default_rng(1)
    embeddings, predicted = rng.normal(size=(30, 5)), rng.normal(size=(50, 5))

    def brute(vector, exclude):
        best, arg = -math.inf, None
        for k, e in enumerate(embeddings):
            c = float(vector @ e / np.linalg.norm(vector) / np.linalg.norm(e))
            if k not in exclude and c > best:
                best, arg = c, k
        return arg

    for exclude in ((), (0, 1)):
        want = [brute(v, exclude) for v in predicted]
        got = stories.nearest_tokens(predicted, embeddings, exclude, batch=7)
        assert got.tolist() == want
    predicted[:, :] = embeddings[3]
    assert set(stories.nearest_tokens(predicted, embeddings, (0,))) == {3}


@pytest.mark.parametrize(("vocab", "width", "layers", "max_len"), [(11, 8, 1, 16), (60, 12, 2, 32), (100, 20, 3, 8)])
def test_the_transformer_parameter_formula_counts_the_module(vocab, width, layers, max_len):
    model = TinyTransformer(vocab, width=width, layers=layers, heads=4, max_len=max_len)
    assert stories.transformer_parameters(vocab, width, layers, max_len) == sum(p.numel() for p in model.parameters())


def test_comparable_width_is_the_nearest_multiple_of_heads():
    target = 250_000
    width = stories.comparable_width(target, 500, 2, 64)
    assert width % 4 == 0
    gaps = {w: abs(stories.transformer_parameters(500, w, 2, 64) - target) for w in range(4, 1000, 4)}
    assert gaps[width] == min(gaps.values())


def test_transformer_rows_cut_the_stream_with_one_token_of_overlap():
    rows = stories.transformer_rows([[1, 2, 3, 1], [1, 4, 5, 6, 1]], length=3)
    flat = [1, 2, 3, 1, 1, 4, 5, 6, 1]
    assert rows.tolist() == [flat[0:4], flat[3:7]]  # (9 - 1) // 3 = 2 rows of 4


def test_score_transformer_equals_one_prefix_at_a_time():
    torch.manual_seed(0)
    model = TinyTransformer(12, width=8, layers=1, heads=4, max_len=6).eval()
    framed = [[1, 3, 4, 5, 1], [1, 6, 7, 8, 9, 10, 11, 2, 1]]  # the second is cut to max_len + 1 = 7 tokens
    got = stories.score_transformer(model, framed, batch=1)
    losses, hits = [], []
    with torch.no_grad():
        for story in framed:
            story = story[:7]
            for t in range(1, len(story)):
                logits = model(torch.tensor([story[:t]]))[0, -1].double()
                losses.append(float(-torch.log_softmax(logits, 0)[story[t]]))
                hits.append(int(logits.argmax()) == story[t])
    assert got["positions"] == len(losses) == 4 + 6
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-9)
    assert got["accuracy"] == pytest.approx(np.mean(hits))


def _toy_trees(seed=0):
    rng = np.random.default_rng(seed)
    framed = [[1, *rng.integers(2, 10, size=int(rng.integers(3, 9))).tolist(), 1] for _ in range(60)]
    embeddings = rng.normal(size=(10, 3))
    stream = stories.Stream.of(framed)
    model = stories.fit_story_trees(stream, embeddings, rounds=3, max_depth=3, context_length=3, decay=0.5,
                                    held_out=50, n_jobs=1, seed=seed)
    return stream, model


def test_tree_scores_and_generation_equal_a_hand_loop():
    stream, model = _toy_trees()
    scores = stories.score_trees(model, stream, batch=17)
    prefixes = [stream.tokens[stream.starts[p]:p + 1].tolist() for p in stream.positions]
    features = ardt_pipeline.window_average(prefixes, model.embeddings, 3, 0.5).astype(np.float32)
    cos = ardt_pipeline.cosines(model.predict(features), model.embeddings)
    probabilities = ardt_pipeline.softmax_rows(cos, model.temperature)
    targets = stream.targets
    assert scores["accuracy"] == pytest.approx(np.mean(cos.argmax(1) == targets))
    assert scores["loss"] == pytest.approx(-np.mean(np.log(probabilities[np.arange(targets.size), targets])))
    prompts = [[1, 2, 3], [1, 4]]
    generated = stories.generate_trees(model, prompts, 5)
    for prompt, new in zip(prompts, generated, strict=True):
        sequence = list(prompt)
        for _ in range(5):
            c = ardt_pipeline.window_average([sequence], model.embeddings, 3, 0.5).astype(np.float32)
            scores_row = ardt_pipeline.cosines(model.predict(c), model.embeddings)[0]
            scores_row[0] = -np.inf
            sequence.append(int(scores_row.argmax()))
            if sequence[-1] == 1:
                break
        assert new == sequence[len(prompt):]


def test_split_usage_counts_the_splits_in_the_dump_and_finds_the_only_useful_feature():
    from xgboost import XGBRegressor

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 4))
    y = np.stack([np.sign(x[:, 1]), x[:, 1] ** 2], axis=1)
    model = XGBRegressor(n_estimators=4, max_depth=2, tree_method="hist", n_jobs=1).fit(x, y)
    usage = stories.split_usage(model, 4)
    dump = "".join(model.get_booster().get_dump())
    assert usage["splits"].tolist() == [float(dump.count(f"[f{k}<")) for k in range(4)]
    assert usage["gain"].argmax() == 1 and usage["gain"][1] > 0.9 * usage["gain"].sum()


def test_extreme_words_are_the_ends_of_the_sorted_coordinate():
    vocab = stories.Vocabulary(["<unk>", "<|endoftext|>", "a", "b", "c", "d"])
    embeddings = np.array([[9.0], [-9.0], [0.5], [3.0], [-1.0], [2.0]])
    assert stories.extreme_words(embeddings, vocab, 0, count=2) == {"high": ["b", "d"], "low": ["c", "a"]}


def test_clusters_are_named_by_the_word_nearest_their_centre():
    vocab = stories.Vocabulary(["<unk>", "<|endoftext|>", "x1", "x2", "y1", "y2"])
    embeddings = np.array([[1, 1], [1, -1], [1, 0.01], [1, -0.01], [0.01, 1], [-0.01, 1.0]])
    centres, names = stories.cluster_directions(embeddings, vocab, 2)
    assert sorted(n[0] for n in names) == ["x", "y"]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0)


def test_xgboost_runs_on_the_cpu_without_a_cuda_build():
    assert stories.xgboost_device("cpu") == "cpu"
    if not stories.xgboost_cuda_build():
        assert stories.xgboost_device("cuda:0") == "cpu"


# ----------------------------------------------------------------------------------------------
# The corpus download


def _served(tmp_path, tamper=False):
    served = tmp_path / "served"
    served.mkdir()
    for name, n in (("TinyStories-train.txt", 5), ("TinyStories-valid.txt", 3)):
        stories.write_stand_in(served / name, n)
    spec = dataclasses.replace(data_module.PUBLIC_TEXT_SETS["tinystories"], base_url=served.as_uri() + "/",
                               min_documents=(5, 4 if tamper else 3))
    return spec


def test_tinystories_downloads_on_first_use_and_is_then_cached(tmp_path, monkeypatch):
    monkeypatch.setitem(data_module.PUBLIC_TEXT_SETS, "tinystories", _served(tmp_path))
    cache = tmp_path / "cache"
    folder = data_module.ensure_public_set("tinystories", cache)
    assert folder == cache / "tinystories" and data_module.is_cached("tinystories", cache)
    assert len(stories.read_stories(folder / "TinyStories-valid.txt")) == 3
    assert data_module.public_set("tinystories").title == "TinyStories"
    assert sorted(p.name for p in folder.iterdir()) == ["TinyStories-train.txt", "TinyStories-valid.txt"]
    train, valid = stories.tinystories_paths(smoke=False, root=cache)
    assert train.parent == valid.parent == folder


def test_a_short_file_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setitem(data_module.PUBLIC_TEXT_SETS, "tinystories", _served(tmp_path, tamper=True))
    cache = tmp_path / "cache"
    with pytest.raises(data_module.DatasetUnavailable, match="fewer than 4 documents"):
        data_module.ensure_public_set("tinystories", cache)
    assert not (cache / "tinystories" / "TinyStories-valid.txt").exists()
    assert [p.name for p in (cache / "tinystories").iterdir()] == ["TinyStories-train.txt"]


def test_the_hub_checksum_is_checked(tmp_path, monkeypatch):
    import urllib.request

    body = b"A story.\n<|endoftext|>\n"

    class Response(io.BytesIO):
        def __init__(self, digest):
            super().__init__(body)
            self.headers = {"Content-Length": str(len(body)), "X-Linked-Etag": f'"{digest}"'}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    spec = dataclasses.replace(data_module.PUBLIC_TEXT_SETS["tinystories"], min_documents=(1, 1))
    monkeypatch.setitem(data_module.PUBLIC_TEXT_SETS, "tinystories", spec)
    monkeypatch.setattr(data_module, "hub_sha256", lambda url: None)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response("f" * 64))
    with pytest.raises(data_module.DatasetUnavailable, match="SHA-256 differs"):
        data_module.ensure_public_set("tinystories", tmp_path / "bad")
    good = hashlib.sha256(body).hexdigest()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(good))
    folder = data_module.ensure_public_set("tinystories", tmp_path / "good")
    assert data_module.sha256_file(folder / "TinyStories-valid.txt") == good
    # the hub's redirect names the checksum: it is checked even when the final answer has no header
    monkeypatch.setattr(data_module, "hub_sha256", lambda url: "e" * 64)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(""))
    with pytest.raises(data_module.DatasetUnavailable, match="SHA-256 differs from the hub's eee"):
        data_module.ensure_public_set("tinystories", tmp_path / "redirect")


def test_hub_sha256_reads_the_redirect_header_and_never_follows_it(monkeypatch):
    import email.message
    import urllib.error
    import urllib.request

    assert data_module.hub_sha256("file:///tmp/x.txt") is None  # not the hub: nothing asked
    headers = email.message.Message()
    headers["X-Linked-Etag"] = '"' + "a" * 64 + '"'

    class Opener:
        def open(self, request, timeout):
            assert request.get_method() == "HEAD"
            raise urllib.error.HTTPError(request.full_url, 302, "Found", headers, None)

    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: Opener())
    assert data_module.hub_sha256("https://huggingface.co/datasets/x/resolve/main/y.txt") == "a" * 64
    headers.replace_header("X-Linked-Etag", "W/not-a-digest")
    assert data_module.hub_sha256("https://huggingface.co/datasets/x/resolve/main/y.txt") is None


def test_offline_the_set_is_unavailable_with_instructions(tmp_path, monkeypatch):
    import urllib.request

    def offline(url, timeout):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(data_module, "hub_sha256", lambda url: None)
    with pytest.raises(data_module.DatasetUnavailable, match="TinyStories-train.txt") as raised:
        data_module.ensure_public_set("tinystories", tmp_path)
    assert "--smoke" in str(raised.value) and "huggingface.co" in str(raised.value)
    with pytest.raises(data_module.DatasetUnavailable, match="downloads are off"):
        data_module.ensure_text_set("tinystories", tmp_path, download=False)


def test_smoke_paths_are_stand_ins_in_the_scratch_folder_not_the_cache(tmp_path):
    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    scratch.mkdir()
    train, valid = stories.tinystories_paths(smoke=True, scratch=scratch, root=cache, smoke_stories=(6, 2))
    assert train.parent == valid.parent == scratch and not cache.exists()
    assert len(stories.read_stories(train)) == 6 and len(stories.read_stories(valid)) == 2
