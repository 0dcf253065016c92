#pragma once
// The store's file_writer: streams sequential writes through the segmenter and encoder;
// falls back to a staging file on the store's disk for anything else.
#include <memory>

#include "context.hpp"
#include "object_encoder.hpp"
#include "tpde/format/block_plan.hpp"
#include "tpde/format/stream_segmenter.hpp"
#include "version_reader.hpp"

namespace tpde::store {

// What a writer needs from its store: to publish a finished object as the path's new version.
class version_publisher {
public:
    virtual ~version_publisher() = default;
    // Commits `enc` (finished) as the content of `path`, if `path` still names version
    // `expected` (a version id, unique forever: inode numbers are reused once a record is
    // freed). Returns the new version's id, or "" when the path names something else.
    virtual std::string publish(const std::string& path, const std::string& expected,
                                object_encoder& enc, std::uint64_t size) = 0;
    virtual std::shared_ptr<const version_reader> open_version_of(const std::string& path) = 0;
};

class store_file_writer : public file_writer {
public:
    // `current` is the file's content to start from (null: empty). `dirty`: commit even if
    // nothing is written (an O_TRUNC of a non-empty file).
    store_file_writer(store_context& ctx, version_publisher& host, std::string path,
                      const std::string& expected_version,
                      std::shared_ptr<const version_reader> current, bool dirty);
    ~store_file_writer() override;

    void write(std::uint64_t offset, std::span<const std::byte> bytes) override;
    void truncate(std::uint64_t size) override;
    std::size_t read(std::uint64_t offset, std::span<std::byte> out) override;
    std::uint64_t size() const override { return size_; }
    bool commit() override;
    void set_path(const std::string& path) override { path_ = path; }
    bool dirty() const override { return dirty_; }

private:
    enum class mode { sequential, unchanged, staged };
    void start_sequential();
    void to_staged();
    void emit_blocks();
    void emit(std::uint64_t end, std::optional<codec::element_type> type);
    void keep_unencoded();
    std::string shown() const { return ctx_.shown_ns(path_); }

    store_context& ctx_;
    version_publisher& host_;
    std::string path_;
    std::string expected_version_;
    bool dirty_;
    mode mode_;
    std::uint64_t size_{0};
    // unchanged: the committed content this writer has not modified yet
    std::shared_ptr<const version_reader> current_;
    // sequential
    std::unique_ptr<format::stream_segmenter> segmenter_;
    std::unique_ptr<object_encoder> encoder_;
    std::unique_ptr<format::block_cutter> cutter_; // the segments known so far
    // Bytes [pending_base_, size_) not yet encoded: kept in pending_, except during write(),
    // where the bytes that call brings are read in place from incoming_ and only what no
    // block took yet is copied into pending_.
    std::vector<std::byte> pending_;
    std::uint64_t pending_base_{0};
    std::span<const std::byte> incoming_;
    std::uint64_t encoded_until_{0};
    std::vector<std::byte> straddle_; // a block that begins in pending_ and ends in incoming_
    // staged
    sys::fd staging_;
    std::string staging_name_;
};

} // namespace tpde::store
