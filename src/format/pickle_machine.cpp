#include "pickle_machine.hpp"

#include <algorithm>
#include <charconv>

#include "parse_util.hpp"

namespace tpde::format::detail::pickle {

machine::machine(std::span<const std::byte> pickle, limits l) : p_(pickle), lim_(l) {
    // Sized from what torch.save's pickles hold per byte, within the bounds: growing them
    // step by step cost as much as the parse.
    const std::size_t n = std::min(pickle.size(), lim_.tree_budget);
    nodes_.reserve(n / 8);
    children_.reserve(n / 3);
    texts_.reserve(n / 16);
    memo_.reserve(std::min(n / 8, lim_.memo));
}

std::uint8_t machine::u8() {
    return std::to_integer<std::uint8_t>(take(1)[0]);
}

template <typename T>
T machine::le() {
    T v = read_le<T>(p_, pos_);
    pos_ += sizeof(T);
    return v;
}

std::span<const std::byte> machine::take(std::uint64_t n) {
    auto s = sub(p_, pos_, n);
    pos_ += n;
    return s;
}

std::string_view machine::line() {
    auto rest = as_text(p_.subspan(std::min<std::size_t>(pos_, p_.size())));
    auto nl = rest.find('\n');
    if (nl == std::string_view::npos || nl > 256) throw format_error("bad pickle text line");
    pos_ += nl + 1;
    return rest.substr(0, nl);
}

void machine::push(value v) {
    if (stack_.size() >= lim_.stack) throw format_error("pickle nests too deep");
    stack_.push_back(v);
}

value machine::pop() {
    if (stack_.empty()) throw format_error("pickle stack underflow");
    value v = stack_.back();
    stack_.pop_back();
    return v;
}

const value& machine::top() const {
    if (stack_.empty()) throw format_error("pickle stack underflow");
    return stack_.back();
}

std::size_t machine::mark_index() const {
    for (auto i = stack_.size(); i-- > 0;)
        if (stack_[i].k == kind::mark) return i;
    throw format_error("pickle mark missing");
}

void machine::count(std::size_t n) {
    used_ += n;
    if (used_ > lim_.tree_budget) lean_ = true;
    if (used_ > 2 * lim_.tree_budget) throw format_error("pickle too large to follow");
}

value machine::new_node(kind k) {
    count(1);
    nodes_.push_back({k, no_node, no_node});
    value v;
    v.k = k;
    v.ref = static_cast<std::uint32_t>(nodes_.size() - 1);
    return v;
}

value machine::new_text(std::string_view s) {
    count(1);
    texts_.push_back(s);
    value v;
    v.k = kind::text;
    v.ref = static_cast<std::uint32_t>(texts_.size() - 1);
    return v;
}

value machine::new_integer(std::int64_t n) {
    value v;
    v.k = kind::integer;
    if (n >= INT32_MIN && n <= INT32_MAX) {
        v.ref = static_cast<std::uint32_t>(static_cast<std::int32_t>(n));
    } else {
        count(1);
        ints_.push_back(n);
        v.wide = 1;
        v.ref = static_cast<std::uint32_t>(ints_.size() - 1);
    }
    return v;
}

void machine::add_child(std::uint32_t n, value v, role r) {
    count(1);
    v.r = r;
    children_.push_back({v, no_node});
    const auto c = static_cast<std::uint32_t>(children_.size() - 1);
    auto& nd = nodes_[n];
    if (nd.last == no_node)
        nd.first = c;
    else
        children_[nd.last].next = c;
    nd.last = c;
}

value machine::collect(kind k, std::size_t from, bool mark) {
    const std::size_t end = stack_.size();
    value out{};
    // Tuples are kept even in lean mode: persistent ids are made of them.
    if (!lean_ || k == kind::tuple) {
        if (k == kind::dict && (end - from) % 2 != 0) throw format_error("pickle dict of odd size");
        out = new_node(k);
        for (std::size_t i = from; i < end; ++i)
            add_child(out.ref, stack_[i],
                      k == kind::dict ? ((i - from) % 2 == 0 ? role::key : role::val) : role::item);
    }
    stack_.resize(mark ? from - 1 : from);
    return out;
}

value machine::make_call(value callable, value args) {
    if (lean_) return {};
    auto v = new_node(kind::call);
    add_child(v.ref, callable, role::callable);
    add_child(v.ref, args, role::args);
    return v;
}

void machine::add_to(const value& target, std::size_t from, role r) {
    const std::size_t end = stack_.size();
    if (r == role::key && (end - from) % 2 != 0) throw format_error("pickle SETITEMS of odd size");
    const bool takes =
        !lean_ && ((r == role::key && (target.k == kind::dict || target.k == kind::call)) ||
                   (r == role::item && (target.k == kind::list || target.k == kind::call)));
    if (takes)
        for (std::size_t i = from; i < end; ++i)
            add_child(target.ref, stack_[i],
                      r == role::key ? ((i - from) % 2 == 0 ? role::key : role::val) : role::item);
}

void machine::memo_put(std::uint64_t idx) {
    if (idx >= lim_.memo) throw format_error("pickle memo index too large");
    if (memo_.size() <= idx) memo_.resize(idx + 1);
    memo_[idx] = top();
}

value machine::memo_get(std::uint64_t idx) const {
    if (idx >= memo_.size()) throw format_error("pickle memo index unset");
    return memo_[idx];
}

bool machine::is_global(const value& v, std::string_view module, std::string_view name) const {
    return v.k == kind::global && texts_[v.ref] == module && texts_[v.ref + 1] == name;
}

std::string machine::global_name(const value& v) const {
    if (v.k != kind::global) return {};
    return std::string(texts_[v.ref]) + "." + std::string(texts_[v.ref + 1]);
}

std::size_t machine::item_count(const value& v) const {
    if (v.k != kind::tuple && v.k != kind::list) return 0;
    std::size_t n = 0;
    for_each_child(v.ref, [&](const child& c) { n += c.v.r == role::item; });
    return n;
}

const value* machine::item(const value& v, std::size_t i) const {
    if (v.k != kind::tuple && v.k != kind::list) return nullptr;
    for (auto c = nodes_[v.ref].first; c != no_node; c = children_[c].next)
        if (children_[c].v.r == role::item && i-- == 0) return &children_[c].v;
    return nullptr;
}

value machine::run(const std::function<void(const value&)>& on_persid) {
    auto integer_of = [this](const value& v) { return integer(v); };
    auto integer = [&](std::int64_t n) { return new_integer(n); };
    auto text_integer = [&](std::string_view s) {
        if (!s.empty() && (s.back() == 'L')) s.remove_suffix(1); // protocol 0 LONG
        std::int64_t n = 0;
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
        return ec == std::errc() && p == s.data() + s.size() ? integer(n) : value{};
    };
    auto little = [&](std::span<const std::byte> bytes) {
        if (bytes.size() > 8) return value{};
        std::uint64_t u = 0;
        for (std::size_t i = 0; i < bytes.size(); ++i)
            u |= std::uint64_t{std::to_integer<std::uint8_t>(bytes[i])} << (8 * i);
        if (!bytes.empty() && bytes.size() < 8 &&
            (std::to_integer<std::uint8_t>(bytes.back()) & 0x80))
            u |= ~std::uint64_t{0} << (8 * bytes.size()); // sign-extend
        return integer(static_cast<std::int64_t>(u));
    };
    auto global = [&](std::string_view mod, std::string_view name) {
        count(2);
        texts_.push_back(mod);
        texts_.push_back(name);
        value v;
        v.k = kind::global;
        v.ref = static_cast<std::uint32_t>(texts_.size() - 2);
        return v;
    };
    auto persid = [&](value pid) {
        if (on_persid) on_persid(pid);
        if (lean_) return value{};
        auto v = new_node(kind::persid);
        add_child(v.ref, pid, role::item);
        return v;
    };
    while (true) {
        const auto op = u8();
        switch (op) {
        case 0x80: // PROTO
            u8();
            break;
        case 0x95: // FRAME
            take(8);
            break;
        case '.': // STOP
            return pop();
        case '(': // MARK
            push(value{kind::mark});
            break;
        case ')': // EMPTY_TUPLE
            push(collect(kind::tuple, stack_.size(), false));
            break;
        case '}': // EMPTY_DICT
            push(lean_ ? value{} : new_node(kind::dict));
            break;
        case ']': // EMPTY_LIST
            push(lean_ ? value{} : new_node(kind::list));
            break;
        case 'N':
        case 0x88: // NEWTRUE
        case 0x89: // NEWFALSE
        case 0x8f: // EMPTY_SET
        case 0x97: // NEXT_BUFFER
            push({});
            break;
        case 0x98: // READONLY_BUFFER
            top();
            break;
        case 'J': // BININT
            push(integer(static_cast<std::int32_t>(le<std::uint32_t>())));
            break;
        case 'K': // BININT1
            push(integer(u8()));
            break;
        case 'M': // BININT2
            push(integer(le<std::uint16_t>()));
            break;
        case 0x8a: // LONG1
            push(little(take(u8())));
            break;
        case 0x8b: // LONG4
            push(little(take(le<std::uint32_t>())));
            break;
        case 'I': // INT
        case 'L': // LONG
            push(text_integer(line()));
            break;
        case 'F': // FLOAT
            line();
            push({});
            break;
        case 'G': // BINFLOAT
            take(8);
            push({});
            break;
        case 'X': // BINUNICODE
        case 'T': // BINSTRING
            push(new_text(as_text(take(le<std::uint32_t>()))));
            break;
        case 0x8c: // SHORT_BINUNICODE
        case 'U':  // SHORT_BINSTRING
            push(new_text(as_text(take(u8()))));
            break;
        case 0x8d: // BINUNICODE8
            push(new_text(as_text(take(le<std::uint64_t>()))));
            break;
        case 'B': // BINBYTES
            take(le<std::uint32_t>());
            push({});
            break;
        case 'C': // SHORT_BINBYTES
            take(u8());
            push({});
            break;
        case 0x8e: // BINBYTES8
        case 0x96: // BYTEARRAY8
            take(le<std::uint64_t>());
            push({});
            break;
        case 0x82: // EXT1
            take(1);
            push({});
            break;
        case 0x83: // EXT2
            take(2);
            push({});
            break;
        case 0x84: // EXT4
            take(4);
            push({});
            break;
        case 'c': { // GLOBAL "module\nname\n"
            auto mod = line();
            auto name = line();
            push(global(mod, name));
            break;
        }
        case 0x93: { // STACK_GLOBAL
            auto name = pop();
            auto mod = pop();
            push(mod.k == kind::text && name.k == kind::text ? global(text(mod), text(name))
                                                             : value{});
            break;
        }
        case 'q': // BINPUT
            memo_put(u8());
            break;
        case 'r': // LONG_BINPUT
            memo_put(le<std::uint32_t>());
            break;
        case 0x94: // MEMOIZE
            memo_put(memo_.size());
            break;
        case 'p': { // PUT
            auto n = text_integer(line());
            if (n.k != kind::integer || integer_of(n) < 0) throw format_error("bad pickle PUT");
            memo_put(static_cast<std::uint64_t>(integer_of(n)));
            break;
        }
        case 'h': // BINGET
            push(memo_get(u8()));
            break;
        case 'j': // LONG_BINGET
            push(memo_get(le<std::uint32_t>()));
            break;
        case 'g': { // GET
            auto n = text_integer(line());
            if (n.k != kind::integer || integer_of(n) < 0) throw format_error("bad pickle GET");
            push(memo_get(static_cast<std::uint64_t>(integer_of(n))));
            break;
        }
        case 't': { // TUPLE
            auto m = mark_index();
            push(collect(kind::tuple, m + 1, true));
            break;
        }
        case 0x85: // TUPLE1
        case 0x86: // TUPLE2
        case 0x87: // TUPLE3
        {
            const std::size_t n = op - 0x84u;
            if (stack_.size() < n) throw format_error("pickle stack underflow");
            for (std::size_t i = stack_.size() - n; i < stack_.size(); ++i)
                if (stack_[i].k == kind::mark) throw format_error("pickle mark in a tuple");
            push(collect(kind::tuple, stack_.size() - n, false));
            break;
        }
        case 'l': { // LIST
            auto m = mark_index();
            push(collect(kind::list, m + 1, true));
            break;
        }
        case 'd': { // DICT
            auto m = mark_index();
            push(collect(kind::dict, m + 1, true));
            break;
        }
        case 'Q': // BINPERSID
            push(persid(pop()));
            break;
        case 'P': // PERSID
            push(persid(new_text(line())));
            break;
        case 'R':  // REDUCE
        case 0x81: // NEWOBJ
        {
            auto args = pop();
            auto callable = pop();
            push(make_call(callable, args));
            break;
        }
        case 0x92: { // NEWOBJ_EX
            pop();   // kwargs
            auto args = pop();
            auto cls = pop();
            push(make_call(cls, args));
            break;
        }
        case 'i': { // INST
            auto mod = line();
            auto name = line();
            auto m = mark_index();
            auto args = collect(kind::tuple, m + 1, true);
            push(make_call(global(mod, name), args));
            break;
        }
        case 'o': { // OBJ
            auto m = mark_index();
            if (m + 1 >= stack_.size()) throw format_error("pickle OBJ without a class");
            auto cls = stack_[m + 1];
            auto args = collect(kind::tuple, m + 2, false);
            stack_.pop_back(); // cls
            stack_.pop_back(); // mark
            push(make_call(cls, args));
            break;
        }
        case 'b': { // BUILD
            auto state = pop();
            const auto& target = top();
            if (!lean_ && (target.k == kind::call || target.k == kind::dict))
                add_child(target.ref, state, role::state);
            break;
        }
        case 's': { // SETITEM
            if (stack_.size() < 3) throw format_error("pickle stack underflow");
            const auto from = stack_.size() - 2;
            if (stack_[from].k == kind::mark || stack_[from + 1].k == kind::mark)
                throw format_error("pickle mark in SETITEM");
            add_to(stack_[from - 1], from, role::key);
            stack_.resize(from);
            break;
        }
        case 'u': { // SETITEMS
            auto m = mark_index();
            if (m == 0) throw format_error("pickle stack underflow");
            add_to(stack_[m - 1], m + 1, role::key);
            stack_.resize(m);
            break;
        }
        case 'a': { // APPEND
            if (stack_.size() < 2) throw format_error("pickle stack underflow");
            const auto from = stack_.size() - 1;
            if (stack_[from].k == kind::mark) throw format_error("pickle mark in APPEND");
            add_to(stack_[from - 1], from, role::item);
            stack_.resize(from);
            break;
        }
        case 'e': { // APPENDS
            auto m = mark_index();
            if (m == 0) throw format_error("pickle stack underflow");
            add_to(stack_[m - 1], m + 1, role::item);
            stack_.resize(m);
            break;
        }
        case 0x90: { // ADDITEMS
            auto m = mark_index();
            if (m == 0) throw format_error("pickle stack underflow");
            stack_.resize(m);
            break;
        }
        case 0x91: { // FROZENSET
            auto m = mark_index();
            stack_.resize(m);
            push({});
            break;
        }
        case '0': // POP
            pop();
            break;
        case '1': // POP_MARK
            stack_.resize(mark_index());
            break;
        case '2': // DUP
            push(top());
            break;
        default:
            throw format_error("pickle opcode not understood: " + std::to_string(op));
        }
    }
}

} // namespace tpde::format::detail::pickle
