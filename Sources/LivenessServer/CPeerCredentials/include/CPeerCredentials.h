#ifndef LIVENESSD_PEER_CREDENTIALS_H
#define LIVENESSD_PEER_CREDENTIALS_H

#include <stdint.h>

/// The kernel's `struct ucred` (what getsockopt(SO_PEERCRED) fills). Glibc declares it only under
/// _GNU_SOURCE, which Swift's Glibc module is not built with, so the layout is restated here and
/// proved equal to the real one by static assertions in CPeerCredentials.c.
typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} livenessd_peer_credentials;

/// SO_PEERCRED's value (SOL_SOCKET level).
int livenessd_so_peercred(void);

#endif
