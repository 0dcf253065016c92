#include "context.hpp"

#include <fmt/core.h>
#include <thread>
#include <unistd.h>

#include "object_file.hpp" // new_object_uid

namespace tpde::store {
namespace {
thread_local bool background_thread = false;
} // namespace

void store_context::mark_background_thread() {
    background_thread = true;
}

bool store_context::on_background_thread() {
    return background_thread;
}

util::thread_pool* store_context::pool_for_this_thread() const {
    return background_thread && background_pool ? background_pool.get() : pool.get();
}

double store_context::seconds_since_foreground_write() const {
    auto last = std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_foreground_write.load()));
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - last).count();
}

void store_context::give_way_to_writers() const {
    if (!background_thread) return;
    using namespace std::chrono_literals;
    while (seconds_since_foreground_write() < 0.1) std::this_thread::sleep_for(20ms);
}

std::string store_context::tmp_name(const char* what) const {
    return fmt::format("{}-{}-{:016x}", what, ::getpid(), new_object_uid());
}

} // namespace tpde::store
