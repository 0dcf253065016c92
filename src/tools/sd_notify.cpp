#include "sd_notify.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace tpde::tools {

bool notify_systemd(const std::string& state) {
    const char* name = std::getenv("NOTIFY_SOCKET");
    if (!name || !*name) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::size_t len = std::strlen(name);
    if ((name[0] != '/' && name[0] != '@') || len >= sizeof addr.sun_path) {
        spdlog::debug("NOTIFY_SOCKET={}: not a socket path or @abstract name", name);
        return false;
    }
    std::memcpy(addr.sun_path, name, len);
    if (name[0] == '@') addr.sun_path[0] = '\0'; // abstract: no terminating NUL counted
    auto addr_len =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (name[0] == '@' ? 0 : 1));
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        spdlog::debug("NOTIFY_SOCKET: socket: {}", std::strerror(errno));
        return false;
    }
    ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                         reinterpret_cast<const sockaddr*>(&addr), addr_len);
    int err = errno;
    ::close(fd);
    if (n < 0) {
        spdlog::debug("NOTIFY_SOCKET={}: {}", name, std::strerror(err));
        return false;
    }
    return true;
}

} // namespace tpde::tools
