#ifndef ONETUN_CUV_SHIM_H
#define ONETUN_CUV_SHIM_H
#include <stdlib.h>
#include <sys/socket.h>
#include <uv.h>

/// struct mmsghdr and sendmmsg(2) as glibc defines them under _GNU_SOURCE, which Swift's Glibc module
/// does not set (and setting it here would make this module's system types differ from other modules').
struct onetun_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
extern int onetun_sendmmsg_raw(int fd, struct onetun_mmsghdr *messages, unsigned int count, int flags) __asm__("sendmmsg");

/// Sends `count` buffers, one datagram each, on a connected socket with one system call.
/// Returns how many were sent, or -1 with errno.
static inline int onetun_sendmmsg(int fd, const struct iovec *iovecs, struct onetun_mmsghdr *messages, unsigned count) {
    for (unsigned i = 0; i < count; i++) {
        messages[i].msg_hdr.msg_name = 0;
        messages[i].msg_hdr.msg_namelen = 0;
        messages[i].msg_hdr.msg_iov = (struct iovec *)&iovecs[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_control = 0;
        messages[i].msg_hdr.msg_controllen = 0;
        messages[i].msg_hdr.msg_flags = 0;
        messages[i].msg_len = 0;
    }
    return onetun_sendmmsg_raw(fd, messages, count, 0);
}
#endif
