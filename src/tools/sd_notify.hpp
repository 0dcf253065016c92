#pragma once
// systemd's service notification (sd_notify(3)) without libsystemd: one datagram to the
// AF_UNIX socket named by $NOTIFY_SOCKET (a path, or @name in the abstract namespace).
#include <string>

namespace tpde::tools {

// Sends `state` ("READY=1\nSTATUS=..."); false when $NOTIFY_SOCKET is unset or the send
// failed (logged at debug: systemd is optional).
bool notify_systemd(const std::string& state);

} // namespace tpde::tools
