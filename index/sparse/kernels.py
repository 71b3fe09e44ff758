"""Numba kernels of the blocked sparse index: plain functions over arrays and scalars.

No ids, files or vocabularies here: :mod:`braid.index.sparse.blocked` orchestrates. Every kernel is
written so that ``NUMBA_DISABLE_JIT=1`` runs it as (slow) Python for debugging; the two LLVM
intrinsics (half-float load, prefetch) have Python stand-ins for that mode.

Layout (see ``blocked.py`` for the full list): a posting list per term is ``list_ptr[t]:list_ptr[t+1]``
blocks; block ``b`` holds docs ``post_docs[block_ptr[b]:block_ptr[b+1]]``. The summaries of one list are
stored *inverted* (as Seismic's ``QuantizedSummary`` does): the list's summary components are
``sum_comp_ids[sum_list_ptr[t]:sum_list_ptr[t+1]]`` (sorted), and component ``c`` at position ``j``
lists (block within the list, u8 code) pairs in ``sum_blocks/sum_codes[sum_comp_ptr[j]:sum_comp_ptr[j+1]]``,
so the summary estimates of all blocks of a list cost one pass over the query's matching components.
A code dequantizes to ``block_min[b] + code * block_step[b]``. The search kernels take these arrays as
one :class:`BlockedArrays` and their scratch as one :class:`SearchScratch`.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

_JIT = not numba.config.DISABLE_JIT

from braid.index.sparse.layout import BlockedArrays, SearchScratch  # noqa: E402,F401

# CSR validation and row copies live with the vector container (braid.data); re-exported for the index.
from braid.data.csr_kernels import (  # noqa: E402,F401
    ROW_BAD_TERM,
    ROW_NEGATIVE,
    ROW_NOT_FINITE,
    ROW_OK,
    ROW_UNSORTED,
    check_rows,
    first_decreasing,
    gather_rows,
    sort_rows,
)

_MINSTD_A = 48271
_MINSTD_M = 2147483647

# ---------------------------------------------------------------------------------------------
# Intrinsics: half-float load (F16C on x86) and a software prefetch; Python stand-ins without JIT.
# ---------------------------------------------------------------------------------------------
if _JIT:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload

    @intrinsic
    def f16_to_f32(typingctx, bits):
        """float32 value of IEEE half-precision bits (uint16)."""
        sig = types.float32(types.uint16)

        def codegen(context, builder, signature, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

        return sig, codegen

    @intrinsic
    def prefetch(typingctx, arr, idx):
        """Hint the CPU to load ``arr[idx]`` into cache (no effect on results)."""
        sig = types.void(arr, idx)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
            fn = builder.module.declare_intrinsic("llvm.prefetch", fnty=fnty)
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def load_at(typingctx, arr, idx):
        """``arr[idx]`` for an index known to lie in ``[0, len(arr))``: one plain load. numba's own indexing
        with a signed index adds a negative-index wraparound (compare and select) to every access."""
        sig = arr.dtype(arr, idx)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.load(builder.gep(ary.data, [args[1]]))

        return sig, codegen

    @intrinsic
    def _f16x4_to_f32x4(typingctx, arr, idx):
        """float32 values of the four half-float bit patterns ``arr[idx:idx+4]`` (one vcvtph2ps)."""
        f32 = types.float32
        sig = types.UniTuple(f32, 4)(arr, idx)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
            vec_ptr = builder.bitcast(ptr, ir.VectorType(ir.IntType(16), 4).as_pointer())
            bits = builder.load(vec_ptr, align=2)
            wide = builder.fpext(builder.bitcast(bits, ir.VectorType(ir.HalfType(), 4)), ir.VectorType(ir.FloatType(), 4))
            vals = [builder.extract_element(wide, ir.Constant(ir.IntType(32), j)) for j in range(4)]
            return context.make_tuple(builder, signature.return_type, vals)

        return sig, codegen

    def load_weights4(weights, i):
        """``weights[i:i+4]`` as four float32 (half-float bits decoded four at a time)."""
        if weights.dtype == np.uint16:
            v = weights[i : i + 4].view(np.float16).astype(np.float32)
        else:
            v = weights[i : i + 4].astype(np.float32)
        return v[0], v[1], v[2], v[3]

    @overload(load_weights4, inline="always")
    def _load_weights4_overload(weights, i):
        if weights.dtype == types.uint16:
            return lambda weights, i: _f16x4_to_f32x4(weights, i)
        return lambda weights, i: (
            np.float32(load_at(weights, i)),
            np.float32(load_at(weights, i + 1)),
            np.float32(load_at(weights, i + 2)),
            np.float32(load_at(weights, i + 3)),
        )

    @intrinsic
    def f32_to_f16(typingctx, value):
        """IEEE half-precision bits (uint16) of a float32, rounded to nearest even."""
        sig = types.uint16(types.float32)

        def codegen(context, builder, signature, args):
            return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

        return sig, codegen

    def store_weight(weights, i, value):
        """``weights[i] = value``, encoding half-float bits when ``weights`` is uint16."""
        if weights.dtype == np.uint16:
            weights[i] = np.array([value], np.float32).astype(np.float16).view(np.uint16)[0]
        else:
            weights[i] = value

    @overload(store_weight, inline="always")
    def _store_weight_overload(weights, i, value):
        if weights.dtype == types.uint16:

            def impl(weights, i, value):
                weights[i] = f32_to_f16(np.float32(value))

            return impl

        def impl(weights, i, value):
            weights[i] = value

        return impl

    def load_weight(weights, i):
        """``weights[i]`` as float32, decoding half-float bits (uint16) (the jitted version: below)."""
        if weights.dtype == np.uint16:
            return np.float32(weights[i : i + 1].view(np.float16)[0])
        return np.float32(weights[i])

    @overload(load_weight, inline="always")
    def _load_weight_overload(weights, i):
        if weights.dtype == types.uint16:
            return lambda weights, i: f16_to_f32(load_at(weights, i))
        return lambda weights, i: np.float32(load_at(weights, i))

else:

    def f16_to_f32(bits):
        return np.float32(np.array([bits], dtype=np.uint16).view(np.float16)[0])

    def f32_to_f16(value):
        return np.array([value], dtype=np.float32).astype(np.float16).view(np.uint16)[0]

    def store_weight(weights, i, value):
        if weights.dtype == np.uint16:
            weights[i] = f32_to_f16(value)
        else:
            weights[i] = value

    def prefetch(arr, idx):
        return None

    def load_at(arr, idx):
        return arr[idx]

    def load_weight(weights, i):
        if weights.dtype == np.uint16:
            return np.float32(weights[i : i + 1].view(np.float16)[0])
        return np.float32(weights[i])

    def load_weights4(weights, i):
        if weights.dtype == np.uint16:
            v = weights[i : i + 4].view(np.float16).astype(np.float32)
        else:
            v = weights[i : i + 4].astype(np.float32)
        return v[0], v[1], v[2], v[3]


njit = numba.njit(cache=True, nogil=True)
njit_parallel = numba.njit(cache=True, nogil=True, parallel=True)
# inlined into the caller in numba's IR: a separate function's call passes every array field on the stack
# and increments and decrements the reference count of each (atomic operations)
njit_inline = numba.njit(cache=True, nogil=True, inline="always")


# ---------------------------------------------------------------------------------------------
# The search kernels' arguments: the index's arrays and the per-thread scratch, each one named tuple
# ---------------------------------------------------------------------------------------------
@njit_parallel
def narrow_forward(indices, data, out_terms, out_weights):
    """Forward-index copies of a CSR batch: term ids into ``out_terms``'s (narrower) dtype and
    weights into ``out_weights``: float32, or uint16 half-float bits (one parallel pass; numpy's
    float16 cast is single-threaded and several times slower)."""
    n = indices.shape[0]
    for c in prange((n + 65535) >> 16):
        lo = c << 16
        hi = min(n, lo + 65536)
        for i in range(lo, hi):
            out_terms[i] = indices[i]
            store_weight(out_weights, i, data[i])


# ---------------------------------------------------------------------------------------------
# Build: global-threshold pruning (Seismic's GlobalThreshold strategy)
# ---------------------------------------------------------------------------------------------
@njit
def select_threshold(data, n_keep):
    """Threshold keeping the ``n_keep`` largest positive weights: returns ``(thr, n_equal)``.

    Keep every weight ``> thr`` plus the first ``n_equal`` weights ``== thr`` in storage order.
    A two-pass radix select on the float bits (non-negative floats order like their bit patterns),
    O(nnz) time and 2 x 65536 counters, instead of sorting or partitioning a copy of ``data``.
    When ``n_keep`` covers all positive weights, returns ``(0.0, 0)``.
    """
    bits = data.view(np.uint32)
    hist = np.zeros(65536, np.int64)
    n_pos = 0
    for i in range(data.shape[0]):
        if data[i] > 0:
            hist[bits[i] >> 16] += 1
            n_pos += 1
    if n_keep >= n_pos:
        return np.float32(0.0), 0
    cum = 0
    hi = 65535
    while cum + hist[hi] < n_keep:
        cum += hist[hi]
        hi -= 1
    need = n_keep - cum
    hist2 = np.zeros(65536, np.int64)
    for i in range(data.shape[0]):
        if data[i] > 0 and (bits[i] >> 16) == hi:
            hist2[bits[i] & 0xFFFF] += 1
    cum2 = 0
    lo = 65535
    while cum2 + hist2[lo] < need:
        cum2 += hist2[lo]
        lo -= 1
    thr_bits = np.zeros(1, np.uint32)
    thr_bits[0] = (np.uint32(hi) << np.uint32(16)) | np.uint32(lo)
    return thr_bits.view(np.float32)[0], need - cum2


@njit
def invert_pruned(indptr, indices, data, vocab_size, thr, n_equal):
    """Posting lists of the kept entries (``w > thr``, plus the first ``n_equal`` with ``w == thr``).

    Returns ``(post_ptr int64 (vocab_size+1,), post_docs int32, post_weights float32)``; each list is
    in increasing doc order. Zero weights are never kept (they cannot contribute to a score).
    """
    counts = np.zeros(vocab_size + 1, np.int64)
    taken = 0
    for d in range(indptr.shape[0] - 1):
        for e in range(indptr[d], indptr[d + 1]):
            w = data[e]
            if w > thr or (w == thr and w > 0 and taken < n_equal):
                if w == thr:
                    taken += 1
                counts[indices[e] + 1] += 1
    post_ptr = np.cumsum(counts)
    total = post_ptr[vocab_size]
    post_docs = np.empty(total, np.int32)
    post_weights = np.empty(total, np.float32)
    fill = post_ptr[:vocab_size].copy()
    taken = 0
    for d in range(indptr.shape[0] - 1):
        for e in range(indptr[d], indptr[d + 1]):
            w = data[e]
            if w > thr or (w == thr and w > 0 and taken < n_equal):
                if w == thr:
                    taken += 1
                t = indices[e]
                post_docs[fill[t]] = d
                post_weights[fill[t]] = w
                fill[t] += 1
    return post_ptr, post_docs, post_weights


@njit_parallel
def cap_lists(post_ptr, post_docs, post_weights, cap):
    """Keep at most ``cap`` postings per list, the largest weights (ties: lower doc first).

    Returns ``(new_ptr, new_docs)`` with each list in increasing doc order.
    """
    n_lists = post_ptr.shape[0] - 1
    new_ptr = np.zeros(n_lists + 1, np.int64)
    for t in range(n_lists):
        new_ptr[t + 1] = new_ptr[t] + min(post_ptr[t + 1] - post_ptr[t], cap)
    new_docs = np.empty(new_ptr[n_lists], np.int32)
    for t in prange(n_lists):
        s = post_ptr[t]
        n = post_ptr[t + 1] - s
        o = new_ptr[t]
        if n <= cap:
            for j in range(n):
                new_docs[o + j] = post_docs[s + j]
        else:
            # O(n) selection of the cap-th largest weight (lists can hold most of the collection)
            w = post_weights[s : s + n]
            kth = np.partition(w, n - cap)[n - cap]
            n_gt = 0
            for j in range(n):
                n_gt += w[j] > kth
            ties = cap - n_gt
            m = 0
            for j in range(n):
                if w[j] > kth or (w[j] == kth and ties > 0):
                    if w[j] == kth:
                        ties -= 1
                    new_docs[o + m] = post_docs[s + j]
                    m += 1
    return new_ptr, new_docs


@njit_parallel
def top_terms(indptr, indices, data, doc_cut):
    """The ``doc_cut`` largest-weight terms of each row: (n_rows, doc_cut) int32 terms (-1 pad) and
    float32 weights (0 pad), in decreasing weight order (ties: lower term id first)."""
    n = indptr.shape[0] - 1
    out_t = np.full((n, doc_cut), -1, np.int32)
    out_w = np.zeros((n, doc_cut), np.float32)
    for r in prange(n):
        size = 0
        for e in range(indptr[r], indptr[r + 1]):
            w = data[e]
            if w <= 0:
                continue
            if size == doc_cut and w <= out_w[r, size - 1]:
                continue
            # insertion into the sorted top list (strictly greater moves ahead: ties keep term order)
            j = size if size < doc_cut else doc_cut - 1
            while j > 0 and out_w[r, j - 1] < w:
                if j < doc_cut:
                    out_w[r, j] = out_w[r, j - 1]
                    out_t[r, j] = out_t[r, j - 1]
                j -= 1
            out_w[r, j] = w
            out_t[r, j] = indices[e]
            if size < doc_cut:
                size += 1
    return out_t, out_w


# ---------------------------------------------------------------------------------------------
# Build: per-list clustering (shallow random k-means), blocking and summaries
# ---------------------------------------------------------------------------------------------
@njit
def _grow(arr, need):
    if need <= arr.shape[0]:
        return arr
    new = np.empty(max(need, 2 * arr.shape[0]), arr.dtype)
    new[: arr.shape[0]] = arr
    return new


@njit
def _minstd(state):
    return (state * _MINSTD_A) % _MINSTD_M


@njit
def energy_cut(vals, n, target):
    """Smallest prefix of ``vals[:n]`` sorted by decreasing value whose sum reaches ``target``.

    Returns ``(tau, m)``: the prefix is every value ``> tau`` plus ``m`` values ``== tau``. O(n): a
    256-bin histogram of counts and sums (branch-free), then a sort of the one bin where the prefix
    ends (Seismic sorts every summary: the bin holds a small fraction of the values). Values must
    be >= 0. With ``target <= 0`` the prefix is the single largest value; when every value is needed,
    ``tau = -1, m = 0``. ``vals`` is reordered.
    """
    if n == 0:
        return np.float32(-1.0), 0
    vmax = vals[0]
    for i in range(1, n):
        vmax = max(vmax, vals[i])
    if target <= 0 or vmax <= 0:
        return vmax, 1
    scale = 255.999 / vmax
    counts = np.zeros(256, np.int64)
    sums = np.zeros(256, np.float64)
    for i in range(n):
        b = int(vals[i] * scale)
        counts[b] += 1
        sums[b] += vals[i]
    acc = 0.0
    b = 255
    while b >= 0 and acc + sums[b] < target:
        acc += sums[b]
        b -= 1
    if b < 0:
        return np.float32(-1.0), 0
    # the prefix ends inside bin b: its values, largest first
    m_b = 0
    for i in range(n):
        if int(vals[i] * scale) == b:
            vals[m_b] = vals[i]
            m_b += 1
    in_bin = np.sort(vals[:m_b])[::-1]
    j = 0
    while j < m_b - 1 and acc + in_bin[j] < target:
        acc += in_bin[j]
        j += 1
    tau = in_bin[j]
    m = 1
    for i in range(j):
        if in_bin[i] == tau:
            m += 1
    return tau, m


@njit
def _assign(doc, cut_terms, cut_weights, c_cnt, c_start, c_cent, c_w, scores, n_cent, removed):
    """Centroid with the largest inner product with the doc's top terms (first one on ties)."""
    for ci in range(n_cent):
        scores[ci] = 0.0
    for j in range(cut_terms.shape[1]):
        t = cut_terms[doc, j]
        if t < 0:
            break
        w = cut_weights[doc, j]
        s = c_start[t]
        for e in range(s, s + c_cnt[t]):
            scores[c_cent[e]] += w * c_w[e]
    best = -1
    best_score = -1.0
    for ci in range(n_cent):
        if removed[ci]:
            continue
        if scores[ci] > best_score:
            best_score = scores[ci]
            best = ci
    return best


@njit
def build_lists(
    term_lo,
    term_hi,
    post_ptr,
    post_docs,
    doc_ptr,
    doc_terms,
    doc_weights,
    cut_terms,
    cut_weights,
    vocab_size,
    centroid_fraction,
    max_centroids,
    min_cluster_size,
    summary_energy,
    seed,
    block_id_like,
):
    """Cluster, block and summarize the posting lists of terms ``[term_lo, term_hi)``.

    Each list's docs (``post_docs`` slice, modified in place) are clustered by a shallow random
    k-means (Seismic, Bruch et al. SIGIR 2024): ``max(1, int(centroid_fraction * len))`` random docs
    of the list, at most ``max_centroids``, are centroids; each doc goes to the centroid with the
    largest inner product between the doc's top ``doc_cut`` terms and the centroid's full vector;
    clusters of ``<= min_cluster_size`` docs are dissolved and their docs reassigned to the rest. A block is a cluster (blocks
    in centroid doc order, docs in increasing order). A block's summary is the coordinate-wise max of
    its docs, cut to the largest components holding ``summary_energy`` of its L1 mass, quantized to
    u8 with the block's min and step ((max - min) / 255).

    ``block_id_like``: an array whose dtype stores block numbers within a list (e.g. uint8 when no
    list has more than 256 blocks). Returns per-list counts and concatenated outputs for the range:
    ``(list_nblocks, block_sizes, block_min, block_step, list_ncomps, comp_ids, comp_sizes,
    entry_blocks, entry_codes)``.
    """
    n_lists = term_hi - term_lo
    list_nblocks = np.zeros(n_lists, np.int64)
    list_ncomps = np.zeros(n_lists, np.int64)
    block_sizes = np.empty(1024, np.int32)
    block_min = np.empty(1024, np.float32)
    block_step = np.empty(1024, np.float32)
    comp_ids = np.empty(4096, np.int32)
    comp_sizes = np.empty(4096, np.int32)
    entry_blocks = np.empty(16384, block_id_like.dtype)  # narrowest type that holds the block ids
    entry_codes = np.empty(16384, np.uint8)
    nb_out = 0
    nc_out = 0
    ne_out = 0

    # scratch, reset after use by undoing only the touched entries
    dense = np.zeros(vocab_size, np.float32)  # coordinate-wise max of a block
    touched = np.empty(vocab_size, np.int32)
    vals = np.empty(vocab_size, np.float32)
    c_cnt = np.zeros(vocab_size, np.int64)  # centroid inverted index: per term count / start
    c_start = np.zeros(vocab_size, np.int64)
    c_fill = np.zeros(vocab_size, np.int64)
    c_touched = np.empty(vocab_size, np.int32)
    c_cent = np.empty(4096, np.int32)
    c_w = np.empty(4096, np.float32)
    scores = np.empty(16, np.float32)
    # per-list entries (term, block, code) before grouping by term
    l_terms = np.empty(16384, np.int32)
    l_blocks = np.empty(16384, np.int32)
    l_codes = np.empty(16384, np.uint8)

    for t in range(term_lo, term_hi):
        li = t - term_lo
        p0 = post_ptr[t]
        n = post_ptr[t + 1] - p0
        if n == 0:
            continue
        docs = post_docs[p0 : p0 + n]
        n_cent = min(max(1, int(centroid_fraction * n)), max_centroids, n)
        # --- random centroids: partial Fisher-Yates with a per-list MINSTD stream
        pos = np.arange(n)
        state = (np.int64(seed) * 1000003 + np.int64(t) * 7919 + 12345) % _MINSTD_M
        if state <= 0:
            state += 1
        for j in range(n_cent):
            state = _minstd(state)
            r = j + state % (n - j)
            tmp = pos[j]
            pos[j] = pos[r]
            pos[r] = tmp
        cents = np.sort(docs[pos[:n_cent]])
        # --- inverted index over the centroids' full vectors
        n_ct = 0
        total = 0
        for ci in range(n_cent):
            d = cents[ci]
            for e in range(doc_ptr[d], doc_ptr[d + 1]):
                tt = doc_terms[e]
                if c_cnt[tt] == 0:
                    c_touched[n_ct] = tt
                    n_ct += 1
                c_cnt[tt] += 1
                total += 1
        c_cent = _grow(c_cent, total)
        c_w = _grow(c_w, total)
        acc = 0
        for j in range(n_ct):
            tt = c_touched[j]
            c_start[tt] = acc
            c_fill[tt] = acc
            acc += c_cnt[tt]
        for ci in range(n_cent):
            d = cents[ci]
            for e in range(doc_ptr[d], doc_ptr[d + 1]):
                tt = doc_terms[e]
                c_cent[c_fill[tt]] = ci
                c_w[c_fill[tt]] = doc_weights[e]
                c_fill[tt] += 1
        # --- assignment
        scores = _grow(scores, n_cent)
        removed = np.zeros(n_cent, np.bool_)
        assign = np.empty(n, np.int32)
        for j in range(n):
            assign[j] = _assign(docs[j], cut_terms, cut_weights, c_cnt, c_start, c_cent, c_w, scores, n_cent, removed)
        sizes = np.zeros(n_cent, np.int64)
        for j in range(n):
            sizes[assign[j]] += 1
        n_removed = 0
        for ci in range(n_cent):
            if sizes[ci] <= min_cluster_size:
                removed[ci] = True
                n_removed += 1
        if n_removed == n_cent:
            for j in range(n):
                assign[j] = 0
        elif n_removed > 0:
            for j in range(n):
                if removed[assign[j]]:
                    assign[j] = _assign(docs[j], cut_terms, cut_weights, c_cnt, c_start, c_cent, c_w, scores, n_cent, removed)
        for j in range(n_ct):
            c_cnt[c_touched[j]] = 0
        # --- reorder the list by cluster (counting sort; stable, docs stay increasing in a block)
        sizes[:] = 0
        for j in range(n):
            sizes[assign[j]] += 1
        starts = np.zeros(n_cent + 1, np.int64)
        for ci in range(n_cent):
            starts[ci + 1] = starts[ci] + sizes[ci]
        ordered = np.empty(n, np.int32)
        fill = starts[:n_cent].copy()
        for j in range(n):
            ci = assign[j]
            ordered[fill[ci]] = docs[j]
            fill[ci] += 1
        docs[:] = ordered
        # --- blocks and their summaries
        n_le = 0
        nb = 0
        for ci in range(n_cent):
            if sizes[ci] == 0:
                continue
            block_sizes = _grow(block_sizes, nb_out + nb + 1)
            block_min = _grow(block_min, nb_out + nb + 1)
            block_step = _grow(block_step, nb_out + nb + 1)
            block_sizes[nb_out + nb] = sizes[ci]
            nt = 0
            for j in range(starts[ci], starts[ci + 1]):
                d = docs[j]
                for e in range(doc_ptr[d], doc_ptr[d + 1]):
                    # branch-free: record the term, count it only if it is new (and its weight > 0)
                    w = doc_weights[e]
                    tt = doc_terms[e]
                    old = dense[tt]
                    touched[nt] = tt
                    nt += (old == 0) & (w > 0)
                    dense[tt] = max(old, w)
            mass = 0.0
            for j in range(nt):
                v = dense[touched[j]]
                vals[j] = v
                mass += v
            tau, m = energy_cut(vals, nt, summary_energy * mass)
            mn = np.float32(np.inf)
            mx = np.float32(0.0)
            n_sel = 0
            ties = 0
            for j in range(nt):
                v = dense[touched[j]]
                keep = v > tau
                if not keep and v == tau and ties < m:
                    keep = True
                    ties += 1
                if keep:
                    touched[n_sel] = touched[j]  # compact in place (n_sel <= j)
                    n_sel += 1
                    if v < mn:
                        mn = v
                    if v > mx:
                        mx = v
                else:
                    dense[touched[j]] = 0.0
            step = (mx - mn) / np.float32(255.0)
            block_min[nb_out + nb] = mn
            block_step[nb_out + nb] = step
            l_terms = _grow(l_terms, n_le + n_sel)
            l_blocks = _grow(l_blocks, n_le + n_sel)
            l_codes = _grow(l_codes, n_le + n_sel)
            for j in range(n_sel):
                tt = touched[j]
                v = dense[tt]
                dense[tt] = 0.0
                code = 0
                if step > 0:
                    code = int(np.floor((v - mn) / step + 0.5))
                    if code > 255:
                        code = 255
                    if code < 0:
                        code = 0
                l_terms[n_le] = tt
                l_blocks[n_le] = nb
                l_codes[n_le] = code
                n_le += 1
            nb += 1
        list_nblocks[li] = nb
        nb_out += nb
        # --- invert the list's summaries: group entries by term (counting sort over touched terms)
        n_ct = 0
        for j in range(n_le):
            tt = l_terms[j]
            if c_cnt[tt] == 0:
                c_touched[n_ct] = tt
                n_ct += 1
            c_cnt[tt] += 1
        terms_sorted = np.sort(c_touched[:n_ct])
        comp_ids = _grow(comp_ids, nc_out + n_ct)
        comp_sizes = _grow(comp_sizes, nc_out + n_ct)
        acc = 0
        for j in range(n_ct):
            tt = terms_sorted[j]
            comp_ids[nc_out + j] = tt
            comp_sizes[nc_out + j] = c_cnt[tt]
            c_fill[tt] = ne_out + acc
            acc += c_cnt[tt]
        entry_blocks = _grow(entry_blocks, ne_out + n_le)
        entry_codes = _grow(entry_codes, ne_out + n_le)
        for j in range(n_le):
            tt = l_terms[j]
            entry_blocks[c_fill[tt]] = l_blocks[j]
            entry_codes[c_fill[tt]] = l_codes[j]
            c_fill[tt] += 1
        for j in range(n_ct):
            c_cnt[c_touched[j]] = 0
        list_ncomps[li] = n_ct
        nc_out += n_ct
        ne_out += n_le
    return (
        list_nblocks,
        block_sizes[:nb_out].copy(),
        block_min[:nb_out].copy(),
        block_step[:nb_out].copy(),
        list_ncomps,
        comp_ids[:nc_out].copy(),
        comp_sizes[:nc_out].copy(),
        entry_blocks[:ne_out].copy(),
        entry_codes[:ne_out].copy(),
    )


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------
@njit_inline
def _heap_worse(s1, d1, s2, d2):
    """(s1, d1) ranks below (s2, d2) in the (-score, docno) order."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit_inline
def heap_push(heap_scores, heap_docs, size, k, score, doc):
    """Offer (score, doc) to a fixed-size min-heap of the k best; returns the new size.

    The root is the worst kept entry in the (-score, docno) order, so ties resolve exactly as a
    full sort would.
    """
    if size < k:
        i = size
        while i > 0:
            parent = (i - 1) >> 1
            if _heap_worse(score, doc, heap_scores[parent], heap_docs[parent]):
                heap_scores[i] = heap_scores[parent]
                heap_docs[i] = heap_docs[parent]
                i = parent
            else:
                break
        heap_scores[i] = score
        heap_docs[i] = doc
        return size + 1
    if not _heap_worse(heap_scores[0], heap_docs[0], score, doc):
        return size
    i = 0
    while True:
        left = 2 * i + 1
        if left >= k:
            break
        child = left
        right = left + 1
        if right < k and _heap_worse(heap_scores[right], heap_docs[right], heap_scores[left], heap_docs[left]):
            child = right
        if _heap_worse(heap_scores[child], heap_docs[child], score, doc):
            heap_scores[i] = heap_scores[child]
            heap_docs[i] = heap_docs[child]
            i = child
        else:
            break
    heap_scores[i] = score
    heap_docs[i] = doc
    return size


@njit
def heap_write_sorted(heap_scores, heap_docs, size, out_docs, out_scores):
    """Write the heap's entries ordered by (-score, docno) into a (k,) row; pad with -1 / -inf."""
    k = out_docs.shape[0]
    for i in range(size):
        out_docs[i] = heap_docs[i]
        out_scores[i] = heap_scores[i]
    for i in range(1, size):  # insertion sort: k is small
        d = out_docs[i]
        s = out_scores[i]
        j = i
        while j > 0 and _heap_worse(out_scores[j - 1], out_docs[j - 1], s, d):
            out_docs[j] = out_docs[j - 1]
            out_scores[j] = out_scores[j - 1]
            j -= 1
        out_docs[j] = d
        out_scores[j] = s
    for i in range(size, k):
        out_docs[i] = -1
        out_scores[i] = -np.inf


@njit
def top_query_terms(q_terms, q_weights, query_cut):
    """Positions of the ``query_cut`` largest positive query weights, largest first (ties: lower term)."""
    n = q_terms.shape[0]
    order = np.argsort(-q_weights, kind="mergesort")
    m = 0
    while m < n and m < query_cut and q_weights[order[m]] > 0:
        m += 1
    return order[:m]


@njit_inline
def score_doc(d, fwd_ptr, fwd_terms, fwd_weights, dense_q):
    """Inner product of forward-index row ``d`` with a dense query (float32 accumulation).

    Four independent accumulators break the add-latency chain: 2.4x faster than one on float16
    rows (1.3 vs 3.1 ns per nonzero, scifact, measured), in a fixed order, so results stay
    deterministic (``fastmath`` was slower here and would make the order compiler-chosen).
    """
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    e = fwd_ptr[d]
    end = fwd_ptr[d + 1]
    while e + 4 <= end:
        w0, w1, w2, w3 = load_weights4(fwd_weights, e)
        s0 += dense_q[load_at(fwd_terms, e)] * w0
        s1 += dense_q[load_at(fwd_terms, e + 1)] * w1
        s2 += dense_q[load_at(fwd_terms, e + 2)] * w2
        s3 += dense_q[load_at(fwd_terms, e + 3)] * w3
        e += 4
    while e < end:
        s0 += dense_q[load_at(fwd_terms, e)] * load_weight(fwd_weights, e)
        e += 1
    return (s0 + s1) + (s2 + s3)


@njit_inline
def estimate_blocks(t, q_terms, q_weights, dense_q, ix, b0, nb, est, est_q):
    """Summary estimates of the ``nb`` blocks of term ``t``'s list (first block ``b0``) into ``est[:nb]``.

    The list's summary terms that are in the query (a scan against the dense query when the list
    has at most 8x as many summary terms as the query, else binary searches) have their (block, code)
    entries accumulated as ``sum(q * code)`` and ``sum(q)``: ``est = step * sum(q * code) + min * sum(q)``.
    ``ix``: the index's :class:`BlockedArrays`.
    """
    sum_comp_ids, sum_comp_ptr, sum_blocks, sum_codes = ix.sum_comp_ids, ix.sum_comp_ptr, ix.sum_blocks, ix.sum_codes
    for i in range(nb):
        est[i] = 0.0
        est_q[i] = 0.0
    c_lo = ix.sum_list_ptr[t]
    c_hi = ix.sum_list_ptr[t + 1]
    nq = q_terms.shape[0]
    if c_hi - c_lo <= 8 * nq:
        # short list of summary terms: one sequential pass, looking each up in the dense query
        # (cheaper than nq binary searches when the index is cold in cache)
        for c in range(c_lo, c_hi):
            qv = dense_q[sum_comp_ids[c]]
            if qv != 0:
                for e in range(sum_comp_ptr[c], sum_comp_ptr[c + 1]):
                    b = sum_blocks[e]
                    est[b] += qv * np.float32(sum_codes[e])
                    est_q[b] += qv
    else:
        lo = c_lo
        for j in range(nq):
            qt = q_terms[j]
            hi = c_hi
            while lo < hi:  # lower bound of qt in the list's sorted summary components
                mid = (lo + hi) >> 1
                if sum_comp_ids[mid] < qt:
                    lo = mid + 1
                else:
                    hi = mid
            if lo >= c_hi:
                break
            if sum_comp_ids[lo] == qt:
                qv = q_weights[j]
                for e in range(sum_comp_ptr[lo], sum_comp_ptr[lo + 1]):
                    b = sum_blocks[e]
                    est[b] += qv * np.float32(sum_codes[e])
                    est_q[b] += qv
    for i in range(nb):
        est[i] = est[i] * ix.block_step[b0 + i] + est_q[i] * ix.block_min[b0 + i]


@njit_inline
def score_block(b, k, ix, dense_q, visited, touched, n_touched, heap_scores, heap_docs, size):
    """Score block ``b``'s unvisited docs into the heap; returns ``(size, n_touched)``.

    Software prefetch three docs ahead (their forward-index offsets) and one doc ahead (every cache
    line of its row), so the random reads of a block overlap instead of queuing.
    """
    post_docs, fwd_ptr, fwd_terms, fwd_weights = ix.post_docs, ix.fwd_ptr, ix.fwd_terms, ix.fwd_weights
    p_end = ix.block_ptr[b + 1]
    p0 = ix.block_ptr[b]
    for p in range(p0, min(p0 + 3, p_end)):
        prefetch(fwd_ptr, post_docs[p])
    t_step = 64 // fwd_terms.itemsize
    w_step = 64 // fwd_weights.itemsize
    for p in range(p0, p_end):
        d = post_docs[p]
        if p + 3 < p_end:
            prefetch(fwd_ptr, post_docs[p + 3])
        if p + 1 < p_end:
            # every cache line of the next row, unless that doc was scored already: the hardware
            # prefetcher needs a few misses per stream before it follows a 0.5 KB row, and at 1M docs
            # rows come from DRAM (15% less time per query on a 250k-doc index, measured)
            d1 = post_docs[p + 1]
            if not (visited[d1 >> 6] & (np.uint64(1) << np.uint64(d1 & 63))):
                for off in range(fwd_ptr[d1], fwd_ptr[d1 + 1], t_step):
                    prefetch(fwd_terms, off)
                for off in range(fwd_ptr[d1], fwd_ptr[d1 + 1], w_step):
                    prefetch(fwd_weights, off)
        word = d >> 6
        bit = np.uint64(1) << np.uint64(d & 63)
        if visited[word] & bit:
            continue
        visited[word] |= bit
        touched[n_touched] = d
        n_touched += 1
        s = score_doc(d, fwd_ptr, fwd_terms, fwd_weights, dense_q)
        size = heap_push(heap_scores, heap_docs, size, k, s, np.int64(d))
    return size, n_touched


@njit
def search_query(q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, ix, sc, heap_scores,
                 heap_docs, out_docs, out_scores):  # fmt: skip
    """Top-k of one query (sorted term ids, positive weights) over the blocked index ``ix``
    (:class:`BlockedArrays`) with scratch ``sc`` (:class:`SearchScratch`).

    For each of the ``query_cut`` heaviest query terms: estimate every block of the term's list from
    its quantized summary (all query terms take part), skip a block when the heap holds k docs and the
    estimate is below ``heap_factor`` x the k-th score, and score the other blocks' docs exactly
    through the forward index (each doc once: ``visited`` bitset). ``sort_blocks``: 0 visits blocks
    in stored order, 1 visits the first list's blocks by decreasing estimate (Seismic), 2 every list's;
    3 visits the blocks of all ``query_cut`` lists in one decreasing-estimate order and stops at the
    first block the rule skips (every later one would be skipped too).
    ``use_summaries=False`` visits every block (exact when the lists are unpruned and ``query_cut``
    covers the query). Scratch (``dense_q``, ``visited``) is left all-zero on return.
    Returns the number of docs scored.
    """
    list_ptr = ix.list_ptr
    dense_q, visited, touched, est, est_q = sc.dense_q, sc.visited, sc.touched, sc.est, sc.est_q
    nq = q_terms.shape[0]
    for j in range(nq):
        dense_q[q_terms[j]] = q_weights[j]
    sel = top_query_terms(q_terms, q_weights, query_cut)
    size = 0
    n_touched = 0
    if use_summaries and sort_blocks == 3:
        total = 0
        for si in range(sel.shape[0]):
            t = q_terms[sel[si]]
            total += list_ptr[t + 1] - list_ptr[t]
        all_est = np.empty(total, np.float32)
        all_block = np.empty(total, np.int64)
        at = 0
        for si in range(sel.shape[0]):
            t = q_terms[sel[si]]
            b0 = list_ptr[t]
            nb = list_ptr[t + 1] - b0
            if nb == 0:
                continue
            estimate_blocks(t, q_terms, q_weights, dense_q, ix, b0, nb, est, est_q)
            for i in range(nb):
                all_est[at + i] = est[i]
                all_block[at + i] = b0 + i
            at += nb
        order = np.argsort(-all_est, kind="mergesort")  # stable: ties keep list order (numpy's tier 0 matches)
        for oi in range(total):
            i = order[oi]
            if size == k and all_est[i] < heap_factor * heap_scores[0]:
                break
            size, n_touched = score_block(all_block[i], k, ix, dense_q, visited, touched, n_touched, heap_scores,
                                          heap_docs, size)  # fmt: skip
    else:
        for si in range(sel.shape[0]):
            t = q_terms[sel[si]]
            b0 = list_ptr[t]
            nb = list_ptr[t + 1] - b0
            if nb == 0:
                continue
            if use_summaries:
                estimate_blocks(t, q_terms, q_weights, dense_q, ix, b0, nb, est, est_q)
                if sort_blocks == 2 or (sort_blocks == 1 and si == 0):
                    order = np.argsort(-est[:nb], kind="mergesort")
                else:
                    order = np.arange(nb)
            else:
                order = np.arange(nb)
            for oi in range(nb):
                i = order[oi]
                if use_summaries and size == k and est[i] < heap_factor * heap_scores[0]:
                    continue
                size, n_touched = score_block(b0 + i, k, ix, dense_q, visited, touched, n_touched, heap_scores,
                                              heap_docs, size)  # fmt: skip
    heap_write_sorted(heap_scores, heap_docs, size, out_docs, out_scores)
    for j in range(nq):
        dense_q[q_terms[j]] = 0.0
    for j in range(n_touched):
        visited[touched[j] >> 6] = np.uint64(0)
    return n_touched


@njit_inline
def _search_share(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, ix, sc, out_docs,
                  out_scores, n_scored, first, stride):  # fmt: skip
    """:func:`search_query` for queries ``first, first + stride, ...`` of a CSR batch, one after the other."""
    heap_scores = np.empty(k, np.float32)
    heap_docs = np.empty(k, np.int64)
    for qi in range(first, q_ptr.shape[0] - 1, stride):
        s, e = q_ptr[qi], q_ptr[qi + 1]
        n_scored[qi] = search_query(q_terms[s:e], q_weights[s:e], k, query_cut, heap_factor, use_summaries,
                                    sort_blocks, ix, sc, heap_scores, heap_docs, out_docs[qi], out_scores[qi])  # fmt: skip


@njit
def new_scratch(vocab_size, num_docs, max_blocks):
    """A :class:`SearchScratch` (``dense_q`` and ``visited`` zeroed) for an index of ``vocab_size`` terms,
    ``num_docs`` docs and at most ``max_blocks`` blocks per list."""
    return SearchScratch(
        np.zeros(vocab_size, np.float32),
        np.zeros((num_docs >> 6) + 1, np.uint64),
        np.empty(max(num_docs, 1), np.int32),
        np.empty(max(max_blocks, 1), np.float32),
        np.empty(max(max_blocks, 1), np.float32),
    )


@njit
def search_batch(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, index, scratch,
                 out_docs, out_scores, n_scored, first, stride):  # fmt: skip
    """:func:`search_query` over a CSR batch of queries, one after the other, with caller scratch
    (the low-overhead path: a single query costs one call and no allocation beyond the heap).

    ``index``: the :class:`BlockedArrays` fields as a plain tuple, ``scratch``: the :class:`SearchScratch`
    fields as a plain tuple (named tuples work too, but cost more to dispatch: numba's type fingerprint
    encodes every field name of a named tuple on every call, ~1.5 us for the 13 index arrays and ~0.9 us
    for the scratch, against ~0.1 us for plain tuples; see tests/test_kernel_dispatch.py).
    ``first``, ``stride``: search only queries ``first, first + stride, ...`` (a parallel worker's share;
    ``0, 1`` for all). Fills ``out_docs``/``out_scores`` rows (n_queries, k) and ``n_scored`` (docs scored
    per query). No defaults: a jitted kernel called with an omitted defaulted argument takes numba's slow
    dispatch path (~310 us per call against ~4 us; tests/test_kernel_dispatch.py guards this)."""
    _search_share(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks,
                  BlockedArrays(*index), SearchScratch(*scratch), out_docs, out_scores, n_scored, first, stride)  # fmt: skip


@njit_parallel
def search_batch_parallel(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, index,
                          vocab_size, num_docs, max_blocks, n_chunks, out_docs, out_scores, n_scored):  # fmt: skip
    """:func:`search_batch` parallel over queries: ``prange`` over ``n_chunks`` workers, worker ``c``
    taking queries ``c, c + n_chunks, ...`` (strided, so that costly queries spread evenly), each with
    its own scratch (allocated once per worker, not per query)."""
    ix = BlockedArrays(*index)
    nq = q_ptr.shape[0] - 1
    for c in prange(n_chunks):
        if c >= nq:
            continue
        sc = new_scratch(vocab_size, num_docs, max_blocks)
        _search_share(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, ix, sc,
                      out_docs, out_scores, n_scored, c, n_chunks)  # fmt: skip


@njit_parallel
def scan_batch(q_ptr, q_terms, q_weights, k, fwd_ptr, fwd_terms, fwd_weights, vocab_size, n_chunks, out_docs, out_scores):
    """Exact top-k by scoring every document through the forward index (docs with score > 0 only);
    ``prange`` over chunks of queries. The reference path when the posting lists were pruned."""
    nq = q_ptr.shape[0] - 1
    num_docs = fwd_ptr.shape[0] - 1
    for c in prange(n_chunks):
        lo = c * nq // n_chunks
        hi = (c + 1) * nq // n_chunks
        dense_q = np.zeros(vocab_size, np.float32)
        heap_scores = np.empty(k, np.float32)
        heap_docs = np.empty(k, np.int64)
        for qi in range(lo, hi):
            s, e = q_ptr[qi], q_ptr[qi + 1]
            for j in range(s, e):
                dense_q[q_terms[j]] = q_weights[j]
            size = 0
            for d in range(num_docs):
                sc = score_doc(d, fwd_ptr, fwd_terms, fwd_weights, dense_q)
                if sc > 0:
                    size = heap_push(heap_scores, heap_docs, size, k, sc, np.int64(d))
            heap_write_sorted(heap_scores, heap_docs, size, out_docs[qi], out_scores[qi])
            for j in range(s, e):
                dense_q[q_terms[j]] = 0.0


# ---------------------------------------------------------------------------------------------
# Masked search: documents excluded by a bitset (deleted, or outside a filter) are never scored
# ---------------------------------------------------------------------------------------------
# The unmasked kernels above are untouched (the masked case must not slow them down). The masked
# variant reuses the ``visited`` bitset of the scratch: it starts each query with ``visited`` equal to
# the exclusion bitset, so an excluded doc looks already scored and ``score_block`` skips it with the
# test it already makes; the query then ends by zeroing all of ``visited`` (one pass over
# ``num_docs / 64`` words) instead of only the words of the docs it touched.
@njit
def search_query_masked(q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, ix, sc, excluded,
                        heap_scores, heap_docs, out_docs, out_scores):  # fmt: skip
    """:func:`search_query` that never scores a doc whose bit is set in ``excluded`` (uint64, like ``visited``)."""
    visited = sc.visited
    for w in range(visited.shape[0]):
        visited[w] = excluded[w]
    n = search_query(q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, ix, sc, heap_scores,
                     heap_docs, out_docs, out_scores)  # fmt: skip
    for w in range(visited.shape[0]):
        visited[w] = np.uint64(0)
    return n


@njit_inline
def _search_share_masked(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, ix, sc,
                         excluded, out_docs, out_scores, n_scored, first, stride):  # fmt: skip
    heap_scores = np.empty(k, np.float32)
    heap_docs = np.empty(k, np.int64)
    for qi in range(first, q_ptr.shape[0] - 1, stride):
        s, e = q_ptr[qi], q_ptr[qi + 1]
        n_scored[qi] = search_query_masked(q_terms[s:e], q_weights[s:e], k, query_cut, heap_factor, use_summaries,
                                           sort_blocks, ix, sc, excluded, heap_scores, heap_docs, out_docs[qi],
                                           out_scores[qi])  # fmt: skip


@njit
def search_batch_masked(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, index, scratch,
                        excluded, out_docs, out_scores, n_scored, first, stride):  # fmt: skip
    """:func:`search_batch` skipping the docs set in ``excluded`` (uint64 bitset of ``(num_docs >> 6) + 1`` words)."""
    _search_share_masked(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks,
                         BlockedArrays(*index), SearchScratch(*scratch), excluded, out_docs, out_scores, n_scored, first,
                         stride)  # fmt: skip


@njit_parallel
def search_batch_parallel_masked(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, index,
                                 vocab_size, num_docs, max_blocks, n_chunks, excluded, out_docs, out_scores, n_scored):  # fmt: skip
    """:func:`search_batch_parallel` skipping the docs set in ``excluded``."""
    ix = BlockedArrays(*index)
    nq = q_ptr.shape[0] - 1
    for c in prange(n_chunks):
        if c >= nq:
            continue
        sc = new_scratch(vocab_size, num_docs, max_blocks)
        _search_share_masked(q_ptr, q_terms, q_weights, k, query_cut, heap_factor, use_summaries, sort_blocks, ix, sc,
                             excluded, out_docs, out_scores, n_scored, c, n_chunks)  # fmt: skip


@njit_parallel
def scan_batch_masked(q_ptr, q_terms, q_weights, k, fwd_ptr, fwd_terms, fwd_weights, vocab_size, n_chunks, excluded,
                      out_docs, out_scores):  # fmt: skip
    """:func:`scan_batch` skipping the docs set in ``excluded``."""
    nq = q_ptr.shape[0] - 1
    num_docs = fwd_ptr.shape[0] - 1
    for c in prange(n_chunks):
        lo = c * nq // n_chunks
        hi = (c + 1) * nq // n_chunks
        dense_q = np.zeros(vocab_size, np.float32)
        heap_scores = np.empty(k, np.float32)
        heap_docs = np.empty(k, np.int64)
        for qi in range(lo, hi):
            s, e = q_ptr[qi], q_ptr[qi + 1]
            for j in range(s, e):
                dense_q[q_terms[j]] = q_weights[j]
            size = 0
            for d in range(num_docs):
                if excluded[d >> 6] & (np.uint64(1) << np.uint64(d & 63)):
                    continue
                sc = score_doc(d, fwd_ptr, fwd_terms, fwd_weights, dense_q)
                if sc > 0:
                    size = heap_push(heap_scores, heap_docs, size, k, sc, np.int64(d))
            heap_write_sorted(heap_scores, heap_docs, size, out_docs[qi], out_scores[qi])
            for j in range(s, e):
                dense_q[q_terms[j]] = 0.0


@njit
def pack_excluded(excluded_bool, out_words):
    """Pack a bool array (True = excluded) into a uint64 bitset (bit ``d & 63`` of word ``d >> 6``)."""
    for w in range(out_words.shape[0]):
        out_words[w] = np.uint64(0)
    for d in range(excluded_bool.shape[0]):
        if excluded_bool[d]:
            out_words[d >> 6] |= np.uint64(1) << np.uint64(d & 63)
