r"""Auto-regressive decision trees (chapter ``decision-tree-language-models``, after Gan, Galanti, Poggio
and Malach, *On the Power of Decision Trees in Auto-Regressive Language Modeling*, NeurIPS 2024).

A :class:`WindowTree` reads the window :math:`w_L(s)`, the last :math:`L` tokens of a sequence left-padded
with :data:`PAD`; each internal node queries one window position (counted from the window's start or end)
and branches on the token there, with a default branch; each leaf emits a token. Generation appends
:math:`T(w_L(s))` and repeats (a chain of thought). The compilers below build such trees from a DFA
(token depth 2), a one-tape Turing machine on a bounded tape (depth 3, tableau construction) and a
bounded fan-in circuit (depth :math:`\lceil\log_2N\rceil+k`); each comes with a direct simulator, and
:func:`fit_ardt` learns a tree from windows of machine traces with scikit-learn's CART.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PAD = ("pad",)
"""The padding token: never a symbol, state or head token."""
ERROR = ("error",)
"""What an error leaf emits: a window no valid run produces."""


# ----------------------------------------------------------------------------------------------
# Window trees


@dataclass(frozen=True)
class Leaf:
    token: Hashable
    error: bool = False


@dataclass(frozen=True)
class Node:
    """Query window position ``position`` (1-based, from the end when ``from_end``) and branch on its token."""

    position: int
    from_end: bool
    children: Mapping[Hashable, Any]
    default: Any


@dataclass
class WindowTree:
    """A decision tree over windows of the last ``context_length`` tokens (``None``: the prompt's length)."""

    root: Any
    context_length: int | None = None
    _codes: dict = field(default_factory=dict, repr=False)

    @property
    def depth(self) -> int:
        """Token depth: the largest number of window queries on a root-to-leaf path."""
        def depth(node):
            if isinstance(node, Leaf):
                return 0
            return 1 + max([depth(child) for child in node.children.values()] + [depth(node.default)])
        return depth(self.root)

    def leaves(self) -> list[Leaf]:
        found, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Leaf):
                found.append(node)
            else:
                stack.extend(node.children.values())
                stack.append(node.default)
        return found

    @property
    def n_leaves(self) -> int:
        return len(self.leaves())

    def window(self, sequence: Sequence[Hashable], context_length: int) -> list[Hashable]:
        """:math:`w_L(s)`: the last ``context_length`` tokens, left-padded with :data:`PAD`."""
        tail = list(sequence[-context_length:]) if context_length else []
        return [PAD] * (context_length - len(tail)) + tail

    def next_token(self, window: Sequence[Hashable]) -> Hashable:
        node = self.root
        while isinstance(node, Node):
            token = window[-node.position] if node.from_end else window[node.position - 1]
            node = node.children.get(token, node.default)
        return node.token

    def generate(self, prompt: Sequence[Hashable], steps: int, context_length: int | None = None) -> list[Hashable]:
        """:math:`T^{(k)}(x)` without the prompt: the ``steps`` tokens the tree appends, one at a time."""
        length = context_length or self.context_length or len(prompt)
        sequence = list(prompt)
        for _ in range(steps):
            sequence.append(self.next_token(self.window(sequence, length)))
        return sequence[len(prompt):]

    def generate_batch(self, prompts: np.ndarray, steps: int, vocabulary: Sequence[Hashable],
                       context_length: int | None = None) -> np.ndarray:
        """The same, vectorised over the rows of ``prompts`` (token codes: indices into ``vocabulary``;
        :data:`PAD` and error tokens get negative codes): one vectorised tree walk per step."""
        codes = {token: k for k, token in enumerate(vocabulary)}
        codes[PAD], codes[ERROR] = -1, -2
        length = context_length or self.context_length or prompts.shape[1]
        prompts = np.asarray(prompts, dtype=np.int64)
        rows, width = prompts.shape
        # one preallocated buffer: `length` pad columns, the prompt, then the generated tokens
        small = max(len(codes), 2) < 2**15  # int16 codes halve the memory traffic of the walk
        buffer = np.full((rows, length + width + steps), -1, dtype=np.int16 if small else np.int64)
        buffer[:, length:length + width] = prompts
        for step in range(steps):
            end = length + width + step
            buffer[:, end] = self.predict(buffer[:, end - length:end], codes)
        return buffer[:, length + width:].astype(np.int64)

    def predict(self, windows: np.ndarray, codes: Mapping[Hashable, int]) -> np.ndarray:
        """Leaf token codes for a batch of windows of token codes (rows), by masking subtree by subtree."""
        result = np.full(windows.shape[0], -2, dtype=np.int64)

        def walk(node, rows):  # rows: an index array, or None for every row (no gather needed)
            if rows is not None and rows.size == 0:
                return
            if isinstance(node, Leaf):
                result[slice(None) if rows is None else rows] = codes.get(node.token, -2)
                return
            at = -node.position if node.from_end else node.position - 1
            column = windows[:, at] if rows is None else windows[rows, at]
            taken = np.zeros(column.size, dtype=bool)
            for token, child in node.children.items():
                if token in codes:
                    match = column == codes[token]
                    taken |= match
                    walk(child, np.flatnonzero(match) if rows is None else rows[match])
            walk(node.default, np.flatnonzero(~taken) if rows is None else rows[~taken])

        walk(self.root, None)
        return result


# ----------------------------------------------------------------------------------------------
# The flat walk: a window tree as arrays, walked level by level over many windows at once


@dataclass
class FlatTree:
    r"""A window tree with its window positions resolved for one context length :math:`L`, as arrays.

    Nodes are numbered breadth first (the root is 0). Tokens are codes :math:`0..V-1` (indices into the
    vocabulary), :math:`V` for :data:`PAD` and :math:`V+1` for :data:`ERROR` (and any token outside the
    vocabulary). For node :math:`u`: ``column[u]`` is the window column it reads, counted from 0 at the
    window's start (a node reading position :math:`j` from the end reads column :math:`L-j`);
    ``child[u, c]`` is the node that token :math:`c` leads to (the child for :math:`c`, else the default);
    ``value[u]`` is the code a leaf emits. A leaf's row of ``child`` points back to the leaf itself, so
    that after ``depth`` rounds of :math:`u\leftarrow\text{child}[u, w_{\text{column}[u]}]` every window
    rests at the leaf the per-window walk :meth:`WindowTree.next_token` reaches: the arrays hold every
    query, branch and leaf of the tree and nothing else. ``level_columns[d]`` lists the columns the
    internal nodes at depth :math:`d` read."""

    column: np.ndarray
    child: np.ndarray
    value: np.ndarray
    is_leaf: np.ndarray
    depth: int
    level_columns: list
    context_length: int
    vocabulary_size: int

    @property
    def width(self) -> int:
        """Codes per row of ``child``: :math:`V+2`."""
        return self.vocabulary_size + 2

    @property
    def pad(self) -> int:
        return self.vocabulary_size

    @property
    def error(self) -> int:
        return self.vocabulary_size + 1


def flatten_tree(tree: WindowTree, vocabulary: Sequence[Hashable], context_length: int) -> FlatTree:
    """The arrays of :class:`FlatTree` for ``tree`` read with windows of ``context_length`` tokens."""
    V, L = len(vocabulary), int(context_length)
    codes = {token: k for k, token in enumerate(vocabulary)}
    codes[PAD], codes[ERROR] = V, V + 1
    order, depths, index = [tree.root], [0], {id(tree.root): 0}
    k = 0
    while k < len(order):  # breadth first; a node object shared by two parents is numbered once
        node = order[k]
        if isinstance(node, Node):
            for child in [*node.children.values(), node.default]:
                if id(child) not in index:
                    index[id(child)] = len(order)
                    order.append(child)
                    depths.append(depths[k] + 1)
        k += 1
    n = len(order)
    column = np.zeros(n, dtype=np.int64)
    value = np.full(n, V + 1, dtype=np.int64)
    is_leaf = np.zeros(n, dtype=bool)
    child = np.empty((n, V + 2), dtype=np.int64)
    levels: dict[int, set] = {}
    for u, node in enumerate(order):
        if isinstance(node, Leaf):
            is_leaf[u] = True
            value[u] = codes.get(node.token, V + 1)
            child[u] = u
            continue
        if not 1 <= node.position <= L:
            raise ValueError(f"a node reads window position {node.position}, outside a window of {L} tokens")
        column[u] = L - node.position if node.from_end else node.position - 1
        levels.setdefault(depths[u], set()).add(int(column[u]))
        child[u] = index[id(node.default)]
        for token, target in node.children.items():
            if token in codes:  # a token outside the vocabulary never occurs in a window
                child[u, codes[token]] = index[id(target)]
    depth = max(levels) + 1 if levels else 0
    return FlatTree(column, child, value, is_leaf, depth,
                    [np.array(sorted(levels.get(d, ()))) for d in range(depth)], L, V)


def _code_dtype(flat: FlatTree):
    return np.uint8 if flat.width <= 256 else np.int16 if flat.width < 2**15 else np.int64


def flat_generate(flat: FlatTree, prompts: np.ndarray, steps: int, *, by_columns: bool = False,
                  block: int = 2**14) -> np.ndarray:
    r"""The tokens an ARDT appends to each row of ``prompts`` (codes of :class:`FlatTree`), ``steps``
    of them, with NumPy. The sequences sit column-major (one token position per array row, so that
    a window column is a contiguous array row) behind :math:`L` padding columns, ``block`` sequences
    at a time (so that the walk's arrays stay in the processor's cache), and each step walks every
    window from the root, level by level, with gathers: at a level whose internal nodes all read
    one column (every level of the automaton and Turing-machine trees) the token is that column,
    else each window's token is gathered from its own node's column; then
    :math:`u\leftarrow\text{child}[u,\text{token}]`; after the last level every window rests at
    a leaf and the step appends that leaf's code. Nothing but the tree's arrays decides a token (no
    table of the machine it was compiled from is consulted, and no two steps share work), so what
    it writes is what the tree writes; a unit test holds it to :meth:`WindowTree.next_token` on
    random windows. Returns the ``(rows, steps)`` codes; with ``by_columns`` the prompts come as
    ``(width, rows)`` and the codes go back as ``(steps, rows)``."""
    prompts = np.asarray(prompts)
    columns = prompts if by_columns else prompts.T
    width, rows = columns.shape
    L, W = flat.context_length, flat.width
    dtype = _code_dtype(flat)
    out = np.empty((steps, rows), dtype=dtype)
    # a node u is held as its offset u*W, so that the offset of its child for token c is
    # child_at[u*W + c] and one addition (no multiplication) forms each gather's index
    child_at = (flat.child * W).ravel().astype(np.intp)
    value_at = np.repeat(flat.value.astype(dtype), W)
    column_at = np.repeat(flat.column.astype(np.intp), W)
    root, first = child_at[:W], int(flat.column[0])
    single = [int(c[0]) if len(c) == 1 else None for c in flat.level_columns]
    for begin in range(0, rows, block):
        size = min(block, rows - begin)
        buffer = np.full((L + width + steps, size), flat.pad, dtype=dtype)
        buffer[L:L + width] = columns[:, begin:begin + size]
        flat_buffer = buffer.reshape(-1)
        offsets = np.arange(size, dtype=np.intp)
        for step in range(steps):
            base = width + step  # window column c sits at buffer row base + c
            if flat.depth == 0:  # the tree is one leaf
                buffer[L + width + step] = flat.value[0]
                continue
            node = root.take(buffer[base + first].astype(np.intp))  # every window starts at the root
            for level in range(1, flat.depth):
                if single[level] is not None:
                    token = buffer[base + single[level]]
                else:
                    at = column_at.take(node)
                    low, high = int(at.min()), int(at.max())
                    if low == high:  # every window reads the same column here
                        token = buffer[base + low]
                    else:
                        token = flat_buffer.take((at + base) * size + offsets)
                node = child_at.take(node + token)
            buffer[L + width + step] = value_at.take(node)
        out[:, begin:begin + size] = buffer[L + width:]
    return out if by_columns else np.ascontiguousarray(out.T)


def flat_generate_torch(flat: FlatTree, prompts, steps: int, device=None, *, by_columns: bool = False,
                        block: int | None = None):
    r"""The same walk as :func:`flat_generate` with torch on ``device`` (CUDA where there is one),
    every gather a ``torch.take``; ``prompts`` a NumPy array or a tensor of codes, ``block`` rows at a
    time (default: :math:`2^{14}` on a CPU, :math:`2^{22}` on an accelerator). Returns the
    ``(rows, steps)`` codes (``(steps, rows)`` with ``by_columns``) as a tensor on ``device``, of the
    smallest integer type that holds them (as :func:`flat_generate`)."""
    import torch

    device = torch.device(device or "cpu")
    prompts = prompts if torch.is_tensor(prompts) else torch.from_numpy(np.ascontiguousarray(prompts))
    columns = (prompts if by_columns else prompts.T).to(device)
    width, rows = columns.shape
    L, W = flat.context_length, flat.width
    dtype = torch.uint8 if W <= 256 else torch.int16 if W < 2**15 else torch.int64
    block = block or (2**14 if device.type == "cpu" else 2**22)
    out = torch.empty((steps, rows), dtype=dtype, device=device)
    child_at = torch.as_tensor((flat.child * W).ravel(), device=device)
    value_at = torch.as_tensor(np.repeat(flat.value, W), device=device).to(dtype)
    column_at = torch.as_tensor(np.repeat(flat.column, W), device=device)
    root, first = child_at[:W], int(flat.column[0])
    single = [int(c[0]) if len(c) == 1 else None for c in flat.level_columns]
    for begin in range(0, rows, block):
        size = min(block, rows - begin)
        buffer = torch.full((L + width + steps, size), flat.pad, dtype=dtype, device=device)
        buffer[L:L + width] = columns[:, begin:begin + size].to(dtype)
        flat_buffer = buffer.view(-1)
        offsets = torch.arange(size, device=device)
        for step in range(steps):
            base = width + step
            if flat.depth == 0:
                buffer[L + width + step] = int(flat.value[0])
                continue
            node = root[buffer[base + first].long()]
            for level in range(1, flat.depth):
                if single[level] is not None:
                    token = buffer[base + single[level]]
                else:
                    token = flat_buffer.take((column_at.take(node) + base) * size + offsets)
                node = child_at.take(node + token.long())
            buffer[L + width + step] = value_at.take(node)
        out[:, begin:begin + size] = buffer[L + width:]
    return out if by_columns else out.T


def walk(flat: FlatTree, prompts: np.ndarray, steps: int, device=None, *, by_columns: bool = False) -> np.ndarray:
    """:func:`flat_generate` (NumPy) when ``device`` is None or a CPU, else
    :func:`flat_generate_torch` on ``device``; NumPy codes back either way."""
    if device is None or str(device) == "cpu":
        return flat_generate(flat, prompts, steps, by_columns=by_columns)
    return flat_generate_torch(flat, prompts, steps, device, by_columns=by_columns).cpu().numpy()


def input_block(length: int, alphabet_size: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start..stop-1`` of :func:`all_inputs`, transposed: ``(length, stop - start)`` symbol
    indices (uint8), column :math:`r` the base-``alphabet_size`` digits of :math:`r`, most significant
    first; built without the other rows."""
    if alphabet_size > 256:
        raise ValueError(f"alphabet_size: got {alphabet_size}, at most 256 supported")
    numbers = np.arange(start, stop, dtype=np.int64)
    block = np.empty((length, numbers.size), dtype=np.uint8)
    bits = alphabet_size.bit_length() - 1
    for j in range(length):
        if alphabet_size == 1 << bits:  # a power of two: shift and mask
            block[j] = (numbers >> (bits * (length - 1 - j))) & (alphabet_size - 1)
        else:
            block[j] = (numbers // alphabet_size ** (length - 1 - j)) % alphabet_size
    return block


# ----------------------------------------------------------------------------------------------
# Automata


def _symbol(x):
    return ("sym", x)


def _state(q):
    return ("state", q)


class _Compiled:
    """What every compiled machine shares: its window tree's token depth and leaf count."""

    tree: WindowTree

    @property
    def depth(self) -> int:
        return self.tree.depth

    @property
    def n_leaves(self) -> int:
        return self.tree.n_leaves

    @property
    def n_output_leaves(self) -> int:
        """Leaves that are not error leaves: those a valid run can reach."""
        return sum(not leaf.error for leaf in self.tree.leaves())


@dataclass
class CompiledDFA(_Compiled):
    r"""S1: a DFA compiled to a window tree of token depth 2 with :math:`(|Q|+1)(|\Sigma|+1)` leaves."""

    tree: WindowTree
    transitions: dict
    start: Hashable
    alphabet: tuple
    states: tuple

    @property
    def vocabulary(self) -> list:
        return [_symbol(x) for x in self.alphabet] + [_state(q) for q in self.states]

    def _check(self, symbols) -> list:
        symbols = list(symbols)
        foreign = sorted({repr(x) for x in symbols if x not in self.alphabet})
        if foreign:
            raise ValueError(f"symbols outside the alphabet {list(self.alphabet)}: {', '.join(foreign)}")
        return symbols

    def run(self, symbols: Iterable[Hashable]) -> list:
        """The chain of thought :math:`q_1..q_n` the tree writes after the prompt :math:`x` (with :math:`L=n`)."""
        symbols = self._check(symbols)
        generated = self.tree.generate([_symbol(x) for x in symbols], len(symbols), context_length=len(symbols))
        return [token[1] for token in generated]

    def run_all(self, length: int) -> np.ndarray:
        """Final states (as indices into ``states``) on every input of ``length``, vectorised."""
        return self.trace_all(length)[:, -1]

    def trace_all(self, length: int) -> np.ndarray:
        """The whole chain of thought :math:`q_1..q_n` (state indices into ``states``, one row per
        input of ``length``, inputs in :func:`all_inputs` order), vectorised: what S1 claims."""
        out = self.tree.generate_batch(all_inputs(length, len(self.alphabet)), length, self.vocabulary,
                                       context_length=length)
        return out - len(self.alphabet)


def _check_dfa(transitions: Mapping, start: Hashable) -> tuple[tuple, tuple]:
    states = tuple(dict.fromkeys([q for q, _ in transitions] + list(transitions.values())))
    alphabet = tuple(dict.fromkeys(x for _, x in transitions))
    if start not in states:
        raise ValueError(f"unknown start state {start!r}; states: {list(states)}")
    missing = [(q, x) for q in states for x in alphabet if (q, x) not in transitions]
    if missing:
        raise ValueError(f"transition table is not total: no transition for {missing[:10]}"
                         + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
    return states, alphabet


def compile_dfa(transitions: Mapping[tuple[Hashable, Hashable], Hashable], start: Hashable) -> CompiledDFA:
    r"""S1: the depth-2 window tree of a DFA. The root reads the **last** window position: a state
    :math:`q` selects :math:`q`'s subtree, anything else (an input symbol, only at the first step) selects the
    start state's. The second node reads the **first** position, :math:`x_t`, and the leaf emits
    :math:`\delta(q,x_t)`; unexpected tokens fall into error leaves."""
    states, alphabet = _check_dfa(transitions, start)

    def subtree(q):
        return Node(1, False, {_symbol(x): Leaf(_state(transitions[q, x])) for x in alphabet}, Leaf(ERROR, True))

    root = Node(1, True, {_state(q): subtree(q) for q in states}, subtree(start))
    return CompiledDFA(WindowTree(root, None), dict(transitions), start, alphabet, states)


def simulate_dfa(transitions: Mapping, start: Hashable, symbols: Iterable[Hashable]) -> list:
    """The direct simulation: :math:`q_t=\\delta(q_{t-1},x_t)`."""
    states, state = [], start
    for x in symbols:
        state = transitions[state, x]
        states.append(state)
    return states


def simulate_dfa_batch(transitions: Mapping, start: Hashable, states: Sequence[Hashable],
                       alphabet: Sequence[Hashable], inputs: np.ndarray, by_columns: bool = False) -> np.ndarray:
    r"""The direct simulation on many inputs at once, by table look-up and without any tree:
    :math:`q_t=\delta(q_{t-1},x_t)` with states as indices into ``states`` and the rows of
    ``inputs`` as indices into ``alphabet``. Returns the ``(rows, n)`` array of :math:`q_1..q_n`
    (with ``by_columns``: inputs as ``(n, rows)``, states back as ``(n, rows)``)."""
    k = len(alphabet)
    table = np.array([[states.index(transitions[q, x]) for x in alphabet] for q in states], dtype=np.intp).ravel()
    columns = np.asarray(inputs) if by_columns else np.asarray(inputs).T
    trace = np.empty(columns.shape, dtype=np.int64)
    state = np.full(columns.shape[1], states.index(start), dtype=np.intp)
    for t in range(columns.shape[0]):
        state = table.take(state * k + columns[t])
        trace[t] = state
    return trace if by_columns else trace.T


def exhaustive_dfa_check(dfa: CompiledDFA, lengths: Iterable[int], device=None, chunk: int = 2**18) -> bool:
    """Whether the compiled tree writes the automaton's whole chain of thought :math:`q_1..q_n`,
    not only its final state, on every input of every length in ``lengths`` (S1 with :math:`L=n`).
    The tree runs as an ARDT through the flat walk (:func:`walk`, on ``device``) on blocks of
    ``chunk`` inputs; the truth is :func:`simulate_dfa_batch`, a table look-up without any tree."""
    k = len(dfa.alphabet)
    for n in lengths:
        flat = flatten_tree(dfa.tree, dfa.vocabulary, n)
        for start in range(0, k ** n, chunk):
            inputs = input_block(n, k, start, min(k ** n, start + chunk))
            expected = simulate_dfa_batch(dfa.transitions, dfa.start, dfa.states, dfa.alphabet, inputs,
                                          by_columns=True)
            if not np.array_equal(walk(flat, inputs, n, device, by_columns=True), expected + k):
                return False
    return True


def random_accessible_dfa(n_states: int, alphabet: Sequence[Hashable] = (0, 1), seed: int = 0,
                          max_draws: int = 1_000) -> tuple[dict, int]:
    r"""A random automaton on states :math:`0..n-1` (start 0) in which every state is reachable by
    construction: state :math:`i\ge1` is the target of a transition :math:`\delta(p,x)` drawn uniformly
    among the still free ones of states :math:`p<i` (a random spanning tree), and every other
    transition is uniform; redrawn until no two states are redundant (:func:`redundant_pairs`).
    :func:`random_dfa` draws every transition uniformly, which with two symbols almost never reaches
    all of 100 states (a state has no incoming transition with probability about :math:`e^{-2}`)."""
    if n_states < 1:
        raise ValueError(f"n_states: got {n_states}, expected a positive integer")
    rng = np.random.default_rng(seed)
    for _ in range(max_draws):
        transitions: dict = {}
        free = [(0, x) for x in alphabet]
        for i in range(1, n_states):
            if not free:
                raise ValueError(f"{len(alphabet)} symbols cannot reach {n_states} states")
            transitions[free.pop(int(rng.integers(len(free))))] = i
            free.extend((i, x) for x in alphabet)
        for key in free:
            transitions[key] = int(rng.integers(n_states))
        transitions = {(q, x): transitions[q, x] for q in range(n_states) for x in alphabet}
        if not redundant_pairs(transitions, 0):
            return transitions, 0
    raise ValueError(f"no {n_states}-state automaton without redundant states in {max_draws} draws")


def parity_dfa() -> tuple[dict, int]:
    return {(q, x): q ^ x for q in (0, 1) for x in (0, 1)}, 0


def mod_k_dfa(k: int) -> tuple[dict, int]:
    """Counts ones modulo ``k``."""
    return {(q, x): (q + x) % k for q in range(k) for x in (0, 1)}, 0


def reachable_states(transitions: Mapping, start: Hashable) -> set:
    """The states some input string leads to from ``start`` (breadth-first search)."""
    seen, frontier = {start}, [start]
    while frontier:
        q = frontier.pop()
        for (p, _), r in transitions.items():
            if p == q and r not in seen:
                seen.add(r)
                frontier.append(r)
    return seen


def redundant_pairs(transitions: Mapping, start: Hashable) -> list[tuple]:
    r"""Pairs of reachable states :math:`p\ne q` with :math:`\delta(p,x)=\delta(q,x)` for every symbol
    :math:`x`: from them every continuation writes the same states, so one of the two could be merged
    into the other and the automaton is not minimal (for a chain of thought, whose output is the
    state itself, this is the only way two distinct states can be equivalent)."""
    alphabet = list(dict.fromkeys(x for _, x in transitions))
    states = sorted(reachable_states(transitions, start), key=repr)
    rows = {q: tuple(transitions[q, x] for x in alphabet) for q in states}
    return [(p, q) for i, p in enumerate(states) for q in states[i + 1:] if rows[p] == rows[q]]


def random_dfa(n_states: int, alphabet: Sequence[Hashable] = (0, 1), seed: int = 0,
               max_draws: int = 10_000) -> tuple[dict, int]:
    r"""A random automaton on states :math:`0..n-1` (start 0) with :math:`\delta(q,x)` uniform, redrawn
    from the same generator until every state is reachable from 0 and no two states are redundant
    (:func:`redundant_pairs` is empty), so that it really has ``n_states`` states."""
    rng = np.random.default_rng(seed)
    for _ in range(max_draws):
        transitions = {(q, x): int(rng.integers(n_states)) for q in range(n_states) for x in alphabet}
        if (len(reachable_states(transitions, 0)) == n_states
                and not redundant_pairs(transitions, 0)):
            return transitions, 0
    raise ValueError(f"no minimal {n_states}-state automaton in {max_draws} draws")


# ----------------------------------------------------------------------------------------------
# Turing machines

SEPARATOR = ("#",)


def _cell(a):
    return ("cell", a)


def _head(q, a):
    return ("head", q, a)


@dataclass
class CompiledTM(_Compiled):
    r"""S3: a one-tape machine on :math:`M` cells compiled to a window tree of token depth 3 with
    :math:`|\Gamma|(2|Q||\Gamma|+1)+|Q||\Gamma|+2` leaves, :math:`L=M+2`; configurations are blocks
    :math:`\#\,c_1\cdots c_M` with one head token :math:`(q,a)`, and one machine step is :math:`M+1` tokens."""

    tree: WindowTree
    tape_symbols: tuple
    states: tuple
    tape_length: int

    @property
    def vocabulary(self) -> list:
        r"""Token codes of the flat walk: ``#`` is 0, plain cell :math:`a` is :math:`1+a`, head token
        :math:`(q,a)` is :math:`1+|\Gamma|+q|\Gamma|+a` (states and symbols as indices)."""
        return ([SEPARATOR] + [_cell(a) for a in self.tape_symbols]
                + [_head(q, a) for q in self.states for a in self.tape_symbols])

    def block_codes(self, tapes: np.ndarray, states: np.ndarray, heads: np.ndarray) -> np.ndarray:
        """Configuration blocks as codes of :attr:`vocabulary`, one column per row of ``tapes``
        (tape-symbol indices, ``(rows, M)``), ``states`` and ``heads`` (indices): ``(M + 1, rows)``."""
        G, rows = len(self.tape_symbols), tapes.shape[0]
        block = np.empty((self.tape_length + 1, rows), dtype=np.int64)
        block[0] = 0
        block[1:] = 1 + tapes.T
        every = np.arange(rows)
        block[1 + heads, every] = 1 + G + states * G + tapes[every, heads]
        return block

    def encode(self, tape: Sequence[Hashable], state: Hashable, head: int) -> list:
        if len(tape) != self.tape_length:
            raise ValueError(f"tape: got {len(tape)} cells, expected {self.tape_length}")
        foreign = sorted({repr(a) for a in tape if a not in self.tape_symbols})
        if foreign:
            raise ValueError(f"tape symbols outside {list(self.tape_symbols)}: {', '.join(foreign)}")
        if state not in self.states:
            raise ValueError(f"unknown state {state!r}; states: {list(self.states)}")
        if not 0 <= head < self.tape_length:
            raise ValueError(f"head: got {head}, expected 0..{self.tape_length - 1}")
        return [SEPARATOR] + [_head(state, a) if j == head else _cell(a) for j, a in enumerate(tape)]

    @staticmethod
    def decode(block: Sequence) -> tuple[Hashable, int, tuple]:
        heads = [j for j, token in enumerate(block[1:]) if token[0] == "head"]
        if block[0] != SEPARATOR or len(heads) != 1:
            raise ValueError("not a configuration block: expected '#' then cells with exactly one head")
        j = heads[0]
        return block[1 + j][1], j, tuple(token[-1] for token in block[1:])

    def run(self, tape: Sequence[Hashable], state: Hashable, head: int, steps: int) -> list[tuple]:
        """Configurations ``(state, head, tape)`` at times 1..``steps`` read off the tree's chain of thought."""
        block = self.encode(tape, state, head)
        generated = self.tree.generate(block, steps * (self.tape_length + 1))
        width = self.tape_length + 1
        return [self.decode(generated[k * width:(k + 1) * width]) for k in range(steps)]


def _check_tm(transitions: Mapping, blank: Hashable, halting: Iterable[Hashable]) -> tuple[tuple, tuple, set]:
    halting = set(halting)
    states = tuple(dict.fromkeys([q for q, _ in transitions] + [v[0] for v in transitions.values()] + sorted(halting, key=repr)))
    symbols = tuple(dict.fromkeys([blank] + [a for _, a in transitions] + [v[1] for v in transitions.values()]))
    for (q, a), value in transitions.items():
        if len(value) != 3 or value[2] not in (-1, 0, 1):
            raise ValueError(f"transition {(q, a)!r} -> {value!r}: expected (state, symbol, move in -1/0/+1)")
    working = [q for q in states if q not in halting]
    missing = [(q, a) for q in working for a in symbols if (q, a) not in transitions]
    if missing:
        raise ValueError(f"transition table is not total over the working states: no transition for {missing[:10]}")
    extra = [key for key in transitions if key[0] in halting]
    if extra:
        raise ValueError(f"halting states must have no transitions (halting is absorbing): {extra}")
    return states, symbols, halting


def compile_turing_machine(transitions: Mapping[tuple[Hashable, Hashable], tuple[Hashable, Hashable, int]],
                           blank: Hashable, halting: Iterable[Hashable], tape_length: int) -> CompiledTM:
    r"""S3, the tableau construction. ``transitions`` maps ``(state, symbol)`` to ``(state, written, move)``,
    move in :math:`\{-1,0,+1\}`, for every working state and tape symbol; ``halting`` states have none and
    are absorbing. While cell :math:`j` of the next block is written, window positions 1-3 hold
    :math:`c_{j-1},c_j,c_{j+1}` of the previous block (``#`` beyond its ends). The root reads position 2: ``#``
    emits ``#``; a head token emits what the machine writes there (a head token if it does not move); a
    plain cell reads position 1 (a head moving right enters), then position 3 (a head moving left enters),
    and otherwise copies itself."""
    states, symbols, halting = _check_tm(transitions, blank, halting)
    if tape_length < 1:
        raise ValueError(f"tape_length: got {tape_length}, expected a positive integer")
    heads = [(q, a) for q in states for a in symbols]

    def step(q, a):
        return (q, a, 0) if q in halting else transitions[q, a]

    def written(q, a):
        q2, b, move = step(q, a)
        return _head(q2, b) if move == 0 else _cell(b)

    def plain(a):
        from_left = {_head(q, c): Leaf(_head(step(q, c)[0], a)) if step(q, c)[2] == 1 else Leaf(_cell(a))
                     for q, c in heads}
        from_right = {_head(q, c): Leaf(_head(step(q, c)[0], a)) if step(q, c)[2] == -1 else Leaf(_cell(a))
                      for q, c in heads}
        return Node(1, False, from_left, Node(3, False, from_right, Leaf(_cell(a))))

    children = {SEPARATOR: Leaf(SEPARATOR)}
    children.update({_head(q, a): Leaf(written(q, a)) for q, a in heads})
    children.update({_cell(a): plain(a) for a in symbols})
    root = Node(2, False, children, Leaf(ERROR, True))
    return CompiledTM(WindowTree(root, tape_length + 2), symbols, states, tape_length)


def tm_leaf_count(n_states: int, n_symbols: int) -> int:
    r"""S3's exact leaf count :math:`|\Gamma|(2|Q||\Gamma|+1)+|Q||\Gamma|+2`."""
    return n_symbols * (2 * n_states * n_symbols + 1) + n_states * n_symbols + 2


def simulate_tm(transitions: Mapping, halting: Iterable[Hashable], tape: Sequence[Hashable], state: Hashable,
                head: int, steps: int) -> list[tuple]:
    """Direct simulation; halting is absorbing; leaving the tape is an error (reserve blank cells)."""
    halting, tape, configurations = set(halting), list(tape), []
    for _ in range(steps):
        if state not in halting:
            state, tape[head], move = transitions[state, tape[head]]
            head += move
            if not 0 <= head < len(tape):
                raise ValueError("the machine left its tape: reserve more blank cells")
        configurations.append((state, head, tuple(tape)))
    return configurations


def increment_tm() -> dict:
    """Binary increment: the head starts on the last digit; carry leftwards; '_' is blank."""
    return {"transitions": {("carry", 1): ("carry", 0, -1), ("carry", 0): ("done", 1, 0),
                            ("carry", "_"): ("done", 1, 0)}, "blank": "_", "halting": {"done"}}


def increment_tapes(bits: int) -> list[list]:
    """Every tape of the binary-increment check: a reserved blank cell, then each of the
    :math:`2^{bits}` numbers of ``bits`` binary digits, most significant first. The all-ones
    number is included: its carry runs through every digit into the reserved cell."""
    if bits < 1:
        raise ValueError(f"bits: got {bits}, expected a positive integer")
    return [["_", *map(int, format(v, f"0{bits}b"))] for v in range(2**bits)]


def tape_number(tape: Sequence[Hashable]) -> int:
    """The binary number a tape holds (blank cells read as nothing), for the arithmetic oracle."""
    digits = "".join(str(a) for a in tape if a != "_")
    return int(digits, 2) if digits else 0


def tm_configurations(tm: CompiledTM, transitions: Mapping, halting: Iterable[Hashable], tapes: np.ndarray,
                      state: int, heads: np.ndarray, steps: int):
    r"""The direct simulation of ``tapes`` (tape-symbol indices of ``tm``, ``(rows, M)``) from state index
    ``state`` with heads at ``heads``, all at once by table look-up: yields ``(states, heads, tapes)``
    after each of ``steps`` steps; halting is absorbing, and leaving the tape is an error."""
    halting = set(halting)
    Q, G = len(tm.states), len(tm.tape_symbols)
    new_state, write, move = (np.zeros((Q, G), dtype=np.int64) for _ in range(3))
    for q, name in enumerate(tm.states):
        for a, symbol in enumerate(tm.tape_symbols):
            q2, b, m = (name, symbol, 0) if name in halting else transitions[name, symbol]
            new_state[q, a], write[q, a], move[q, a] = tm.states.index(q2), tm.tape_symbols.index(b), m
    tapes = np.array(tapes, dtype=np.int64)
    rows = tapes.shape[0]
    states = np.full(rows, state, dtype=np.int64)
    heads = np.array(heads, dtype=np.int64) * np.ones(rows, dtype=np.int64)
    every = np.arange(rows)
    for _ in range(steps):
        read = tapes[every, heads]
        tapes[every, heads] = write[states, read]
        heads = heads + move[states, read]
        states = new_state[states, read]
        if heads.min() < 0 or heads.max() >= tm.tape_length:
            raise ValueError("the machine left its tape: reserve more blank cells")
        yield states, heads, tapes.copy()


def check_tm_batch(tm: CompiledTM, transitions: Mapping, halting: Iterable[Hashable], tapes: np.ndarray,
                   state: int, heads, steps: int, device=None, chunk: int | None = None) -> tuple[bool, np.ndarray]:
    r"""S3 on many tapes of one length at once: the compiled tree runs as an ARDT through the flat walk
    (:func:`walk`, on ``device``) from each initial block for ``steps`` :math:`\times(M+1)` tokens, and
    every block it writes is compared with the configuration :func:`tm_configurations` reaches at
    that time, ``chunk`` tapes at a time (default :math:`2^{14}` on a CPU, :math:`2^{16}` on an
    accelerator). Returns whether all matched, and the state index in the tree's last block of each
    tape (read off the tree's tokens, not the simulation)."""
    tapes = np.asarray(tapes, dtype=np.int64)
    rows, M = tapes.shape
    heads = np.array(heads, dtype=np.int64) * np.ones(rows, dtype=np.int64)
    flat = flatten_tree(tm.tree, tm.vocabulary, M + 2)
    G, exact, finals = len(tm.tape_symbols), True, np.empty(rows, dtype=np.int64)
    chunk = chunk or (2**14 if device is None or str(device) == "cpu" else 2**16)
    for begin in range(0, rows, chunk):
        part, at = tapes[begin:begin + chunk], heads[begin:begin + chunk]
        prompt = tm.block_codes(part, np.full(len(part), state), at)
        written = walk(flat, prompt, steps * (M + 1), device, by_columns=True)
        for t, (q, h, tape) in enumerate(tm_configurations(tm, transitions, halting, part, state, at, steps)):
            if not np.array_equal(written[t * (M + 1):(t + 1) * (M + 1)], tm.block_codes(tape, q, h)):
                exact = False
        last = written[-M:].astype(np.int64) if steps else prompt[1:]
        head_codes = np.where(last > G, last, 0).max(axis=0)  # the one head token of each block
        finals[begin:begin + chunk] = np.where(head_codes > G, (head_codes - 1 - G) // G, -1)
    return exact, finals


def exhaustive_tm_check(spec: dict, tapes: Sequence[Sequence[Hashable]], state: Hashable, head: int | None,
                        steps: int, device=None) -> bool:
    """Whether, on every tape, the compiled tree's chain of thought holds the configurations the
    direct simulation visits at times 1..``steps`` (S3); ``head`` None starts on the last cell. Tapes
    of one length share a tree and run together through :func:`check_tm_batch`."""
    by_length: dict[int, list] = {}
    for tape in tapes:
        by_length.setdefault(len(tape), []).append(list(tape))
    for M, group in by_length.items():
        tm = compile_turing_machine(spec["transitions"], spec["blank"], spec["halting"], M)
        foreign = sorted({repr(a) for tape in group for a in tape if a not in tm.tape_symbols})
        if foreign:
            raise ValueError(f"tape symbols outside {list(tm.tape_symbols)}: {', '.join(foreign)}")
        if state not in tm.states:
            raise ValueError(f"unknown state {state!r}; states: {list(tm.states)}")
        codes = np.array([[tm.tape_symbols.index(a) for a in tape] for tape in group], dtype=np.int64)
        start = M - 1 if head is None else head
        if not 0 <= start < M:
            raise ValueError(f"head: got {start}, expected 0..{M - 1}")
        exact, _ = check_tm_batch(tm, spec["transitions"], spec["halting"], codes, tm.states.index(state), start,
                                  steps, device)
        if not exact:
            return False
    return True


def palindrome_tm() -> dict:
    """Accepts the binary palindromes: the head starts on the first symbol, erases it, runs to the last
    symbol, erases it if it matches (else rejects) and returns; a blank in the middle accepts.
    The tape holds the string between two blank cells."""
    transitions = {("start", "_"): ("accept", "_", 0), ("back", "_"): ("start", "_", 1)}
    for b in (0, 1):
        transitions["start", b] = (f"have{b}", "_", 1)
        transitions["back", b] = ("back", b, -1)
        for c in (0, 1):
            transitions[f"have{b}", c] = (f"have{b}", c, 1)
            transitions[f"check{b}", c] = ("back", "_", -1) if c == b else ("reject", c, 0)
        transitions[f"have{b}", "_"] = (f"check{b}", "_", -1)
        transitions[f"check{b}", "_"] = ("accept", "_", 0)
    return {"transitions": transitions, "blank": "_", "halting": {"accept", "reject"}}


def palindrome_check(length: int, device=None) -> dict:
    r"""The palindrome machine (:func:`palindrome_tm`) compiled for :math:`M=` ``length`` :math:`+2`
    cells and run by the flat walk on all :math:`2^{\text{length}}` strings until every run has halted
    (the number of steps from the direct simulation): whether every configuration matched
    (``exact``), whether the state in the tree's last block is ``accept`` exactly for the strings
    equal to their reverse (``verdicts``, against that closed-form oracle), with the step count,
    the tree's depth and leaves and the S3 leaf count."""
    if length < 0:
        raise ValueError(f"length: got {length}, expected a non-negative integer")
    spec = palindrome_tm()
    tm = compile_turing_machine(spec["transitions"], "_", spec["halting"], length + 2)
    bits = input_block(length, 2, 0, 2**length).T.astype(np.int64)
    one = tm.tape_symbols.index(1)
    zero = tm.tape_symbols.index(0)
    tapes = np.zeros((2**length, length + 2), dtype=np.int64)  # blank index 0 at both ends
    tapes[:, 1:-1] = np.where(bits == 1, one, zero)
    runs = tm_configurations(tm, spec["transitions"], spec["halting"], tapes, tm.states.index("start"), 1,
                             4 * (length + 2) ** 2)
    halting = [tm.states.index(q) for q in spec["halting"]]
    steps, halted = 0, False
    while not halted:  # the direct simulation says when the last run halts
        states, _, _ = next(runs)
        steps, halted = steps + 1, bool(np.isin(states, halting).all())
    exact, finals = check_tm_batch(tm, spec["transitions"], spec["halting"], tapes, tm.states.index("start"), 1,
                                   steps, device)
    truth = np.all(bits == bits[:, ::-1], axis=1)
    verdicts = bool(np.array_equal(finals == tm.states.index("accept"), truth))
    return {"length": length, "strings": 2**length, "steps": steps, "exact": exact, "verdicts": verdicts,
            "depth": tm.depth, "leaves": tm.n_leaves, "thm leaves": tm_leaf_count(len(tm.states), len(tm.tape_symbols))}


def unary_adder_tm() -> dict:
    """``1^a 0 1^b`` to ``1^(a+b)``: turn the 0 into 1, run to the end, erase the last 1."""
    return {"transitions": {("scan", 1): ("scan", 1, 1), ("scan", 0): ("tail", 1, 1), ("scan", "_"): ("halt", "_", 0),
                            ("tail", 1): ("tail", 1, 1), ("tail", 0): ("tail", 0, 1), ("tail", "_"): ("erase", "_", -1),
                            ("erase", 1): ("halt", "_", 0), ("erase", 0): ("halt", 0, 0),
                            ("erase", "_"): ("halt", "_", 0)},
            "blank": "_", "halting": {"halt"}}


# ----------------------------------------------------------------------------------------------
# Circuits


@dataclass(frozen=True)
class Gate:
    """A gate reading ``wires`` (indices into inputs then earlier gates) through a truth table indexed by
    the bits read, first wire most significant."""

    wires: tuple[int, ...]
    table: tuple[int, ...]


@dataclass
class CompiledCircuit(_Compiled):
    r"""S4: a circuit of :math:`N` gates of fan-in at most :math:`k` on :math:`n` inputs compiled to a window tree
    with :math:`L=n+N`, token depth at most :math:`\lceil\log_2N\rceil+k` and at most :math:`N2^k` non-error
    leaves; after :math:`N` steps the last token is :math:`g_N`."""

    tree: WindowTree
    n_inputs: int
    gates: tuple[Gate, ...]

    def run(self, inputs: Sequence[int]) -> list[int]:
        """The gate values :math:`g_1..g_N` the tree writes after the inputs."""
        inputs = list(inputs)
        if len(inputs) != self.n_inputs or any(v not in (0, 1) for v in inputs):
            raise ValueError(f"inputs: expected {self.n_inputs} bits, got {inputs!r}")
        return self.tree.generate(inputs, len(self.gates))

    def run_all(self) -> np.ndarray:
        return self.tree.generate_batch(all_inputs(self.n_inputs), len(self.gates), [0, 1])


def compile_circuit(n_inputs: int, gates: Sequence[Gate]) -> CompiledCircuit:
    r"""S4: before step :math:`i` the window is :math:`(\bot^{N-i+1},x,g_1..g_{i-1})`; "is position :math:`p`
    padding?" is monotone in :math:`p`, so a binary search of :math:`\lceil\log_2N\rceil` queries finds
    :math:`i`, and the gate's wires, now at known positions, are read and looked up in its table."""
    gates = tuple(gates)
    N = len(gates)
    if n_inputs < 1 or N < 1:
        raise ValueError(f"need at least one input and one gate, got {n_inputs} and {N}")
    for i, gate in enumerate(gates):
        if any(not 0 <= w < n_inputs + i for w in gate.wires):
            raise ValueError(f"gate {i + 1} reads wires {gate.wires}, expected indices below {n_inputs + i}")
        if len(gate.table) != 2 ** len(gate.wires) or any(v not in (0, 1) for v in gate.table):
            raise ValueError(f"gate {i + 1}: truth table of {len(gate.table)} bits for {len(gate.wires)} wires")

    def gate_subtree(i, read=0, index=0):
        gate = gates[i - 1]
        if read == len(gate.wires):
            return Leaf(gate.table[index])
        position = N - i + 1 + gate.wires[read] + 1  # wire w sits after the N-i+1 pads
        return Node(position, False, {bit: gate_subtree(i, read + 1, 2 * index + bit) for bit in (0, 1)},
                    Leaf(ERROR, True))

    def search(low, high):
        if low == high:
            return gate_subtree(low)
        middle = (low + high) // 2
        return Node(N - middle + 1, False, {PAD: search(low, middle)}, search(middle + 1, high))

    return CompiledCircuit(WindowTree(search(1, N), n_inputs + N), n_inputs, gates)


def evaluate_circuit(n_inputs: int, gates: Sequence[Gate], inputs: Sequence[int]) -> list[int]:
    wires = list(inputs)
    for gate in gates:
        index = 0
        for w in gate.wires:
            index = 2 * index + wires[w]
        wires.append(gate.table[index])
    return wires[n_inputs:]


def evaluate_circuit_batch(n_inputs: int, gates: Sequence[Gate], inputs: np.ndarray) -> np.ndarray:
    """:func:`evaluate_circuit` on every column of ``inputs`` (``(n_inputs, rows)`` bits) at once, gate by
    gate by truth-table look-up, without any tree: the ``(N, rows)`` gate values."""
    inputs = np.asarray(inputs)
    wires = np.empty((n_inputs + len(gates), inputs.shape[1]), dtype=np.uint8)
    wires[:n_inputs] = inputs
    for i, gate in enumerate(gates):
        index = np.zeros(inputs.shape[1], dtype=np.intp)
        for w in gate.wires:
            index = 2 * index + wires[w]
        wires[n_inputs + i] = np.asarray(gate.table, dtype=np.uint8).take(index)
    return wires[n_inputs:]


def exhaustive_circuit_check(circuit: CompiledCircuit, device=None, chunk: int | None = None) -> bool:
    r"""S4 on every input: the compiled tree runs as an ARDT through the flat walk (:func:`walk`, on
    ``device``) for :math:`N` steps on all :math:`2^n` inputs, ``chunk`` at a time (default: about
    :math:`2^{28}` tokens of buffer on a CPU, :math:`2^{33}` on an accelerator, where every launch
    counts), and must write :math:`g_1..g_N` as :func:`evaluate_circuit_batch` computes them."""
    n, N = circuit.n_inputs, len(circuit.gates)
    flat = flatten_tree(circuit.tree, [0, 1], n + N)
    budget = 2**28 if device is None or str(device) == "cpu" else 2**33
    chunk = chunk or max(1, budget // (2 * (n + N)))
    for start in range(0, 2**n, chunk):
        inputs = input_block(n, 2, start, min(2**n, start + chunk))
        written = walk(flat, inputs, N, device, by_columns=True)
        if not np.array_equal(written, evaluate_circuit_batch(n, circuit.gates, inputs)):
            return False
    return True


def parity_circuit(n_inputs: int) -> list[Gate]:
    """XOR chain: :math:`g_1=x_1\\oplus x_2`, :math:`g_i=g_{i-1}\\oplus x_{i+1}`."""
    xor = (0, 1, 1, 0)
    return [Gate((0, 1), xor)] + [Gate((n_inputs + i - 1, i + 1), xor) for i in range(1, n_inputs - 1)]


def random_circuit(n_inputs: int, n_gates: int, fan_in: int = 2, seed: int = 0) -> list[Gate]:
    rng = np.random.default_rng(seed)
    gates = []
    for i in range(n_gates):
        k = int(rng.integers(1, fan_in + 1))
        wires = tuple(int(w) for w in rng.choice(n_inputs + i, size=min(k, n_inputs + i), replace=False))
        gates.append(Gate(wires, tuple(int(v) for v in rng.integers(0, 2, size=2 ** len(wires)))))
    return gates


def one_shot_parity_leaves(n: int) -> int:
    """S2: a one-shot decision tree computing parity of n bits has exactly :math:`2^n` leaves (it needs them all)."""
    return 2 ** n


def one_shot_parity_cart(n: int, seed: int = 0):
    r"""CART (scikit-learn's ``DecisionTreeClassifier``) fitted to all :math:`2^n` strings labelled by
    :math:`x_1\oplus\cdots\oplus x_n`: a one-shot tree, which S2 forces to :math:`2^n` leaves."""
    from sklearn.tree import DecisionTreeClassifier

    inputs = all_inputs(n)
    return DecisionTreeClassifier(random_state=seed).fit(inputs, inputs.sum(axis=1) % 2)


def parity_sizes(lengths: Iterable[int], seed: int = 0) -> dict[str, list[int]]:
    r"""Leaf counts for parity of :math:`n` bits, every one computed from a built tree: CART fitted
    to all :math:`2^n` labelled strings (one-shot), the compiled XOR-chain circuit tree (S4,
    non-error leaves) and the compiled parity automaton tree (S1, non-error leaves:
    :math:`(|Q|+1)|\Sigma|=6`); both ARDTs are counted by the same rule, leaves a valid run can reach
    (error leaves only answer windows no run produces); with the S2 lower bound :math:`2^n` beside them."""

    lengths = [int(n) for n in lengths]
    if any(n < 2 for n in lengths):
        raise ValueError(f"lengths: got {lengths}, expected integers >= 2 (a chain needs two inputs)")
    cart = [int(one_shot_parity_cart(n, seed).get_n_leaves()) for n in lengths]
    automaton = compile_dfa(*parity_dfa())
    return {"n": lengths, "lower bound": [one_shot_parity_leaves(n) for n in lengths],
            "one-shot CART": cart,
            "ARDT, circuit": [compile_circuit(n, parity_circuit(n)).n_output_leaves for n in lengths],
            "ARDT, automaton": [automaton.n_output_leaves for _ in lengths]}


# ----------------------------------------------------------------------------------------------
# Drawing


def blank_text(symbol: Hashable) -> str:
    """A tape symbol as text, the blank ``_`` as ``␣`` (an underscore vanishes in rotated labels)."""
    return "␣" if symbol == "_" else str(symbol)


def token_text(token: Hashable) -> str:
    """A short label for a window token: ``0`` (symbol), ``q1`` (state), ``q:a`` (head token),
    ``#``, ``⊥`` (padding), ``err``."""
    if token == PAD:
        return "⊥"
    if token == ERROR:
        return "err"
    if isinstance(token, tuple):
        kind = token[0]
        if kind == "state":
            return f"q{token[1]}"
        if kind == "head":
            return f"{token[1]}:{blank_text(token[2])}"
        if kind in ("sym", "cell"):
            return blank_text(token[1])
        return str(kind)
    return str(token)


def draw_window_tree(tree: WindowTree, ax, fontsize: float = 7, name=token_text) -> None:
    """Draw a window tree on a matplotlib axis: internal nodes say which window position they
    read (``←j``: the j-th from the end), edges the token they follow (``else``: the default),
    leaves the token they emit (error leaves grey). Below a node with many branches, a leaf's
    label reads ``edge → emitted`` and is turned upright so that wide trees stay legible."""
    leaves: list[float] = []

    def place(node, depth, edge=None, crowded=False):  # returns x: leaves left to right
        if isinstance(node, Leaf):
            x = float(len(leaves))
            leaves.append(x)
            text = name(node.token) if not crowded else f"{edge} → {name(node.token)}"
            ax.text(x, -depth, text, ha="center", va="top", fontsize=fontsize,
                    rotation=90 if crowded else 0, color="0.6" if node.error else "black")
            return x
        branches = [*((name(t), c) for t, c in node.children.items()), ("else", node.default)]
        many = len(branches) > 4
        xs = [place(child, depth + 1, label, many and isinstance(child, Leaf))
              for label, child in branches]
        x = float(np.mean([xs[0], xs[-1]]))
        for (label, child), child_x in zip(branches, xs, strict=True):
            ax.plot([x, child_x], [-depth, -depth - 1], color="0.75", linewidth=0.6, zorder=0)
            if not (many and isinstance(child, Leaf)):
                ax.text((x + child_x) / 2, -depth - 0.5, label, ha="center", va="center",
                        fontsize=fontsize - 1, color="#0072B2",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3})
        where = f"←{node.position}" if node.from_end else f"{node.position}"
        ax.text(x, -depth, f"pos {where}", ha="center", va="bottom", fontsize=fontsize,
                bbox={"facecolor": "#f0f0f0", "edgecolor": "0.5", "pad": 1.5})
        return x

    place(tree.root, 0)
    ax.set_xlim(-1, max(len(leaves), 1))
    ax.set_ylim(-tree.depth - 1.4, 0.6)
    ax.axis("off")


# ----------------------------------------------------------------------------------------------
# Learning ARDTs from traces


def one_hot_windows(windows: np.ndarray, vocabulary_size: int) -> np.ndarray:
    """Binary features: one block of ``vocabulary_size + 1`` indicators per window position (the last for PAD)."""
    windows = np.where(windows < 0, vocabulary_size, windows)
    rows, length = windows.shape
    features = np.zeros((rows, length * (vocabulary_size + 1)), dtype=np.uint8)
    features[np.arange(rows)[:, None], np.arange(length) * (vocabulary_size + 1) + windows] = 1
    return features


def dfa_trace_windows(dfa: CompiledDFA, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (window, next token) pair along the chain of thought of each input row (symbol indices),
    with :math:`L=n`, as token codes of ``dfa.vocabulary``; the targets come from :func:`simulate_dfa`."""
    inputs = np.asarray(inputs)
    n = inputs.shape[1]
    offset = len(dfa.alphabet)
    state_index = {q: k for k, q in enumerate(dfa.states)}
    sequences = np.empty((inputs.shape[0], 2 * n), dtype=np.int64)
    sequences[:, :n] = inputs
    for row, symbols in enumerate(inputs):
        states = simulate_dfa(dfa.transitions, dfa.start, [dfa.alphabet[s] for s in symbols])
        sequences[row, n:] = [offset + state_index[q] for q in states]
    windows = np.concatenate([sequences[:, t:t + n] for t in range(n)])
    targets = np.concatenate([sequences[:, n + t] for t in range(n)])
    return windows, targets


@dataclass
class LearnedARDT:
    """A scikit-learn CART fitted on one-hot windows, used as a window tree over token codes."""

    model: Any
    vocabulary_size: int
    context_length: int

    @property
    def depth(self) -> int:
        return int(self.model.get_depth())

    @property
    def n_leaves(self) -> int:
        return int(self.model.get_n_leaves())

    def questions(self) -> list[tuple[int, int]]:
        """The ``(window position, token code)`` each split asks about ("does position p hold
        token c?"), in depth-first order; code ``vocabulary_size`` stands for padding."""
        tree, block = self.model.tree_, self.vocabulary_size + 1
        return [(int(f) // block + 1, int(f) % block) for f in tree.feature if f >= 0]

    def generate_batch(self, prompts: np.ndarray, steps: int) -> np.ndarray:
        sequence = np.asarray(prompts, dtype=np.int64)
        for _ in range(steps):
            window = sequence[:, -self.context_length:]
            token = self.model.predict(one_hot_windows(window, self.vocabulary_size))
            sequence = np.concatenate([sequence, token[:, None]], axis=1)
        return sequence[:, prompts.shape[1]:]


def fit_ardt(windows: np.ndarray, targets: np.ndarray, vocabulary_size: int, seed: int = 0, **tree_options) -> LearnedARDT:
    """CART (scikit-learn's ``DecisionTreeClassifier``) on one-hot windows; depths count binary splits."""
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier(random_state=seed, **tree_options)
    model.fit(one_hot_windows(windows, vocabulary_size), targets)
    return LearnedARDT(model, vocabulary_size, windows.shape[1])


def whole_trace_exactness(written: np.ndarray, truth: np.ndarray) -> float:
    """The share of rows (inputs) on which the written chain of thought equals the true one at
    **every** step, not only the last."""
    written, truth = np.asarray(written), np.asarray(truth)
    if written.shape != truth.shape:
        raise ValueError(f"traces of shapes {written.shape} and {truth.shape}")
    return float(np.mean(np.all(written == truth, axis=1)))


def learn_from_traces(dfa: CompiledDFA, length: int, trace_counts: Sequence[int], seed: int = 0) -> dict:
    """CART on the one-hot windows of the traces of random inputs of ``length``, trying each count
    in ``trace_counts`` until the learned ARDT writes the whole chain of thought :math:`q_1..q_n`
    right (:func:`whole_trace_exactness`, against :meth:`CompiledDFA.trace_all`) on all inputs of
    that length; with a one-shot CART fitted on the same inputs (the first count), mapping the
    input to the final state, as the comparison."""
    from sklearn.tree import DecisionTreeClassifier

    every = all_inputs(length, len(dfa.alphabet))
    truth = dfa.trace_all(length)
    for count in trace_counts:
        inputs = np.random.default_rng(seed).integers(0, len(dfa.alphabet), size=(count, length))
        windows, targets = dfa_trace_windows(dfa, inputs)
        tree = fit_ardt(windows, targets, len(dfa.vocabulary), seed=seed)
        written = tree.generate_batch(every, length) - len(dfa.alphabet)
        exact = whole_trace_exactness(written, truth)
        if exact == 1.0:
            break
    first = inputs[:trace_counts[0]]
    index = (first * len(dfa.alphabet) ** np.arange(length - 1, -1, -1)).sum(axis=1)
    one_shot = DecisionTreeClassifier(random_state=seed).fit(first, truth[index, -1])
    return {"traces": count, "depth": tree.depth, "leaves": tree.n_leaves, "exact": exact,
            "one_shot": float(one_shot.score(every, truth[:, -1])), "tree": tree}


def all_inputs(length: int, alphabet_size: int = 2) -> np.ndarray:
    """Every string of ``length`` symbols (as indices), one per row, in lexicographic order."""
    if length == 0:
        return np.zeros((1, 0), dtype=np.int64)
    return np.stack(np.unravel_index(np.arange(alphabet_size ** length), (alphabet_size,) * length), axis=1)


def leaf_bound_dfa(n_states: int, n_symbols: int) -> int:
    r"""S1: :math:`(|Q|+1)(|\Sigma|+1)`."""
    return (n_states + 1) * (n_symbols + 1)


def circuit_depth_bound(n_gates: int, fan_in: int) -> int:
    r"""S4: :math:`\lceil\log_2N\rceil+k`."""
    return math.ceil(math.log2(n_gates)) + fan_in if n_gates > 1 else fan_in


# ----------------------------------------------------------------------------------------------
# Trees as language models


def window_features(prefixes: Sequence[Sequence[int]], context_length: int, vocabulary_size: int,
                    decay: float = 0.7) -> np.ndarray:
    r"""Features of each prefix: its last ``context_length`` token ids (left-padded with the id
    ``vocabulary_size``; categorical), then a bag of words :math:`\sum_{a\ge0}\text{decay}^a\,e_{x_{-1-a}}` over
    the whole prefix (``decay = 0`` drops it)."""
    rows = len(prefixes)
    window = np.full((rows, context_length), vocabulary_size, dtype=np.float64)
    bag = np.zeros((rows, vocabulary_size if decay > 0 else 0))
    for row, prefix in enumerate(prefixes):
        tail = list(prefix[-context_length:]) if context_length else []
        if tail:
            window[row, context_length - len(tail):] = tail
        if decay > 0:
            for age, token in enumerate(reversed(prefix)):
                bag[row, token] += decay ** age
    return np.concatenate([window, bag], axis=1)


class TreeLM:
    """An ARDT language model: gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``,
    one tree per class per round, the window's token ids as categorical features) over
    :func:`window_features`, with probabilities smoothed towards uniform by ``smoothing`` so that no
    token has probability zero."""

    def __init__(self, vocabulary_size: int, context_length: int = 8, decay: float = 0.7, rounds: int = 60,
                 max_leaf_nodes: int = 31, learning_rate: float = 0.2, smoothing: float = 1e-4, seed: int = 0):
        if context_length < 0 or rounds < 1 or not 0 <= decay < 1 or not 0 < smoothing < 1:
            raise ValueError("context_length >= 0, rounds >= 1, decay in [0, 1) and smoothing in (0, 1) required")
        self.vocab, self.context_length, self.decay, self.smoothing = vocabulary_size, context_length, decay, smoothing
        self.options = dict(max_iter=rounds, max_leaf_nodes=max_leaf_nodes, learning_rate=learning_rate,
                            random_state=seed, early_stopping=False)
        self.model = None

    def features(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        return window_features(prefixes, self.context_length, self.vocab, self.decay)

    def fit(self, sentences: Sequence[Sequence[int]], bos: int) -> TreeLM:
        from sklearn.ensemble import HistGradientBoostingClassifier

        from .tinylm import sentence_prefixes

        prefixes, targets = sentence_prefixes(sentences, bos)
        categorical = [True] * self.context_length + [False] * (self.vocab if self.decay > 0 else 0)
        self.model = HistGradientBoostingClassifier(categorical_features=categorical or None, **self.options)
        self.model.fit(self.features(prefixes), targets)
        return self

    def next_token_probabilities(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        if self.model is None:
            raise ValueError("TreeLM: call fit before asking for probabilities")
        probabilities = np.zeros((len(prefixes), self.vocab))
        probabilities[:, self.model.classes_] = self.model.predict_proba(self.features(prefixes))
        return (1 - self.smoothing) * probabilities + self.smoothing / self.vocab


def position_features(sequences: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """Token id at each of the first ``width`` positions (``-1``+1 = 0 past the end; ids shifted by one),
    the bag-of-tokens-with-positions baseline of the reasoning task (categorical features)."""
    features = np.zeros((len(sequences), width))
    for row, sequence in enumerate(sequences):
        if len(sequence) > width:
            raise ValueError(f"sequence of {len(sequence)} tokens exceeds width {width}")
        features[row, :len(sequence)] = np.asarray(sequence) + 1
    return features


def boosted_trees(features: np.ndarray, labels: np.ndarray, *, categorical: bool = False, rounds: int = 100,
                  seed: int = 0):
    """Gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``) fitted to ``labels``;
    ``categorical`` treats every feature as a category (token ids)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=rounds, random_state=seed, early_stopping=False,
                                           categorical_features=[True] * features.shape[1] if categorical else None)
    return model.fit(features, labels)
