#include "context.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include "object_file.hpp" // new_object_uid

namespace tpde::store {
namespace {
thread_local bool background_thread = false;
} // namespace

void store_context::mark_background_thread() {
    background_thread = true;
}

util::thread_pool* store_context::pool_for_this_thread() const {
    return background_thread && background_pool ? background_pool.get() : pool.get();
}

std::string store_context::tmp_name(const char* what) const {
    return fmt::format("{}-{}-{:016x}", what, ::getpid(), new_object_uid());
}

} // namespace tpde::store
