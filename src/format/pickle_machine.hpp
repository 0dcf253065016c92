#pragma once
// A small pickle machine for untrusted input: no Python runs, nothing is imported or called.
// It builds the object tree the pickle describes as far as checkpoint parsers need it —
// dicts, lists, tuples, strings, integers, calls (REDUCE/NEWOBJ of a named global, with the
// items and BUILD state added to their result) and persistent ids — and refuses opcodes it
// does not know. Values refer to nodes and to strings inside the pickle, so DUP and memo gets
// copy nothing. Memory is bounded: past `tree_budget` entries the tree stops growing
// (containers become opaque, `lean()` is true) and only tuples and persistent ids are still
// built; past twice that the pickle is refused.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tpde::format::detail::pickle {

enum class kind : std::uint8_t {
    other, // anything not tracked (None, floats, bytes, sets, or a container in lean mode)
    mark,
    integer,
    text,
    global, // module and name
    tuple,
    list,
    dict,
    call,   // callable(*args), then list items, dict entries and BUILD states added to it
    persid, // a persistent id (torch: a storage)
};

inline constexpr std::uint32_t no_node = 0xffffffffu;

// How a child belongs to its node. Tuples and lists have items; dicts key/value pairs; a call
// its callable, its arguments (a value, usually a tuple), then items, key/value pairs and
// states in the order the pickle added them; a persid its id.
enum class role : std::uint8_t { item, key, val, callable, args, state };

// 8 bytes: the machine's memory is mostly values, and every page it first touches costs a
// page fault (~0.4 ms for the 50 pages a 24 kB torch pickle took with 16-byte values).
struct value {
    kind k{kind::other};
    std::uint8_t wide{0}; // integer: 1 when `ref` indexes the machine's 64-bit integers
    role r{role::item};   // as a child: how it belongs to its node
    std::uint8_t spare{0};
    // text/global: index into the texts; tuple/list/dict/call/persid: node; integer: its
    // value (two's complement, when it fits 32 bits) or index
    std::uint32_t ref{0};
};

struct child {
    value v;
    std::uint32_t next{no_node};
};

struct node {
    kind k{kind::other};
    std::uint32_t first{no_node}, last{no_node};
};

struct limits {
    std::size_t stack{1u << 16};
    std::size_t memo{1u << 20};
    // Nodes, children, strings and wide integers the tree may hold (8-16 bytes each) before it
    // stops growing: enough for ~30000 tensors with their names (torch.save writes ~32 per tensor).
    // At most twice this is ever held: ~25 MB.
    std::size_t tree_budget{1u << 20};
};

class machine {
public:
    explicit machine(std::span<const std::byte> pickle, limits l = {});
    // Runs to STOP and returns the top-level object. Throws format_error on anything it does
    // not understand or that breaks a bound. `on_persid` sees every persistent id as it is
    // loaded (also in lean mode), in pickle order.
    value run(const std::function<void(const value&)>& on_persid = {});

    bool lean() const { return lean_; }
    const node& at(std::uint32_t n) const { return nodes_[n]; }
    const child& child_at(std::uint32_t c) const { return children_[c]; }
    std::size_t node_count() const { return nodes_.size(); }
    std::string_view text(const value& v) const { return texts_[v.ref]; }
    std::int64_t integer(const value& v) const {
        return v.wide ? ints_[v.ref] : static_cast<std::int32_t>(v.ref);
    }
    // "module.name" of a global.
    bool is_global(const value& v, std::string_view module, std::string_view name) const;
    std::string global_name(const value& v) const;
    // Items of a tuple or list (nullptr: not one, or no such item).
    const value* item(const value& v, std::size_t i) const;
    std::size_t item_count(const value& v) const;
    // For each child of node n, in order.
    template <typename F>
    void for_each_child(std::uint32_t n, F&& f) const {
        for (auto c = nodes_[n].first; c != no_node; c = children_[c].next) f(children_[c]);
    }

private:
    std::uint8_t u8();
    template <typename T>
    T le();
    std::span<const std::byte> take(std::uint64_t n);
    std::string_view line();
    void push(value v);
    value pop();
    const value& top() const;
    std::size_t mark_index() const; // position of the topmost mark on the stack
    void count(std::size_t n);
    value new_node(kind k);
    value new_text(std::string_view s);
    value new_integer(std::int64_t n);
    void add_child(std::uint32_t n, value v, role r);
    // A tuple/list/dict of the stack's items from `from` on, which are removed with the mark
    // below them (mark = true) or without (mark = false: TUPLE1-3).
    value collect(kind k, std::size_t from, bool mark);
    value make_call(value callable, value args);
    void add_to(const value& target, std::size_t from, role r); // SETITEMS, APPENDS
    void memo_put(std::uint64_t idx);
    value memo_get(std::uint64_t idx) const;

    std::span<const std::byte> p_;
    limits lim_;
    std::uint64_t pos_{0};
    std::vector<value> stack_;
    std::vector<value> memo_;
    std::vector<node> nodes_;
    std::vector<child> children_;
    std::vector<std::string_view> texts_;
    std::vector<std::int64_t> ints_; // integers that do not fit 32 bits
    std::size_t used_{0};
    bool lean_{false};
};

} // namespace tpde::format::detail::pickle
