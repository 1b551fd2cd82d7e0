"""theorylab.ardt, the grammar and the sentence-model helpers, against independent truths: direct
simulation of each machine on every input up to a length, the proved depth and leaf counts, brute-force
enumeration and Monte-Carlo frequencies of the grammar."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

from theorylab import ardt, tinylm
from theorylab.data import Grammar, boolean_expressions

DFAS = {"parity": ardt.parity_dfa(), "mod 3": ardt.mod_k_dfa(3), "mod 5": ardt.mod_k_dfa(5),
        "random 5": ardt.random_dfa(5, seed=1), "random 7 over 3 symbols": ardt.random_dfa(7, (0, 1, 2), seed=2)}


@pytest.mark.parametrize("name", DFAS)
def test_compiled_dfa_matches_direct_simulation_on_every_input(name):
    transitions, start = DFAS[name]
    dfa = ardt.compile_dfa(transitions, start)
    n_states, n_symbols = len(dfa.states), len(dfa.alphabet)
    assert dfa.depth == 2 and dfa.n_leaves == ardt.leaf_bound_dfa(n_states, n_symbols)
    for n in range(1, 9 if n_symbols == 3 else 11):
        inputs = ardt.all_inputs(n, n_symbols)
        expected = [dfa.states.index(ardt.simulate_dfa(transitions, start, [dfa.alphabet[s] for s in row])[-1])
                    for row in inputs]
        assert np.array_equal(dfa.run_all(n), expected), n
    word = [dfa.alphabet[k % n_symbols] for k in range(7)]
    assert dfa.run(word) == ardt.simulate_dfa(transitions, start, word)  # the whole chain of thought


def test_dfa_bad_input_names_the_problem():
    transitions, _ = ardt.parity_dfa()
    with pytest.raises(ValueError, match="not total.*\\(1, 1\\)"):
        ardt.compile_dfa({k: v for k, v in transitions.items() if k != (1, 1)}, 0)
    with pytest.raises(ValueError, match="unknown start state 'q9'"):
        ardt.compile_dfa(transitions, "q9")
    with pytest.raises(ValueError, match="outside the alphabet.*'a'"):
        ardt.compile_dfa(transitions, 0).run([0, "a", 1])


@pytest.mark.parametrize("machine,tapes", [
    ("increment", [tuple(tape) for tape in ardt.increment_tapes(10)]),
    ("adder", [tuple([1] * a + [0] + [1] * b + ["_"] * 3) for a in range(5) for b in range(5)]),
])
def test_compiled_turing_machine_matches_direct_simulation(machine, tapes):
    spec = ardt.increment_tm() if machine == "increment" else ardt.unary_adder_tm()
    for tape in tapes:
        tm = ardt.compile_turing_machine(spec["transitions"], spec["blank"], spec["halting"], len(tape))
        head, state = (len(tape) - 1, "carry") if machine == "increment" else (0, "scan")
        steps = 2 * len(tape) + 2
        assert tm.run(tape, state, head, steps) == ardt.simulate_tm(spec["transitions"], spec["halting"], tape, state,
                                                                    head, steps)
    n_states, n_symbols = len(tm.states), len(tm.tape_symbols)
    assert tm.depth == 3 and tm.n_leaves == ardt.tm_leaf_count(n_states, n_symbols)


def test_increment_tree_has_the_prototypes_47_leaves_and_adds_one():
    spec = ardt.increment_tm()
    tm = ardt.compile_turing_machine(spec["transitions"], spec["blank"], spec["halting"], 5)
    assert tm.n_leaves == 47
    state, _, tape = tm.run(["_", 1, 0, 1, 1], "carry", 4, 6)[-1]
    assert state == "done" and tape == ("_", 1, 1, 0, 0)


def test_turing_machine_bad_input():
    spec = ardt.increment_tm()
    with pytest.raises(ValueError, match="not total"):
        ardt.compile_turing_machine({("carry", 1): ("carry", 0, -1)}, "_", {"done"}, 4)
    with pytest.raises(ValueError, match="move"):
        ardt.compile_turing_machine({**spec["transitions"], ("carry", 1): ("carry", 0, 2)}, "_", {"done"}, 4)
    tm = ardt.compile_turing_machine(spec["transitions"], "_", {"done"}, 4)
    with pytest.raises(ValueError, match="tape symbols outside"):
        tm.run(["_", 1, 7, 1], "carry", 3, 2)
    with pytest.raises(ValueError, match="left its tape"):
        ardt.simulate_tm(spec["transitions"], {"done"}, [1, 1], "carry", 1, 3)


@pytest.mark.parametrize("n_inputs,n_gates,seed", [(4, 1, 0), (5, 7, 1), (8, 20, 2), (10, 33, 3), (12, 60, 4)])
def test_compiled_circuit_matches_evaluation_and_the_bounds(n_inputs, n_gates, seed):
    gates = ardt.random_circuit(n_inputs, n_gates, fan_in=2, seed=seed)
    circuit = ardt.compile_circuit(n_inputs, gates)
    expected = np.array([ardt.evaluate_circuit(n_inputs, gates, x) for x in ardt.all_inputs(n_inputs)])
    assert np.array_equal(circuit.run_all(), expected)
    k = max(len(g.wires) for g in gates)
    assert circuit.depth <= ardt.circuit_depth_bound(n_gates, k)
    assert circuit.n_output_leaves <= n_gates * 2 ** k


def test_parity_circuit_is_logarithmic_against_the_exponential_one_shot_tree():
    for n in (4, 8, 16):
        circuit = ardt.compile_circuit(n, ardt.parity_circuit(n))
        assert circuit.run([1] * n)[-1] == n % 2
        assert circuit.depth == math.ceil(math.log2(n - 1)) + 2 and circuit.n_output_leaves == 4 * (n - 1)
        assert circuit.n_output_leaves < ardt.one_shot_parity_leaves(n) or n == 4


def test_one_shot_cart_on_all_parity_strings_needs_every_leaf():
    """S2's oracle: CART fitted to perfection on all 2^n parity strings has 2^n leaves."""
    from sklearn.tree import DecisionTreeClassifier

    inputs = ardt.all_inputs(8)
    tree = DecisionTreeClassifier(random_state=0).fit(inputs, inputs.sum(axis=1) % 2)
    assert tree.get_n_leaves() == 2 ** 8


def test_window_tree_vectorised_walk_agrees_with_the_plain_walk():
    transitions, start = ardt.random_dfa(4, seed=5)
    dfa = ardt.compile_dfa(transitions, start)
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, len(dfa.vocabulary), size=(300, 6))
    tokens = [[ardt.PAD if c < 0 else dfa.vocabulary[c] for c in row] for row in codes]
    lookup = {token: k for k, token in enumerate(dfa.vocabulary)}
    plain = [lookup.get(dfa.tree.next_token(row), -2) for row in tokens]
    assert list(dfa.tree.predict(codes, lookup)) == plain


def test_cart_learns_the_compact_parity_ardt_from_300_traces():
    dfa = ardt.compile_dfa(*ardt.parity_dfa())
    inputs = np.random.default_rng(0).integers(0, 2, size=(300, 10))
    windows, targets = ardt.dfa_trace_windows(dfa, inputs)
    learned = ardt.fit_ardt(windows, targets, len(dfa.vocabulary))
    assert learned.depth == 2 and learned.n_leaves == 4
    every = ardt.all_inputs(10)
    assert np.array_equal(learned.generate_batch(every, 10)[:, -1] - 2, every.sum(axis=1) % 2)


def test_grammar_probabilities_match_sample_frequencies_and_reject_disagreement():
    grammar = Grammar()
    sentences = grammar.sample(60_000, seed=3)
    assert all(grammar.is_grammatical(s) for s in sentences[:3000])
    counts = Counter(tuple(s) for s in sentences)
    for sentence, count in counts.most_common(5):
        p = math.exp(grammar.log_prob(sentence))
        assert abs(count / len(sentences) - p) < 4 * math.sqrt(p / len(sentences))
    assert not grammar.is_grammatical(["the", "dogs", "sleeps", "."])
    assert not grammar.is_grammatical(["the", "dog", "that", "the", "cats", "chases", "sleeps", "."])
    assert not grammar.is_grammatical(["the", "dog", "sleeps"])
    assert len(grammar.vocabulary) == 33


def test_grammar_probabilities_sum_to_one_without_clauses():
    """Brute force: with no relative clauses the language is finite and small enough to enumerate."""
    grammar = Grammar(p_clause=0.0)
    det, adj = ("the", "a", "some"), grammar.ADJECTIVES
    nouns = grammar.NOUNS["sg"] + grammar.NOUNS["pl"]
    phrases = [[d, n] for d in det for n in nouns] + [[d, a, n] for d in det for a in adj for n in nouns]
    verbs_i = grammar.INTRANSITIVE["sg"] + grammar.INTRANSITIVE["pl"]
    verbs_t = grammar.TRANSITIVE["sg"] + grammar.TRANSITIVE["pl"]
    total = sum(math.exp(grammar.log_prob([*s, v, "."])) for s in phrases for v in verbs_i)
    total += sum(math.exp(grammar.log_prob([*s, v, *o, "."])) for s in phrases for v in verbs_t for o in phrases)
    assert total == pytest.approx(1.0, rel=1e-12)


def test_evaluate_lm_matches_a_hand_computed_bigram_score():
    rng = np.random.default_rng(0)
    table = rng.dirichlet(np.ones(5), size=5)

    class Bigram:
        def next_token_probabilities(self, prefixes):
            return table[[p[-1] for p in prefixes]]

    sentences = [list(rng.integers(0, 5, size=int(rng.integers(1, 9)))) for _ in range(200)]
    pairs = [(prev, x) for s in sentences for prev, x in zip([4, *s[:-1]], s, strict=True)]
    scores = tinylm.evaluate_lm(Bigram(), sentences, bos=4, batch=37)
    assert scores["perplexity"] == pytest.approx(math.exp(-np.mean([math.log(table[a, b]) for a, b in pairs])))
    assert scores["accuracy"] == pytest.approx(np.mean([table[a].argmax() == b for a, b in pairs]))


def test_tree_lm_and_sampling_produce_grammatical_text():
    grammar = Grammar()
    stop, vocab = grammar.index["."], len(grammar.vocabulary)
    lm = ardt.TreeLM(vocab, rounds=30, learning_rate=0.15, max_leaf_nodes=15).fit(grammar.encode(grammar.sample(1500)), stop)
    probabilities = lm.next_token_probabilities([[stop], [stop, grammar.index["the"]]])
    assert np.allclose(probabilities.sum(axis=1), 1) and probabilities.min() > 0
    samples = tinylm.sample_sentences(lm, 50, stop, stop, seed=1)
    assert np.mean([grammar.is_grammatical([grammar.vocabulary[i] for i in s]) for s in samples]) > 0.5


def test_transformer_lm_batches_prefixes_like_single_calls():
    torch.manual_seed(0)
    model = tinylm.TinyTransformer(10, width=16, layers=1, heads=2, max_len=16)
    lm = tinylm.TransformerLM(model, 9)
    prefixes = [[1, 2, 3], [4], [5, 6, 7, 8, 9 - 1]]
    together = lm.next_token_probabilities(prefixes)
    alone = np.concatenate([lm.next_token_probabilities([p]) for p in prefixes])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert together.shape == (3, 9)


def test_agreement_items_end_before_the_main_verb():
    grammar = Grammar()
    for prefix, good, bad in grammar.agreement_items(20, seed=1):
        words = [grammar.vocabulary[i] for i in prefix]
        assert "that" in words and not set(good) & set(bad)
        assert grammar.is_grammatical(words + [grammar.vocabulary[good[0]], "."])
        assert not grammar.is_grammatical(words + [grammar.vocabulary[bad[0]], "."])


def test_boolean_expressions_have_their_python_values():
    expressions, values = boolean_expressions(300, 3, seed=0)
    for tokens, value in zip(expressions, values, strict=True):
        text = " ".join(tokens).replace("T", "True").replace("F", "False").replace("&", "and").replace("|", "or")
        assert eval(text.replace("!", " not ")) == value  # noqa: S307 - our own generated tokens


def test_dfa_batch_simulation_matches_the_plain_loop_and_the_tree_writes_every_state():
    """Oracle: simulate_dfa, one input at a time; the tree's whole trace, not only its end."""
    for transitions, start in DFAS.values():
        dfa = ardt.compile_dfa(transitions, start)
        for n in (1, 4, 7):
            inputs = ardt.all_inputs(n, len(dfa.alphabet))
            loop = [[dfa.states.index(q) for q in ardt.simulate_dfa(transitions, start, [dfa.alphabet[s] for s in row])]
                    for row in inputs]
            batch = ardt.simulate_dfa_batch(transitions, start, dfa.states, dfa.alphabet, inputs)
            assert np.array_equal(batch, loop)
            assert np.array_equal(dfa.trace_all(n), loop)
        assert ardt.exhaustive_dfa_check(dfa, range(1, 8))


def _aliased_dfa():
    """States b and c behave identically; a tree may write c for b midway and still end right."""
    transitions = {("a", 0): "a", ("a", 1): "b", ("b", 0): "a", ("b", 1): "b", ("c", 0): "a", ("c", 1): "b"}
    dfa = ardt.compile_dfa(transitions, "a")
    sym, state = (lambda x: ("sym", x)), (lambda q: ("state", q))

    def subtree(q, write_b_as_c):
        leaves = {sym(x): ardt.Leaf(state("c" if write_b_as_c and transitions[q, x] == "b" else transitions[q, x]))
                  for x in (0, 1)}
        return ardt.Node(1, False, leaves, ardt.Leaf(ardt.ERROR, True))

    def step(write_b_as_c):
        return ardt.Node(1, True, {state(q): subtree(q, write_b_as_c) for q in "abc"}, subtree("a", write_b_as_c))

    # position 2 holds a symbol at every step but the last: there the tree writes c for b
    root = ardt.Node(2, False, {sym(0): step(True), sym(1): step(True)}, step(False))
    return dfa, ardt.CompiledDFA(ardt.WindowTree(root), dfa.transitions, "a", dfa.alphabet, dfa.states)


def test_whole_trace_check_rejects_a_tree_that_is_right_only_on_final_states():
    """The check on final states alone (the chapter's old check) passes this faulty tree; the whole-trace
    check must not."""
    honest, faulty = _aliased_dfa()
    lengths = range(2, 9)
    assert all(np.array_equal(faulty.run_all(n), honest.run_all(n)) for n in lengths)
    assert ardt.exhaustive_dfa_check(honest, lengths)
    assert not ardt.exhaustive_dfa_check(faulty, lengths)


def test_increment_tapes_include_all_ones_and_the_tree_adds_one_to_every_number():
    """Oracle: integer arithmetic. The all-ones number carries into the reserved cell."""
    bits, spec = 6, ardt.increment_tm()
    tapes = ardt.increment_tapes(bits)
    assert len(tapes) == 2**bits and ["_", *[1] * bits] in tapes
    tm = ardt.compile_turing_machine(spec["transitions"], "_", spec["halting"], bits + 1)
    for tape in tapes:
        state, _, final = tm.run(tape, "carry", bits, bits + 1)[-1]
        assert state == "done" and ardt.tape_number(final) == ardt.tape_number(tape) + 1
    assert ardt.exhaustive_tm_check(spec, tapes, "carry", None, bits + 1)
    with pytest.raises(ValueError, match="bits"):
        ardt.increment_tapes(0)


def test_parity_sizes_are_computed_from_built_trees_and_match_the_closed_forms():
    sizes = ardt.parity_sizes(range(2, 9))
    assert sizes["lower bound"] == sizes["one-shot CART"] == [2**n for n in range(2, 9)]
    assert sizes["ARDT, circuit"] == [4 * (n - 1) for n in range(2, 9)]
    # the same rule for both ARDTs: leaves a valid run reaches, (|Q|+1)|Sigma| = 6 for the automaton
    assert sizes["ARDT, automaton"] == [ardt.compile_dfa(*ardt.parity_dfa()).n_output_leaves] * 7 == [6] * 7
    with pytest.raises(ValueError, match=">= 2"):
        ardt.parity_sizes([1, 3])


def test_learned_parity_tree_asks_only_about_the_first_and_last_positions():
    result = ardt.learn_from_traces(ardt.compile_dfa(*ardt.parity_dfa()), 10, (300, 900), seed=0)
    assert result["exact"] == 1.0 and result["traces"] == 300
    questions = result["tree"].questions()
    assert {p for p, _ in questions} == {1, 10}
    assert {c for p, c in questions if p == 10} == {3}  # the state q1 (codes: 0, 1, q0, q1)


def test_drawing_labels_every_node_and_leaf_once():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = ardt.increment_tm()
    for tree in (ardt.compile_dfa(*ardt.parity_dfa()).tree,
                 ardt.compile_turing_machine(spec["transitions"], "_", spec["halting"], 4).tree):
        fig, ax = plt.subplots()
        ardt.draw_window_tree(tree, ax)
        texts = [t.get_text() for t in ax.texts]
        internal = sum(t.startswith("pos ") for t in texts)
        assert internal == _count_internal(tree.root)
        assert len([t for t in ax.texts if t.get_va() == "top"]) == tree.n_leaves
        plt.close(fig)


def _count_internal(node):
    if isinstance(node, ardt.Leaf):
        return 0
    return 1 + sum(_count_internal(c) for c in node.children.values()) + _count_internal(node.default)


@pytest.mark.parametrize("seed", range(6))
def test_random_dfa_reaches_every_state_and_has_no_redundant_state(seed):
    """Oracle: breadth-first search written here, and rows compared by hand. The old draw reached only
    2 of 5 states at seeds 1 and 3."""
    transitions, start = ardt.random_dfa(5, seed=seed)
    seen, frontier = {start}, [start]
    while frontier:
        q = frontier.pop()
        for x in (0, 1):
            if transitions[q, x] not in seen:
                seen.add(transitions[q, x])
                frontier.append(transitions[q, x])
    assert seen == set(range(5))
    rows = [(transitions[q, 0], transitions[q, 1]) for q in range(5)]
    assert len(set(rows)) == 5


def test_reachability_and_redundancy_on_hand_made_automata():
    dead = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 0, (2, 0): 0, (2, 1): 2}
    assert ardt.reachable_states(dead, 0) == {0, 1}
    same = {("a", 0): "a", ("a", 1): "b", ("b", 0): "a", ("b", 1): "b"}
    assert ardt.redundant_pairs(same, "a") == [("a", "b")]
    assert ardt.redundant_pairs(*ardt.mod_k_dfa(3)) == []


def test_learned_tree_is_scored_on_whole_traces_not_final_states():
    """With 3 traces CART writes some states wrong midway: the final-state share (the old score) is
    higher than the whole-trace share, computed here from simulate_dfa_batch."""
    dfa = ardt.compile_dfa(*ardt.mod_k_dfa(3))
    result = ardt.learn_from_traces(dfa, 8, (3,), seed=0)
    inputs = ardt.all_inputs(8)
    truth = ardt.simulate_dfa_batch(dfa.transitions, dfa.start, dfa.states, dfa.alphabet, inputs)
    written = result["tree"].generate_batch(inputs, 8) - len(dfa.alphabet)
    whole = np.mean(np.all(written == truth, axis=1))
    final = np.mean(written[:, -1] == truth[:, -1])
    assert result["exact"] == pytest.approx(whole) and whole < final
    assert ardt.whole_trace_exactness(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]])) == 0.5
    with pytest.raises(ValueError, match="shapes"):
        ardt.whole_trace_exactness(np.zeros((2, 3)), np.zeros((2, 2)))


def test_drawn_turing_machine_labels_show_the_blank():
    assert ardt.token_text(("cell", "_")) == "␣" and ardt.token_text(("head", "carry", "_")) == "carry:␣"
    assert ardt.token_text(("cell", 1)) == "1"


def test_one_shot_parity_cart_for_three_bits_has_all_eight_leaves():
    tree = ardt.one_shot_parity_cart(3)
    assert tree.get_n_leaves() == 8 and tree.get_depth() == 3
    inputs = ardt.all_inputs(3)
    assert (tree.predict(inputs) == inputs.sum(axis=1) % 2).all()


# ----------------------------------------------------------------------------------------------
# The flat walk, against the per-input walk (WindowTree.next_token / run) and the direct simulations


def _trees():
    """Compiled trees of every kind with their vocabularies and context lengths, the faulty one included."""
    dfa = ardt.compile_dfa(*ardt.random_dfa(4, seed=5))
    inc = ardt.increment_tm()
    tm = ardt.compile_turing_machine(inc["transitions"], "_", inc["halting"], 5)
    pal = ardt.palindrome_tm()
    pal_tm = ardt.compile_turing_machine(pal["transitions"], "_", pal["halting"], 6)
    circuit = ardt.compile_circuit(5, ardt.random_circuit(5, 11, seed=3))
    _, faulty = _aliased_dfa()
    return [(dfa.tree, dfa.vocabulary, 6), (tm.tree, tm.vocabulary, 7), (pal_tm.tree, pal_tm.vocabulary, 8),
            (circuit.tree, [0, 1], 16), (faulty.tree, faulty.vocabulary, 5)]


@pytest.mark.parametrize("case", range(5))
def test_flat_walk_reaches_the_leaf_of_the_per_window_walk_on_random_windows(case):
    """Oracle: WindowTree.next_token, one window at a time, on windows of random tokens (padding and
    tokens no run produces included), one generated token each; NumPy and torch (CPU) walks alike."""
    tree, vocabulary, L = _trees()[case]
    flat = ardt.flatten_tree(tree, vocabulary, L)
    assert flat.depth == tree.depth and flat.is_leaf.sum() == tree.n_leaves
    rng = np.random.default_rng(case)
    codes = rng.integers(0, len(vocabulary) + 2, size=(500, L))  # V: padding, V + 1: an error token
    names = [*vocabulary, ardt.PAD, ardt.ERROR]
    lookup = {token: k for k, token in enumerate(names)}
    plain = [lookup[tree.next_token([names[c] for c in row])] for row in codes]
    assert list(ardt.flat_generate(flat, codes, 1)[:, 0]) == plain
    assert list(ardt.flat_generate(flat, codes, 1, block=7)[:, 0]) == plain
    assert ardt.flat_generate_torch(flat, codes, 1)[:, 0].tolist() == plain
    assert ardt.flat_generate_torch(flat, codes, 1, block=7)[:, 0].tolist() == plain


@pytest.mark.parametrize("seed", range(4))
def test_flat_walk_writes_what_the_per_input_run_writes_on_every_input(seed):
    """Property over random automata (two and three symbols): on every input of each small length, the
    flat walk (NumPy, and torch on the CPU) writes the chain of thought CompiledDFA.run writes one
    input at a time, which is simulate_dfa's."""
    rng = np.random.default_rng(seed)
    alphabet = (0, 1) if seed % 2 == 0 else (0, 1, 2)
    transitions, start = ardt.random_dfa(int(rng.integers(2, 7)), alphabet, seed=seed)
    dfa = ardt.compile_dfa(transitions, start)
    k = len(alphabet)
    for n in range(1, 7 if k == 2 else 5):
        inputs = ardt.all_inputs(n, k)
        flat = ardt.flatten_tree(dfa.tree, dfa.vocabulary, n)
        numpy_walk = ardt.flat_generate(flat, inputs, n).astype(np.int64) - k
        torch_walk = ardt.flat_generate_torch(flat, inputs, n).numpy().astype(np.int64) - k
        assert np.array_equal(numpy_walk, torch_walk)
        for row, written in zip(inputs.tolist(), numpy_walk.tolist(), strict=True):
            word = [alphabet[s] for s in row]
            assert [dfa.states[q] for q in written] == dfa.run(word) == ardt.simulate_dfa(transitions, start, word)
        assert ardt.exhaustive_dfa_check(dfa, [n], chunk=5)


def test_input_block_is_a_slice_of_all_inputs():
    for length, k in [(1, 2), (5, 2), (4, 3), (3, 4)]:
        every = ardt.all_inputs(length, k)
        assert np.array_equal(ardt.input_block(length, k, 0, k**length).T, every)
        assert np.array_equal(ardt.input_block(length, k, 1, 2).T, every[1:2])
        if len(every) >= 7:
            assert np.array_equal(ardt.input_block(length, k, 3, 7).T, every[3:7])


@pytest.mark.parametrize("n_states", [12, 128])
def test_random_accessible_dfa_reaches_every_state_without_redundant_ones(n_states):
    transitions, start = ardt.random_accessible_dfa(n_states, seed=1)
    assert len(ardt.reachable_states(transitions, start)) == n_states
    assert not ardt.redundant_pairs(transitions, start)
    assert set(transitions) == {(q, x) for q in range(n_states) for x in (0, 1)}
    assert ardt.random_accessible_dfa(n_states, seed=1) == (transitions, start)
    dfa = ardt.compile_dfa(transitions, start)
    assert dfa.n_leaves == ardt.leaf_bound_dfa(n_states, 2)
    assert ardt.exhaustive_dfa_check(dfa, range(1, 9))
    with pytest.raises(ValueError, match="cannot reach"):
        ardt.random_accessible_dfa(2, alphabet=(), seed=0)


def test_batch_turing_machine_simulation_matches_the_plain_one():
    """Oracle: simulate_tm, one tape at a time."""
    spec = ardt.unary_adder_tm()
    tm = ardt.compile_turing_machine(spec["transitions"], "_", spec["halting"], 9)
    tapes = [[1] * a + [0] + [1] * b + ["_"] * (8 - a - b) for a in range(4) for b in range(4)]
    codes = np.array([[tm.tape_symbols.index(x) for x in tape] for tape in tapes])
    batch = list(ardt.tm_configurations(tm, spec["transitions"], spec["halting"], codes, tm.states.index("scan"), 0,
                                        12))
    for row, tape in enumerate(tapes):
        plain = ardt.simulate_tm(spec["transitions"], spec["halting"], tape, "scan", 0, 12)
        assert [(tm.states[q[row]], int(h[row]), tuple(tm.tape_symbols[x] for x in t[row])) for q, h, t in batch] \
            == plain


def test_turing_machine_batch_check_agrees_with_the_per_tape_run_and_rejects_a_wrong_leaf():
    """The flat walk's blocks are the configurations CompiledTM.run decodes one tape at a time; a
    tree with one leaf changed (a head moving left now leaves the cell plain) fails the check."""
    spec = ardt.increment_tm()
    tapes = ardt.increment_tapes(5)
    tm = ardt.compile_turing_machine(spec["transitions"], "_", spec["halting"], 6)
    codes = np.array([[tm.tape_symbols.index(x) for x in tape] for tape in tapes])
    exact, finals = ardt.check_tm_batch(tm, spec["transitions"], spec["halting"], codes, tm.states.index("carry"),
                                        5, 6)
    assert exact
    assert [tm.states[q] for q in finals] == [tm.run(tape, "carry", 5, 6)[-1][0] for tape in tapes]
    assert ardt.exhaustive_tm_check(spec, tapes, "carry", None, 6)
    root = tm.tree.root
    plain = root.children[ardt._cell(1)]
    from_right = dict(plain.default.children)
    head = next(t for t, leaf in from_right.items() if leaf.token[0] == "head")
    from_right[head] = ardt.Leaf(ardt._cell(1))
    broken = ardt.Node(1, False, plain.children, ardt.Node(3, False, from_right, plain.default.default))
    children = {**root.children, ardt._cell(1): broken}
    faulty = ardt.CompiledTM(ardt.WindowTree(ardt.Node(2, False, children, root.default), tm.tree.context_length),
                             tm.tape_symbols, tm.states, tm.tape_length)
    exact, _ = ardt.check_tm_batch(faulty, spec["transitions"], spec["halting"], codes, tm.states.index("carry"),
                                   5, 6)
    assert not exact


def test_palindrome_machine_decides_palindromes_through_its_tree():
    """Oracles: the string equals its reverse; simulate_tm; S3's leaf count for 8 states and 3 symbols."""
    spec = ardt.palindrome_tm()
    for m in range(0, 7):
        result = ardt.palindrome_check(m)
        assert result["exact"] and result["verdicts"] and result["strings"] == 2**m
        assert result["depth"] == 3 and result["leaves"] == result["thm leaves"] == ardt.tm_leaf_count(8, 3)
        for bits in ardt.all_inputs(m).tolist():
            final = ardt.simulate_tm(spec["transitions"], spec["halting"], ["_", *bits, "_"], "start", 1,
                                     result["steps"])[-1][0]
            assert final == ("accept" if bits == bits[::-1] else "reject")


def test_circuit_batch_evaluation_and_flat_check_match_the_plain_evaluation():
    """Oracle: evaluate_circuit, one input at a time; a circuit tree with one table entry flipped fails."""
    for n, N, seed in [(4, 9, 0), (6, 40, 1), (3, 1, 2)]:
        gates = ardt.random_circuit(n, N, seed=seed)
        inputs = ardt.all_inputs(n)
        plain = [ardt.evaluate_circuit(n, gates, x) for x in inputs.tolist()]
        assert np.array_equal(ardt.evaluate_circuit_batch(n, gates, inputs.T).T, plain)
        circuit = ardt.compile_circuit(n, gates)
        assert ardt.exhaustive_circuit_check(circuit) and ardt.exhaustive_circuit_check(circuit, chunk=3)
        flat = ardt.flatten_tree(circuit.tree, [0, 1], n + N)
        assert np.array_equal(ardt.flat_generate_torch(flat, inputs, N).numpy(), plain)
        assert np.array_equal(ardt.flat_generate(flat, inputs, N), plain)
    gates = ardt.random_circuit(5, 12, seed=4)
    flipped = [*gates[:-1], ardt.Gate(gates[-1].wires, tuple(1 - v for v in gates[-1].table))]
    faulty = ardt.compile_circuit(5, flipped)
    faulty.gates = tuple(gates)  # the check must compare the tree with the true circuit
    assert not ardt.exhaustive_circuit_check(faulty)


def test_the_checks_pass_and_fail_alike_through_the_torch_walk(monkeypatch):
    """The chapter's checks run the torch walk where the device is an accelerator; here the NumPy walk
    is replaced by the torch one on the CPU, and every check must give the same answers."""
    import functools

    def torch_generate(flat, prompts, steps, *, by_columns=False, block=2**14):
        return ardt.flat_generate_torch(flat, prompts, steps, "cpu", by_columns=by_columns, block=block).numpy()

    monkeypatch.setattr(ardt, "flat_generate", functools.wraps(ardt.flat_generate)(torch_generate))
    honest, faulty = _aliased_dfa()
    assert ardt.exhaustive_dfa_check(honest, range(2, 8)) and not ardt.exhaustive_dfa_check(faulty, range(2, 8))
    assert ardt.exhaustive_dfa_check(ardt.compile_dfa(*ardt.random_accessible_dfa(40, seed=2)), range(1, 8))
    result = ardt.palindrome_check(5)
    assert result["exact"] and result["verdicts"]
    assert ardt.exhaustive_tm_check(ardt.increment_tm(), ardt.increment_tapes(5), "carry", None, 6)
    assert ardt.exhaustive_circuit_check(ardt.compile_circuit(6, ardt.random_circuit(6, 30, seed=5)))
