#include "pickle_storages.hpp"

#include <unordered_set>
#include <vector>

#include "parse_util.hpp"
#include "pickle_machine.hpp"

namespace tpde::format::detail {
namespace {

using pickle::kind;
using pickle::role;
using pickle::value;

struct storage_kind {
    const char* name; // in module torch
    std::optional<codec::element_type> type;
    unsigned size;
};
constexpr storage_kind storage_kinds[] = {
    {"FloatStorage", codec::element_type::f32, 4},
    {"BFloat16Storage", codec::element_type::bf16, 2},
    {"HalfStorage", codec::element_type::f16, 2},
    {"DoubleStorage", codec::element_type::f64, 8},
    {"ByteStorage", codec::element_type::bytes, 1},
    {"CharStorage", codec::element_type::bytes, 1},
    {"BoolStorage", codec::element_type::bytes, 1},
    {"LongStorage", std::nullopt, 8},
    {"IntStorage", std::nullopt, 4},
    {"ShortStorage", std::nullopt, 2},
    {"ComplexFloatStorage", std::nullopt, 8},
    {"ComplexDoubleStorage", std::nullopt, 16},
};

constexpr std::uint64_t max_bytes = std::uint64_t{1} << 56;
constexpr std::size_t max_name = 1024; // longer paths leave their storages unnamed

struct storage_facts {
    storage_info info;
    unsigned element_size{0};
    bool referenced{false}; // met by the naming walk (named or not, it keeps its first path)
};

// The key of a persistent id ('storage', GLOBAL torch.XStorage, key, location, numel), and
// what it says of the storage.
const value* storage_key(const pickle::machine& m, const value& pid) {
    auto* tag = m.item(pid, 0);
    auto* key = m.item(pid, 2);
    if (!tag || tag->k != kind::text || m.text(*tag) != "storage" || !key || key->k != kind::text)
        return nullptr;
    return key;
}

void record_storage(const pickle::machine& m, const value& pid,
                    std::map<std::string, storage_facts>& out) {
    auto* key = storage_key(m, pid);
    auto* type = m.item(pid, 1);
    if (!key || !type || type->k != kind::global) return;
    storage_facts f;
    for (const auto& k : storage_kinds) {
        if (!m.is_global(*type, "torch", k.name)) continue;
        f.info.type = k.type;
        f.element_size = k.size;
        auto* numel = m.item(pid, 4);
        if (numel && numel->k == kind::integer && m.integer(*numel) >= 0 &&
            std::uint64_t(m.integer(*numel)) <= max_bytes / k.size)
            f.info.bytes = std::uint64_t(m.integer(*numel)) * k.size;
    }
    out[std::string(m.text(*key))] = std::move(f);
}

// Names every storage by the path of its first reference: a walk of the object tree in the
// order the pickle wrote it (depth first, items in order), with one path string grown and cut
// back as it goes (no per-node copies), and each node entered once.
class namer {
public:
    namer(const pickle::machine& m, std::map<std::string, storage_facts>& s)
        : m_(m), storages_(s), entered_(m.node_count(), false) {}

    void walk(const value& root) {
        visit(root, false);
        while (!stack_.empty()) {
            auto& f = stack_.back();
            if (f.cursor == pickle::no_node) {
                stack_.pop_back();
                continue;
            }
            const auto& c = m_.child_at(f.cursor);
            f.cursor = c.next;
            path_.resize(f.path_len);
            bad_ = f.bad;
            const kind k = m_.at(f.node).k;
            switch (c.v.r) {
            case role::item:
                if (k == kind::persid) break; // its id: handled when the persid was met
                if (!f.transparent) component(std::to_string(f.index++));
                visit(c.v, false);
                break;
            case role::key:
                f.key = c.v;
                break;
            case role::val:
                if (f.key.k == kind::text)
                    component(m_.text(f.key));
                else if (f.key.k == kind::integer)
                    component(std::to_string(m_.integer(f.key)));
                else
                    bad_ = true; // a tuple or object as key: no name below it
                visit(c.v, false);
                break;
            case role::args:  // a call's arguments and its state name nothing of their own
            case role::state: // (a tensor in a Parameter, attributes of an object)
                visit(c.v, true);
                break;
            case role::callable:
                break;
            }
        }
    }

private:
    struct frame {
        std::uint32_t node;
        std::uint32_t cursor;
        std::size_t path_len;
        bool bad;
        bool transparent;
        std::uint32_t index{0};
        value key{};
    };

    void component(std::string_view s) {
        if (bad_) return; // nothing below is named: the path need not grow (a deep nest)
        if (!path_.empty()) path_ += '.';
        path_ += s;
        if (path_.size() > max_name) bad_ = true;
    }

    bool enter(const value& v) {
        if (entered_[v.ref]) return false;
        entered_[v.ref] = true;
        return true;
    }

    // `transparent`: the items of this tuple add no path component (a call's arguments).
    void visit(const value& v, bool transparent) {
        switch (v.k) {
        case kind::persid:
            if (enter(v)) {
                const auto& c = m_.child_at(m_.at(v.ref).first);
                reference(c.v, nullptr);
            }
            return;
        case kind::call:
            if (!enter(v)) return;
            if (tensor_call(v)) return;
            break;
        case kind::tuple:
        case kind::list:
        case kind::dict:
            if (!enter(v)) return;
            break;
        default:
            return;
        }
        stack_.push_back({v.ref, m_.at(v.ref).first, path_.size(), bad_, transparent});
    }

    // torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...) (and the
    // older _rebuild_tensor): the storage's first reference, with the tensor's shape.
    bool tensor_call(const value& call) {
        const auto& n = m_.at(call.ref);
        const auto& callable = m_.child_at(n.first);
        if (callable.next == pickle::no_node) return false;
        if (!m_.is_global(callable.v, "torch._utils", "_rebuild_tensor_v2") &&
            !m_.is_global(callable.v, "torch._utils", "_rebuild_tensor"))
            return false;
        const auto& args = m_.child_at(callable.next).v;
        auto* storage = m_.item(args, 0);
        if (!storage || storage->k != kind::persid) return false;
        entered_[storage->ref] = true;
        reference(m_.child_at(m_.at(storage->ref).first).v, &args);
        return true;
    }

    void reference(const value& pid, const value* tensor_args) {
        auto* key = storage_key(m_, pid);
        if (!key) return;
        auto it = storages_.find(std::string(m_.text(*key)));
        if (it == storages_.end() || it->second.referenced) return;
        auto& f = it->second;
        f.referenced = true;
        if (!bad_ && !path_.empty() && used_.insert(path_).second) f.info.name = path_;
        if (tensor_args) f.info.row_bytes = row_bytes(*tensor_args, f);
    }

    // Bytes per row of the leading dimension, if the tensor starts at the storage's start,
    // is contiguous (row-major) and covers the storage exactly.
    std::uint64_t row_bytes(const value& args, const storage_facts& f) const {
        auto* offset = m_.item(args, 1);
        auto* size = m_.item(args, 2);
        auto* stride = m_.item(args, 3);
        if (!offset || offset->k != kind::integer || m_.integer(*offset) != 0 || !size || !stride ||
            !f.info.bytes || f.element_size == 0)
            return 0;
        const auto dims = m_.item_count(*size);
        if (dims == 0 || dims > 64 || m_.item_count(*stride) != dims) return 0;
        std::vector<std::int64_t> sz(dims), st(dims);
        for (std::size_t i = 0; i < dims; ++i) {
            auto* a = m_.item(*size, i);
            auto* b = m_.item(*stride, i);
            if (!a || !b || a->k != kind::integer || b->k != kind::integer || m_.integer(*a) < 0)
                return 0;
            sz[i] = m_.integer(*a);
            st[i] = m_.integer(*b);
        }
        std::uint64_t row = 1; // elements
        for (std::size_t i = dims; i-- > 1;) {
            if (sz[i] != 1 && st[i] != static_cast<std::int64_t>(row)) return 0;
            if (sz[i] != 0 && row > max_bytes / std::uint64_t(sz[i])) return 0;
            row *= std::uint64_t(sz[i]);
        }
        if (sz[0] != 1 && st[0] != static_cast<std::int64_t>(row)) return 0;
        if (row == 0 || row > max_bytes / f.element_size) return 0;
        const std::uint64_t row_b = row * f.element_size;
        if (std::uint64_t(sz[0]) > max_bytes / row_b ||
            std::uint64_t(sz[0]) * row_b != *f.info.bytes)
            return 0;
        return row_b;
    }

    const pickle::machine& m_;
    std::map<std::string, storage_facts>& storages_;
    std::vector<bool> entered_;
    std::vector<frame> stack_;
    std::unordered_set<std::string> used_;
    std::string path_;
    bool bad_{false};
};

} // namespace

std::map<std::string, storage_info> storage_types(std::span<const std::byte> pickle) {
    pickle::machine m(pickle);
    std::map<std::string, storage_facts> facts;
    auto root = m.run([&](const value& pid) { record_storage(m, pid, facts); });
    if (!m.lean()) namer(m, facts).walk(root);
    std::map<std::string, storage_info> out;
    for (auto& [k, f] : facts) out.emplace(k, std::move(f.info));
    return out;
}

} // namespace tpde::format::detail
