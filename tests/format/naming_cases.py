"""State-dict changes that renumber torch.save's storages, as real runs make them: an entry
added, removed, renamed or reordered, optimizer state rebuilt or nested, weights tied, an
embedding resized. Shared by tests/format/format_test.py (small models it trains itself) and
scripts/bench/format_bench.py (the real trajectories).

A case is (name, prep, modify, reference): `prep` is applied to both files of a pair (what
the run's checkpoints look like: nested optimizer state, tied weights), `modify` to the newer
file only (what changed between the two saves). The case's reference pair is
reference(PREV), reference(NEW), with reference = prep unless given: its ratio is what the
modified pair should keep. A removal's reference removes the entry from both files (what is
left, with nothing renumbered), so the removed tensor's own ratio does not count.
"""
import collections

import torch


def _model(state):
    return state["model"] if isinstance(state, dict) and "model" in state else state


def _with_model(state, model):
    if isinstance(state, dict) and "model" in state:
        out = dict(state)
        out["model"] = model
        return out
    return model


def _od(items):
    return collections.OrderedDict(items)


def _extra(like):
    g = torch.Generator().manual_seed(7)
    return torch.randn(16, like.shape[-1] if like.dim() else 16, generator=g).to(like.dtype)


def insert_at(fraction):
    def modify(state):
        m = _model(state)
        items = list(m.items())
        at = int(len(items) * fraction)
        first = next(v for _, v in items if torch.is_tensor(v))
        items.insert(at, ("adapter.inserted.weight", _extra(first)))
        return _with_model(state, _od(items))
    return modify


def remove_first(state):
    items = list(_model(state).items())
    return _with_model(state, _od(items[1:]))


def reverse(state):
    return _with_model(state, _od(reversed(list(_model(state).items()))))


def renamed(state):
    # DistributedDataParallel's prefix: every name changes, every position stays.
    return _with_model(state, _od(("module." + k, v) for k, v in _model(state).items()))


def optimizer_rebuilt(state):
    # Param groups rebuilt: the optimizer's per-parameter state written in another order.
    if not (isinstance(state, dict) and "optimizer" in state):
        return None
    opt = dict(state["optimizer"])
    opt["state"] = dict(reversed(list(opt["state"].items())))
    out = dict(state)
    out["optimizer"] = opt
    return out


def nested(state):
    # Optimizer state one level deeper, in a list (several optimizers, as Lightning keeps them).
    if not (isinstance(state, dict) and "optimizer" in state):
        return None
    out = {k: v for k, v in state.items() if k != "optimizer"}
    out["optimizer_states"] = [state["optimizer"]]
    return out


def tied(state):
    # The output projection shares the token embedding's storage (tied weights).
    m = _model(state)
    names = [k for k, v in m.items() if torch.is_tensor(v) and v.dim() == 2]
    pair = next(((a, b) for a in names for b in names[::-1]
                 if a != b and m[a].shape == m[b].shape and m[a].dtype == m[b].dtype), None)
    if pair is None:
        return None
    items = [(k, m[pair[0]] if k == pair[1] else v) for k, v in m.items()]
    return _with_model(state, _od(items))


def resized_embedding(rows=8):
    """The first 2-d tensor (a token embedding) gains `rows` rows, as resize_token_embeddings
    does; its optimizer moments gain zero rows."""
    def modify(state):
        m = _model(state)
        keys = list(m.keys())
        name = next(k for k in keys if torch.is_tensor(m[k]) and m[k].dim() == 2)
        w = m[name]
        g = torch.Generator().manual_seed(11)
        grown = torch.cat([w, (0.02 * torch.randn(rows, w.shape[1], generator=g)).to(w.dtype)])
        items = [(k, grown if k == name else v) for k, v in m.items()]
        out = _with_model(state, _od(items))
        if isinstance(out, dict) and "optimizer" in out:
            opt = dict(out["optimizer"])
            st = dict(opt["state"])
            idx = keys.index(name)
            if idx in st:
                s = dict(st[idx])
                for k, v in s.items():
                    if torch.is_tensor(v) and v.shape == w.shape:
                        s[k] = torch.cat([v, torch.zeros(rows, v.shape[1], dtype=v.dtype)])
                st[idx] = s
            opt["state"] = st
            out["optimizer"] = opt
        return out
    return modify


def identity(state):
    return state


CASES = [
    ("inserted at the front", identity, insert_at(0.0), None),
    ("inserted in the middle", identity, insert_at(0.5), None),
    ("inserted at the end", identity, insert_at(1.0), None),
    ("first entry removed", identity, remove_first, remove_first),
    ("keys in reverse order", identity, reverse, None),
    ("keys renamed (module. prefix)", identity, renamed, None),
    ("optimizer state reordered", identity, optimizer_rebuilt, None),
    ("nested optimizer state, inserted at the front", nested, insert_at(0.0), None),
    ("tied weights, inserted at the front", tied, insert_at(0.0), None),
    ("embedding resized (+8 rows)", identity, resized_embedding(8), None),
]


def write_case(prev_state, new_state, prep, modify, reference, paths):
    """Writes paths["prev"] = prep(PREV), paths["new"] = modify(prep(NEW)) (the modified
    pair) and paths["ref_prev"], paths["ref_new"] (the reference pair; for the default
    reference the same files as prev and prep(NEW)). Returns False where the case does not
    apply to this checkpoint."""
    p, n = prep(prev_state), prep(new_state)
    if p is None or n is None:
        return False
    m = modify(n)
    if m is None:
        return False
    torch.save(p, paths["prev"])
    torch.save(m, paths["new"])
    if reference is None:
        torch.save(n, paths["ref_new"])
        paths["ref_prev"] = paths["prev"]
    else:
        rp, rn = reference(prev_state), reference(new_state)
        torch.save(rp, paths["ref_prev"])
        torch.save(rn, paths["ref_new"])
    return True
