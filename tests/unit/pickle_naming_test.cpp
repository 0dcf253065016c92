// The pickle machine behind torch storage names: paths from dict keys and list indices,
// first references, shapes, and bounded behaviour on hostile pickles.
#include <chrono>
#include <gtest/gtest.h>
#include <string>

#include "../../src/format/parse_util.hpp"
#include "../../src/format/pickle_machine.hpp"
#include "../../src/format/pickle_storages.hpp"

using namespace tpde::format::detail;

namespace {

// Writes pickle opcodes (protocol 2, as torch.save does).
struct pk {
    std::string b{"\x80\x02"};
    pk& op(char c) {
        b += c;
        return *this;
    }
    pk& u32(std::uint32_t v) {
        for (int i = 0; i < 4; ++i) b += static_cast<char>((v >> (8 * i)) & 0xff);
        return *this;
    }
    pk& str(std::string_view s) {
        op('X').u32(static_cast<std::uint32_t>(s.size()));
        b += s;
        return *this;
    }
    pk& num(std::int32_t v) { return op('J').u32(static_cast<std::uint32_t>(v)); }
    pk& global(std::string_view mod, std::string_view name) {
        op('c');
        b += mod;
        b += '\n';
        b += name;
        b += '\n';
        return *this;
    }
    pk& tuple_of(std::initializer_list<std::int64_t> v) {
        op('(');
        for (auto x : v) num(static_cast<std::int32_t>(x));
        return op('t');
    }
    // _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride,
    // False, OrderedDict())
    pk& tensor(std::string_view key, std::initializer_list<std::int64_t> size,
               std::initializer_list<std::int64_t> stride, std::int64_t numel, int offset = 0,
               std::string_view type = "FloatStorage") {
        global("torch._utils", "_rebuild_tensor_v2").op('(');
        op('(')
            .str("storage")
            .global("torch", type)
            .str(key)
            .str("cpu")
            .num(static_cast<int>(numel));
        op('t').op('Q');
        num(offset).tuple_of(size).tuple_of(stride).op('\x89');
        global("collections", "OrderedDict").op(')').op('R');
        return op('t').op('R');
    }
    std::span<const std::byte> bytes() {
        if (b.empty() || b.back() != '.') b += '.';
        return {reinterpret_cast<const std::byte*>(b.data()), b.size()};
    }
};

} // namespace

TEST(PickleNaming, PathsFromKeysAndIndices) {
    pk p;
    p.op('}').op('(');
    p.str("model").global("collections", "OrderedDict").op(')').op('R').op('(');
    p.str("blocks.0.w").tensor("0", {4, 3}, {3, 1}, 12);
    p.str("b").tensor("1", {5}, {1}, 5, 0, "BFloat16Storage");
    p.op('u');
    p.str("optimizer").op('}').op('(').str("state").op('}').op('(');
    p.num(3).op('}').str("exp_avg").tensor("2", {4, 3}, {3, 1}, 12).op('s');
    p.op('u').op('u');
    p.str("list").op(']').op('(').tensor("3", {2, 2}, {2, 1}, 4).tensor("4", {1}, {1}, 1).op('e');
    // A Parameter wraps its tensor: the wrapper adds no component.
    p.str("param").global("torch._utils", "_rebuild_parameter").op('(');
    p.tensor("5", {2, 8}, {8, 1}, 16)
        .op('\x88')
        .global("collections", "OrderedDict")
        .op(')')
        .op('R');
    p.op('t').op('R');
    p.op('u');
    auto s = storage_types(p.bytes());
    ASSERT_EQ(s.size(), 6u);
    EXPECT_EQ(s["0"].name, "model.blocks.0.w");
    EXPECT_EQ(s["0"].row_bytes, 12u);
    EXPECT_EQ(s["0"].bytes, 48u);
    EXPECT_EQ(s["1"].name, "model.b");
    EXPECT_EQ(s["1"].type, tpde::codec::element_type::bf16);
    EXPECT_EQ(s["1"].row_bytes, 2u);
    EXPECT_EQ(s["2"].name, "optimizer.state.3.exp_avg");
    EXPECT_EQ(s["3"].name, "list.0");
    EXPECT_EQ(s["4"].name, "list.1");
    EXPECT_EQ(s["5"].name, "param");
    EXPECT_EQ(s["5"].row_bytes, 32u);
}

TEST(PickleNaming, SharedStorageNamedByItsFirstReference) {
    pk p;
    p.op('}').op('(');
    p.str("tok").tensor("0", {6, 4}, {4, 1}, 24);
    p.str("view").tensor("0", {4}, {1}, 24, 8);    // a view into the same storage
    p.str("head").tensor("0", {6, 4}, {4, 1}, 24); // tied
    p.op('u');
    auto s = storage_types(p.bytes());
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s["0"].name, "tok");
    EXPECT_EQ(s["0"].row_bytes, 16u);
}

TEST(PickleNaming, RowsOnlyForATensorCoveringItsStorageContiguously) {
    pk p;
    p.op('}').op('(');
    p.str("transposed").tensor("0", {4, 3}, {1, 4}, 12);
    p.str("offset").tensor("1", {2, 3}, {3, 1}, 12, 6);
    p.str("part").tensor("2", {2, 3}, {3, 1}, 12);
    p.str("scalar").tensor("3", {}, {}, 1);
    p.str("ints").tensor("4", {3, 2}, {2, 1}, 6, 0, "LongStorage");
    p.op('u');
    auto s = storage_types(p.bytes());
    EXPECT_EQ(s["0"].row_bytes, 0u);
    EXPECT_EQ(s["1"].row_bytes, 0u);
    EXPECT_EQ(s["2"].row_bytes, 0u);
    EXPECT_EQ(s["3"].row_bytes, 0u);
    EXPECT_EQ(s["4"].row_bytes, 16u); // no codec type, but a shape
    EXPECT_FALSE(s["4"].type.has_value());
    EXPECT_EQ(s["0"].name, "transposed");
}

TEST(PickleNaming, PathsThatSpellAlikeNameOnlyTheFirst) {
    pk p;
    p.op('}').op('(');
    p.str("a.b").tensor("0", {2}, {1}, 2);
    p.str("a").op('}').str("b").tensor("1", {2}, {1}, 2).op('s');
    p.num(7).tensor("2", {2}, {1}, 2);
    p.op('(').num(1).num(2).op('t').tensor("3", {2}, {1}, 2); // a tuple as key: no name
    p.op('u');
    auto s = storage_types(p.bytes());
    EXPECT_EQ(s["0"].name, "a.b");
    EXPECT_EQ(s["1"].name, "");
    EXPECT_EQ(s["2"].name, "7");
    EXPECT_EQ(s["3"].name, "");
    EXPECT_EQ(s["3"].bytes, 8u); // still typed and sized
}

TEST(PickleNaming, TopLevelTensorHasNoName) {
    pk p;
    p.tensor("0", {3}, {1}, 3);
    auto s = storage_types(p.bytes());
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s["0"].name, "");
    EXPECT_EQ(s["0"].row_bytes, 4u);
}

TEST(PickleNaming, PastTheTreeBudgetTypesStayNamesGo) {
    pk p;
    p.op('}').op('(');
    for (int i = 0; i < 50; ++i)
        p.str("t" + std::to_string(i)).tensor(std::to_string(i), {2}, {1}, 2);
    p.op('u');
    pickle::machine m(p.bytes(), {.tree_budget = 1200});
    std::size_t persids = 0;
    m.run([&](const pickle::value&) { ++persids; });
    EXPECT_TRUE(m.lean());
    EXPECT_EQ(persids, 50u);
    pickle::machine tiny(p.bytes(), {.tree_budget = 20});
    EXPECT_THROW(tiny.run(), format_error); // twice the budget: refused
    auto s = storage_types(p.bytes());      // the default budget holds it
    EXPECT_EQ(s["49"].name, "t49");
}

TEST(PickleNaming, HostilePicklesAreBoundedOrRefused) {
    // A 1 MiB string memoized and fetched 100000 times: values refer to it, nothing is copied.
    pk bomb;
    bomb.str(std::string(1u << 20, 'x')).op('q').b += '\0';
    for (int i = 0; i < 60000; ++i) bomb.op('h').b += '\0';
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(storage_types(bomb.bytes()).empty());
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    // Lists nested deeper than the stack allows.
    pk deep;
    for (int i = 0; i < 70000; ++i) deep.op(']');
    EXPECT_THROW(storage_types(deep.bytes()), format_error);
    // A list containing itself (memo + APPEND): the naming walk enters each node once.
    pk cycle;
    cycle.op(']').op('q').b += '\0';
    cycle.op('h').b += '\0';
    cycle.op('a');
    cycle.op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").num(4);
    cycle.op('t').op('Q').op('a');
    auto s = storage_types(cycle.bytes());
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s["0"].name, "1");
    // Nested deeper than any stack: [[[...[tensor]...]]] built through the memo, one level
    // per 6 bytes. The walk keeps its own stack; a path past 1024 bytes names nothing.
    for (int depth : {100, 200000}) {
        pk nest;
        nest.op(']').tensor("0", {2}, {1}, 2).op('a').op('q').b += '\0';
        nest.op('0');
        for (int i = 0; i < depth; ++i) {
            nest.op(']').op('h').b += '\0';
            nest.op('a').op('q').b += '\0';
            nest.op('0');
        }
        nest.op('h').b += '\0';
        auto n = storage_types(nest.bytes());
        std::string want;
        for (int i = 0; i <= depth; ++i) want += i ? ".0" : "0";
        EXPECT_EQ(n["0"].name, depth == 100 ? want : "") << depth;
    }
    // Truncated, unknown opcodes, memo out of range, odd SETITEMS.
    for (std::string bad : {std::string("\x80\x02}(X\xff\xff\xff\x7f"), std::string("\x80\x02\xff"),
                            std::string("\x80\x02h\x05."), std::string("\x80\x02}(Xu", 6)}) {
        EXPECT_THROW(storage_types({reinterpret_cast<const std::byte*>(bad.data()), bad.size()}),
                     format_error);
    }
    pk odd;
    odd.op('}').op('(').str("k").op('u');
    EXPECT_THROW(storage_types(odd.bytes()), format_error);
    // A numel that would overflow a size: typed, not sized.
    pk huge;
    huge.op('}').op('(').str("w").tensor("0", {1}, {1}, 0x7fffffff).op('u');
    huge.b.back() = 'u';
    auto h = storage_types(huge.bytes());
    EXPECT_EQ(h["0"].bytes, std::uint64_t{0x7fffffff} * 4);
}
