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
#include <poll.h>
#include <time.h>
extern int onetun_recvmmsg_raw(int fd, struct onetun_mmsghdr *messages, unsigned int count, int flags,
                               struct timespec *timeout) __asm__("recvmmsg");
/// ppoll(2): poll with a nanosecond timeout (glibc declares it only under _GNU_SOURCE).
extern int onetun_ppoll(struct pollfd *fds, nfds_t count, const struct timespec *timeout, const void *sigmask) __asm__("ppoll");

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
/// Like onetun_sendmmsg, but message i carries iovecs[i] (possibly many equal-sized datagrams laid end to
/// end) and, when gso_sizes[i] is nonzero, a UDP_SEGMENT control message so the kernel cuts it into
/// datagrams of that size (UDP GSO, Linux 4.18+): one trip through the stack for up to 64 KiB of datagrams.
/// `controls` holds 32 bytes per message.
static inline int onetun_sendmmsg_gso(int fd, const struct iovec *iovecs, const unsigned short *gso_sizes,
                                      struct onetun_mmsghdr *messages, unsigned char *controls, unsigned count) {
    for (unsigned i = 0; i < count; i++) {
        struct msghdr *h = &messages[i].msg_hdr;
        h->msg_name = 0;
        h->msg_namelen = 0;
        h->msg_iov = (struct iovec *)&iovecs[i];
        h->msg_iovlen = 1;
        h->msg_flags = 0;
        messages[i].msg_len = 0;
        if (gso_sizes[i]) {
            unsigned char *control = controls + 32 * i;
            h->msg_control = control;
            h->msg_controllen = CMSG_SPACE(sizeof(unsigned short));
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = 17; /* SOL_UDP */
            c->cmsg_type = 103; /* UDP_SEGMENT */
            c->cmsg_len = CMSG_LEN(sizeof(unsigned short));
            *(unsigned short *)CMSG_DATA(c) = gso_sizes[i];
        } else {
            h->msg_control = 0;
            h->msg_controllen = 0;
        }
    }
    return onetun_sendmmsg_raw(fd, messages, count, 0);
}
#endif
