#pragma once
// The libfuse low-level operations table of tpdefs: each op calls the filesystem and replies;
// every exception becomes an errno reply here, in one place.
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>

namespace tpde::fs {

// The userdata given to fuse_session_new must be a tpde::fs::filesystem*.
const fuse_lowlevel_ops& operations();

} // namespace tpde::fs
