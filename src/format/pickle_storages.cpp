#include "pickle_storages.hpp"

#include <algorithm>
#include <variant>
#include <vector>

#include "parse_util.hpp"

namespace tpde::format::detail {
namespace {

// The few kinds of value the machine tracks; anything else is `other`.
struct other {};
struct mark {};
struct global {
    std::string name; // "module.name"
};
struct tuple {
    std::vector<std::variant<other, std::string, global, std::int64_t>> items;
};
using value = std::variant<other, mark, std::string, global, std::int64_t, tuple>;

constexpr std::size_t max_stack = 1 << 16;
constexpr std::size_t max_memo = 1 << 20;

struct storage_kind {
    const char* name;
    std::optional<codec::element_type> type;
    unsigned size;
};
constexpr storage_kind storage_kinds[] = {
    {"torch.FloatStorage", codec::element_type::f32, 4},
    {"torch.BFloat16Storage", codec::element_type::bf16, 2},
    {"torch.HalfStorage", codec::element_type::f16, 2},
    {"torch.DoubleStorage", codec::element_type::f64, 8},
    {"torch.ByteStorage", codec::element_type::bytes, 1},
    {"torch.CharStorage", codec::element_type::bytes, 1},
    {"torch.BoolStorage", codec::element_type::bytes, 1},
    {"torch.LongStorage", std::nullopt, 8},
    {"torch.IntStorage", std::nullopt, 4},
    {"torch.ShortStorage", std::nullopt, 2},
    {"torch.ComplexFloatStorage", std::nullopt, 8},
    {"torch.ComplexDoubleStorage", std::nullopt, 16},
};

class machine {
public:
    explicit machine(std::span<const std::byte> p) : p_(p) {}

    std::map<std::string, storage_info> run() {
        while (true) {
            auto op = u8();
            switch (op) {
            case 0x80:
                u8();
                break; // PROTO
            case 0x95:
                skip(8);
                break; // FRAME
            case '.':
                return std::move(types_); // STOP
            case '(':
                push(mark{});
                break; // MARK
            case ')':
                push(tuple{});
                break; // EMPTY_TUPLE
            case '}':
            case ']':
            case 'N':
            case 0x88:
            case 0x89:
                push(other{});
                break;
            case 'J':
                push(std::int64_t{static_cast<std::int32_t>(le<std::uint32_t>())});
                break;
            case 'K':
                push(std::int64_t{u8()});
                break;
            case 'M':
                push(std::int64_t{le<std::uint16_t>()});
                break;
            case 0x8a: { // LONG1
                auto n = u8();
                std::int64_t v = 0;
                auto bytes = take(n);
                for (std::size_t i = 0; i < bytes.size() && i < 8; ++i)
                    v |= std::int64_t{std::to_integer<std::uint8_t>(bytes[i])} << (8 * i);
                push(v);
                break;
            }
            case 'G':
                skip(8);
                push(other{});
                break; // BINFLOAT
            case 'X':
                push(std::string(as_text(take(le<std::uint32_t>()))));
                break; // BINUNICODE
            case 0x8c:
                push(std::string(as_text(take(u8()))));
                break; // SHORT_BINUNICODE
            case 'B':
                take(le<std::uint32_t>());
                push(other{});
                break; // BINBYTES
            case 'C':
                take(u8());
                push(other{});
                break;  // SHORT_BINBYTES
            case 'c': { // GLOBAL "module\nname\n"
                auto mod = line();
                auto name = line();
                push(global{mod + "." + name});
                break;
            }
            case 0x93: { // STACK_GLOBAL
                auto name = pop();
                auto mod = pop();
                auto* m = std::get_if<std::string>(&mod);
                auto* n = std::get_if<std::string>(&name);
                push(m && n ? value{global{*m + "." + *n}} : value{other{}});
                break;
            }
            case 'q':
                memo_put(u8());
                break; // BINPUT
            case 'r':
                memo_put(le<std::uint32_t>());
                break; // LONG_BINPUT
            case 0x94:
                memo_put(memo_.size());
                break; // MEMOIZE
            case 'h':
                push(memo_get(u8()));
                break; // BINGET
            case 'j':
                push(memo_get(le<std::uint32_t>()));
                break; // LONG_BINGET
            case 't':
                push(make_tuple(pop_to_mark()));
                break; // TUPLE
            case 0x85:
                push(make_tuple(pop_n(1)));
                break; // TUPLE1
            case 0x86:
                push(make_tuple(pop_n(2)));
                break; // TUPLE2
            case 0x87:
                push(make_tuple(pop_n(3)));
                break; // TUPLE3
            case 'Q':
                persistent_id(pop());
                push(other{});
                break; // BINPERSID
            case 'R':
                pop();
                pop();
                push(other{});
                break; // REDUCE
            case 0x81:
                pop();
                pop();
                push(other{});
                break; // NEWOBJ
            case 'b':
                pop();
                break; // BUILD
            case 's':
                pop();
                pop();
                break; // SETITEM
            case 'u':
            case 'e':
                pop_to_mark();
                break; // SETITEMS, APPENDS
            case 'a':
                pop();
                break; // APPEND
            case 'l':
            case 'd':
                pop_to_mark();
                push(other{});
                break; // LIST, DICT
            case '0':
                pop();
                break; // POP
            case '1':
                pop_to_mark();
                break; // POP_MARK
            case '2':
                push(top());
                break; // DUP
            default:
                throw format_error("pickle opcode not understood: " + std::to_string(op));
            }
        }
    }

private:
    std::uint8_t u8() { return std::to_integer<std::uint8_t>(take(1)[0]); }
    template <typename T>
    T le() {
        T v = read_le<T>(p_, pos_);
        pos_ += sizeof(T);
        return v;
    }
    std::span<const std::byte> take(std::uint64_t n) {
        auto s = sub(p_, pos_, n);
        pos_ += n;
        return s;
    }
    void skip(std::uint64_t n) { take(n); }
    std::string line() {
        auto rest = as_text(p_.subspan(std::min<std::size_t>(pos_, p_.size())));
        auto nl = rest.find('\n');
        if (nl == std::string_view::npos || nl > 256) throw format_error("bad pickle GLOBAL");
        pos_ += nl + 1;
        return std::string(rest.substr(0, nl));
    }
    void push(value v) {
        if (stack_.size() >= max_stack) throw format_error("pickle nests too deep");
        stack_.push_back(std::move(v));
    }
    value pop() {
        if (stack_.empty()) throw format_error("pickle stack underflow");
        value v = std::move(stack_.back());
        stack_.pop_back();
        return v;
    }
    const value& top() const {
        if (stack_.empty()) throw format_error("pickle stack underflow");
        return stack_.back();
    }
    std::vector<value> pop_to_mark() {
        std::vector<value> items;
        while (true) {
            value v = pop();
            if (std::holds_alternative<mark>(v)) break;
            items.push_back(std::move(v));
        }
        std::reverse(items.begin(), items.end());
        return items;
    }
    std::vector<value> pop_n(std::size_t n) {
        std::vector<value> items(n);
        for (std::size_t i = n; i-- > 0;) items[i] = pop();
        return items;
    }
    static value make_tuple(std::vector<value> items) {
        // A persistent id has five items; keeping no more bounds what DUP can copy.
        if (items.size() > 5) items.resize(5);
        tuple t;
        for (auto& v : items) {
            if (auto* s = std::get_if<std::string>(&v))
                t.items.emplace_back(*s);
            else if (auto* g = std::get_if<global>(&v))
                t.items.emplace_back(*g);
            else if (auto* i = std::get_if<std::int64_t>(&v))
                t.items.emplace_back(*i);
            else
                t.items.emplace_back(other{});
        }
        return t;
    }
    void memo_put(std::uint64_t idx) {
        if (idx >= max_memo) throw format_error("pickle memo index too large");
        if (memo_.size() <= idx) memo_.resize(idx + 1);
        // Tuples are not needed from the memo; keeping them could copy without bound.
        memo_[idx] = std::holds_alternative<tuple>(top()) ? value{other{}} : top();
    }
    value memo_get(std::uint64_t idx) {
        if (idx >= memo_.size()) throw format_error("pickle memo index unset");
        return memo_[idx];
    }
    void persistent_id(const value& v) {
        auto* t = std::get_if<tuple>(&v);
        if (!t || t->items.size() < 3) return;
        auto* tag = std::get_if<std::string>(&t->items[0]);
        auto* type = std::get_if<global>(&t->items[1]);
        auto* key = std::get_if<std::string>(&t->items[2]);
        if (!tag || *tag != "storage" || !type || !key) return;
        storage_info info;
        for (const auto& k : storage_kinds) {
            if (type->name != k.name) continue;
            info.type = k.type;
            auto* numel = t->items.size() > 4 ? std::get_if<std::int64_t>(&t->items[4]) : nullptr;
            if (numel && *numel >= 0 && std::uint64_t(*numel) <= (std::uint64_t{1} << 56) / k.size)
                info.bytes = std::uint64_t(*numel) * k.size;
        }
        types_[*key] = info;
    }

    std::span<const std::byte> p_;
    std::uint64_t pos_{0};
    std::vector<value> stack_;
    std::vector<value> memo_;
    std::map<std::string, storage_info> types_;
};

} // namespace

std::map<std::string, storage_info> storage_types(std::span<const std::byte> pickle) {
    return machine(pickle).run();
}

} // namespace tpde::format::detail
