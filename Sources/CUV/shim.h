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
/// accept4(2) (glibc declares it only under _GNU_SOURCE).
extern int onetun_accept4(int fd, struct sockaddr *address, socklen_t *length, int flags) __asm__("accept4");
/// ppoll(2): poll with a nanosecond timeout (glibc declares it only under _GNU_SOURCE).
extern int onetun_ppoll(struct pollfd *fds, nfds_t count, const struct timespec *timeout, const void *sigmask) __asm__("ppoll");

/// Sends `count` messages with one system call: message i goes to names[i] (namelens[i] bytes) and
/// carries iovecs[i] (possibly many equal-sized datagrams laid end to end) and, when gso_sizes[i] is
/// nonzero, a UDP_SEGMENT control message so the kernel cuts it into datagrams of that size (UDP GSO,
/// Linux 4.18+): one trip through the stack for up to 64 KiB of datagrams. `controls` holds 32 bytes per
/// message. Returns how many messages were sent, or -1 with errno.
static inline int onetun_sendmmsg_gso(int fd, const struct sockaddr_storage *names, const socklen_t *namelens,
                                      const struct iovec *iovecs, const unsigned short *gso_sizes,
                                      struct onetun_mmsghdr *messages, unsigned char *controls, unsigned count) {
    for (unsigned i = 0; i < count; i++) {
        struct msghdr *h = &messages[i].msg_hdr;
        h->msg_name = (void *)&names[i];
        h->msg_namelen = namelens[i];
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

#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <netinet/in.h>
#include <linux/errqueue.h>
/// One ICMP error from a socket's error queue (IP_RECVERR / IPV6_RECVERR set): `target` is where the
/// datagram that caused it was going, `offender` who sent the error; `error` an errno (ECONNREFUSED for
/// port unreachable). Returns 1 when one was read, 0 when the queue is empty, -1 on other errors.
struct onetun_icmp_error {
    int error;
    unsigned char origin, type, code;
    struct sockaddr_storage target;
    struct sockaddr_storage offender;
};
static inline int onetun_read_icmp_error(int fd, struct onetun_icmp_error *out) {
    union { struct cmsghdr align; unsigned char bytes[512]; } control;
    char data[64];
    struct iovec iov = {data, sizeof data};
    struct msghdr h = {0};
    memset(out, 0, sizeof *out);
    h.msg_name = &out->target;
    h.msg_namelen = sizeof out->target;
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = control.bytes;
    h.msg_controllen = sizeof control.bytes;
    if (recvmsg(fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
        if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
            (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
            struct sock_extended_err *e = (struct sock_extended_err *)CMSG_DATA(c);
            out->error = (int)e->ee_errno;
            out->origin = e->ee_origin;
            out->type = e->ee_type;
            out->code = e->ee_code;
            struct sockaddr *who = SO_EE_OFFENDER(e);
            size_t size = who->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
            memset(&out->offender, 0, sizeof out->offender);
            if (who->sa_family == AF_INET || who->sa_family == AF_INET6) memcpy(&out->offender, who, size);
        }
    }
    return 1;
}
#endif
