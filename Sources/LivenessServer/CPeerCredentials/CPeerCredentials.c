// Why C: `struct ucred` exists only with _GNU_SOURCE; compiled here with it, the compiler checks that
// the Swift-visible struct has exactly the kernel's layout (a mismatch fails the build, not a login).
#define _GNU_SOURCE
#include <stddef.h>
#include <sys/socket.h>

#include "CPeerCredentials.h"

_Static_assert(sizeof(struct ucred) == sizeof(livenessd_peer_credentials), "struct ucred size");
_Static_assert(offsetof(struct ucred, pid) == offsetof(livenessd_peer_credentials, pid), "ucred.pid offset");
_Static_assert(offsetof(struct ucred, uid) == offsetof(livenessd_peer_credentials, uid), "ucred.uid offset");
_Static_assert(offsetof(struct ucred, gid) == offsetof(livenessd_peer_credentials, gid), "ucred.gid offset");

int livenessd_so_peercred(void) { return SO_PEERCRED; }
